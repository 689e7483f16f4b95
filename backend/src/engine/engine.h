// The engine's public API: what the Triton backend and the command-line tools
// use. Everything behind it (model, KV cache pool, policies, kernels) is private
// to the engine. Thread model: Submit/Cancel/Metrics may be called from any
// thread; Step is called by exactly one thread (the serving loop), and every
// callback runs on that thread, inside Step.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace vlcache {

// Result of a call that can fail; an empty message means success.
struct Status {
  std::string message;
  bool ok() const { return message.empty(); }
  static Status Ok() { return {}; }
  static Status Error(std::string m) { return Status{std::move(m)}; }
};

struct EngineConfig {
  std::string model_dir;                // Hugging Face layout checkpoint directory
  int64_t kv_pool_bytes = 256ll << 20;  // byte budget of the shared KV block pool
  int block_tokens = 16;                // tokens per (layer, kv head) block
  int max_batch = 8;                    // sequences decoded together in one step
  std::string default_policy = "vlcache";
  float default_keep_ratio = 0.1f;
  std::string default_budget_mode = "exact";  // vlcache layer budgets: exact | paper
  int threads = 0;                      // compute threads; 0 = hardware concurrency
  std::string device = "cpu";           // cpu (cuda when the CUDA path lands)
  // Prefills (each with its compression) started per Step; 1 keeps the decode
  // latency of running sequences bounded by one prefill.
  int max_prefills_per_step = 1;
  // Query rows per prefill attention tile (the tile is rows x prompt length).
  int attention_chunk_rows = 64;
};

// One RGB image, height x width x 3, uint8, row-major, already at the model's
// input size (the gateway resizes; the engine normalises).
struct Image {
  int height = 0;
  int width = 0;
  std::vector<uint8_t> rgb;
};

struct SamplingParams {
  int max_tokens = 16;
  float temperature = 0.0f;  // 0 = greedy
  float top_p = 1.0f;        // (0, 1]
  int top_k = 0;             // 0 = off
  uint64_t seed = 0;
  std::vector<int32_t> stop_token_ids;  // in addition to the model's eos
  bool ignore_eos = false;              // benchmarks: always produce max_tokens
};

struct GenerationRequest {
  // Prompt ids with the image token repeated once per image feature.
  std::vector<int32_t> input_ids;
  std::vector<Image> images;
  SamplingParams sampling;
  std::string policy;        // empty: EngineConfig::default_policy
  float keep_ratio = -1.0f;  // <= 0 (unset): default; otherwise must be in (0, 1]
  std::string budget_mode;   // empty: default; "exact" | "paper"
  // Context-first protocol (VLCACHE.md section 6): when 0 < compress_after <
  // input_ids.size(), the first compress_after prompt tokens are prefilled and
  // compressed, then the rest of the prompt is appended to the compressed cache
  // before decoding. 0 = compress after the whole prompt (the usual case).
  int compress_after = 0;
  // Debug/eval: put the kept positions of every (layer, kv head) and the
  // per-layer sparsity into the stats.
  bool return_kept_positions = false;
};

enum class FinishReason { kStop, kLength, kCancelled, kError };
const char* FinishReasonName(FinishReason reason);  // stop|length|cancelled|error

struct LayerStats {
  int budget = 0;          // kept prompt tokens per kv head after compression
  double sparsity = -1.0;  // gamma[l] when the policy measured it, else -1
};

struct SequenceStats {
  int prompt_tokens = 0;
  int image_tokens = 0;
  int completion_tokens = 0;
  std::string policy;
  float keep_ratio = 1.0f;
  std::string budget_mode;
  int64_t kv_tokens_full = 0;  // sum over layers and kv heads of the prompt length
  int64_t kv_tokens_kept = 0;  // the same after compression
  int64_t kv_bytes_full = 0;
  int64_t kv_bytes_kept = 0;
  std::vector<LayerStats> layers;
  // [layer][kv_head] -> kept prompt positions, only when asked for.
  std::vector<std::vector<std::vector<int32_t>>> kept_positions;
  double queue_ms = 0, prefill_ms = 0, compress_ms = 0, decode_ms = 0;
  std::string ToJson() const;  // the `stats` object of docs/contract.md
};

struct SequenceCallbacks {
  // New tokens since the previous call (called once per decode step that
  // produced tokens for this sequence).
  std::function<void(const std::vector<int32_t>& tokens)> on_tokens;
  // Called exactly once per accepted sequence; error is non-empty only for kError.
  std::function<void(FinishReason reason, const SequenceStats& stats,
                     const std::string& error)>
      on_finish;
  // Optional. Called once, after the prompt is prefilled (and, with
  // compress_after, after the rest of the prompt ran over the compressed
  // cache), with the logits of the last prompt position, before the first
  // token is sampled from them. For parity checks and evaluation.
  std::function<void(const std::vector<float>& logits)> on_prompt_logits;
  // Optional. Called once, right after compression and before the first
  // token, with the stats known then: everything but completion_tokens and
  // decode_ms is final (so a caller that stops the sequence early still has
  // the KV figures).
  std::function<void(const SequenceStats& stats)> on_compressed;
};

struct EngineMetrics {
  int64_t kv_pool_capacity_bytes = 0;
  int64_t kv_pool_free_bytes = 0;
  int sequences_running = 0;
  int sequences_waiting = 0;
};

struct ModelInfo {
  int image_token_id = 0;
  int image_tokens_per_image = 0;
  int image_height = 0, image_width = 0;
  int max_context = 0;
  int eos_token_id = 0;
  int vocab_size = 0;
  int num_layers = 0, num_kv_heads = 0, head_dim = 0;
};

class Engine {
 public:
  static Status Create(const EngineConfig& config, std::unique_ptr<Engine>* out);
  virtual ~Engine() = default;

  virtual const ModelInfo& Info() const = 0;

  // Validates the request (ratio, policy, placeholder count vs images, image
  // size, prompt length vs context, whether it can ever fit the pool) and
  // queues it. An invalid request returns an error naming the problem and is
  // not queued (no callback is called). seq_id must be unique among live
  // sequences.
  virtual Status Submit(uint64_t seq_id, GenerationRequest request,
                        SequenceCallbacks callbacks) = 0;

  // Stops a queued or running sequence; its on_finish(kCancelled) is called
  // from the next Step and its KV blocks return to the pool. Unknown ids are
  // ignored.
  virtual void Cancel(uint64_t seq_id) = 0;

  // One scheduling step: admits waiting sequences that fit (prefill, compress),
  // then one decode step for every running sequence. Returns false when there
  // was nothing to do.
  virtual bool Step() = 0;

  virtual EngineMetrics Metrics() const = 0;
};

}  // namespace vlcache

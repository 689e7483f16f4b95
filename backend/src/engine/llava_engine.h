// The Engine for LLaVA checkpoints: a FIFO queue, one prefill (+ compression)
// admitted at a time, and one batched decode step over every running sequence
// per Step (continuous batching). See docs/engine.md.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <unordered_set>
#include <vector>

#include "engine/engine.h"
#include "engine/sampler.h"
#include "kvcache/block_pool.h"
#include "kvcache/policy.h"
#include "kvcache/sequence_cache.h"
#include "model/llava_model.h"
#include "vlcache/kernels/ops.h"

namespace vlcache {
namespace engine {

using Clock = std::chrono::steady_clock;

struct Sequence {
  uint64_t id = 0;
  GenerationRequest request;
  SequenceCallbacks callbacks;
  std::string policy, budget_mode;
  float keep_ratio = 1.f;
  bool keep_all = false;  // policy full or keep ratio 1: no scoring, no eviction
  int prompt_len = 0;
  int part1_len = 0;  // prompt tokens prefilled before compression
  std::unique_ptr<Sampler> sampler;
  Clock::time_point submitted;

  // Set by the prefill; the K/V stay in the engine's scratch until admission
  // (only the queue head is ever prepared, so the scratch is not reused before).
  bool prepared = false;
  std::vector<float> embeddings;  // [prompt_len, hidden]
  Selection selection;
  std::vector<float> logits;  // [vocab], of the last processed position

  std::unique_ptr<kvcache::SequenceCache> cache;
  int32_t last_token = -1;
  SequenceStats stats;
};

class LlavaEngine final : public Engine {
 public:
  static Status Create(const EngineConfig& config, std::unique_ptr<Engine>* out);
  ~LlavaEngine() override;

  const ModelInfo& Info() const override { return info_; }
  Status Submit(uint64_t seq_id, GenerationRequest request, SequenceCallbacks callbacks) override;
  void Cancel(uint64_t seq_id) override;
  bool Step() override;
  EngineMetrics Metrics() const override;

 private:
  explicit LlavaEngine(const EngineConfig& config) : config_(config) {}
  Status Validate(const GenerationRequest& request, Sequence* seq) const;
  int64_t KvBytesPerToken() const;

  bool HandleCancellations();
  // Prefill of the first part, measurements, selection. Error: the request fails.
  Status Prepare(Sequence* seq);
  // Reserves the sequence's blocks and copies the kept K/V in; false (and
  // nothing taken) when the pool is short.
  bool TryAdmit(Sequence* seq, Status* error);
  // Samples from seq->logits and reports the token; true (with the reason)
  // when the sequence ends with it.
  bool EmitNextToken(Sequence* seq, FinishReason* reason);
  void Finish(std::unique_ptr<Sequence> seq, FinishReason reason, const std::string& error);
  void DecodeStep();

  EngineConfig config_;
  ModelInfo info_;
  std::unique_ptr<kernels::Ops> ops_;
  std::unique_ptr<model::LlavaModel> model_;
  std::unique_ptr<kvcache::BlockPool> pool_;

  mutable std::mutex mu_;  // guards incoming_, cancels_, live_ids_
  std::deque<std::unique_ptr<Sequence>> incoming_;
  std::unordered_set<uint64_t> cancels_;
  std::unordered_set<uint64_t> live_ids_;
  std::atomic<int> waiting_count_{0};
  std::atomic<int> running_count_{0};

  // Owned by the Step thread.
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;
  model::PrefillScratch scratch_;
  std::vector<float> step_embeddings_;
  std::vector<model::CachedForwardItem> step_items_;
  std::vector<std::unique_ptr<Sequence>> still_running_;
  std::vector<int32_t> new_tokens_;
};

}  // namespace engine
}  // namespace vlcache

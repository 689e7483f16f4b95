// LLaVA-1.5: CLIP vision tower -> linear-GELU-linear projector -> Llama or
// Mistral decoder, computed with the ops of kernels/. Two ways through the
// decoder:
//  - Prefill: a whole prompt (or its first part) with full causal attention;
//    K/V go to a transient PrefillScratch, not to the pool, and the policy's
//    measurements (column scores, sparsity) are taken on the way.
//  - ForwardCached: a batch of sequences, each appending one or more tokens
//    over its (possibly compressed) paged cache; decode is the one-token case.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "kvcache/policy.h"
#include "kvcache/sequence_cache.h"
#include "model/config.h"
#include "model/llava_weights.h"
#include "vlcache/kernels/ops.h"

namespace vlcache {
namespace model {

// Post-RoPE keys and values of every layer of one prefilled prompt, laid out
// as the projections produce them: [layer][position][kv_head * head_dim].
class PrefillScratch {
 public:
  void Resize(int num_layers, int length, int kv_width);
  int length() const { return length_; }
  float* Keys(int layer) { return k_.data() + Offset(layer); }
  float* Values(int layer) { return v_.data() + Offset(layer); }
  const float* Key(int layer, int position, int kv_head, int head_dim) const {
    return k_.data() + Offset(layer) + static_cast<int64_t>(position) * kv_width_ +
           static_cast<int64_t>(kv_head) * head_dim;
  }
  const float* Value(int layer, int position, int kv_head, int head_dim) const {
    return v_.data() + Offset(layer) + static_cast<int64_t>(position) * kv_width_ +
           static_cast<int64_t>(kv_head) * head_dim;
  }

 private:
  int64_t Offset(int layer) const { return static_cast<int64_t>(layer) * length_ * kv_width_; }
  int length_ = 0, kv_width_ = 0;
  std::vector<float> k_, v_;
};

// One sequence in a ForwardCached batch.
struct CachedForwardItem {
  const float* embeddings = nullptr;  // [rows, hidden]
  int rows = 0;
  kvcache::SequenceCache* cache = nullptr;  // rows are appended at next_position()
  float* logits = nullptr;                  // [vocab], of the last row
};

struct PrefillOptions {
  ScoreRequest scores;       // what the policy needs measured
  int attention_chunk_rows = 64;
};

class LlavaModel {
 public:
  static Status Load(const std::string& dir, kernels::Ops* ops, std::unique_ptr<LlavaModel>* out);

  const LlavaConfig& config() const { return config_; }
  int hidden_size() const { return config_.text.hidden_size; }
  int vocab_size() const { return config_.text.vocab_size; }
  int num_layers() const { return config_.text.num_hidden_layers; }
  int num_kv_heads() const { return config_.text.num_key_value_heads; }
  int head_dim() const { return config_.text.head_dim; }

  // Checks an image's size against the vision tower's input.
  Status CheckImage(const Image& image) const;
  // Projected features of the images, [n * ImageTokens(), hidden].
  void EncodeImages(const std::vector<Image>& images, std::vector<float>* features);
  // Token embeddings with the image features put at the image-token
  // positions, in order; `features` must hold exactly one row per image token.
  void Embed(const int32_t* ids, int n, const float* features, float* out) const;

  // Runs the decoder over a prompt at positions 0..m-1, writes the K/V of
  // every layer to scratch, fills stats as options.scores asks, and writes the
  // last position's logits.
  void Prefill(const float* embeddings, int m, const PrefillOptions& options,
               PrefillScratch* scratch, PrefillStats* stats, float* last_logits);

  // Appends the items' rows to their caches (which must have the room
  // reserved) and writes each item's last-row logits. Error only when a cache
  // runs out of reserved room.
  Status ForwardCached(const CachedForwardItem* items, int num_items);

 private:
  explicit LlavaModel(kernels::Ops* ops) : ops_(ops) {}
  void VisionForward(const Image& image, float* out_features);

  kernels::Ops* ops_;
  LlavaConfig config_;
  LlavaWeights w_;
  kernels::Activation vision_act_ = kernels::Activation::kQuickGelu;
  kernels::Activation projector_act_ = kernels::Activation::kGeluErf;

  // Work buffers, grown on demand and reused across calls.
  std::vector<float> x_, h_, q_, k_, v_, attn_, mlp_gate_, mlp_up_, tmp_;
  std::vector<float> vis_x_, vis_h_, vis_q_, vis_k_, vis_v_, vis_attn_, vis_mlp_;
  std::vector<int32_t> positions_;
  std::vector<float> column_scores_;
  std::vector<int64_t> sparse_counts_;
  std::vector<kernels::PagedKvView> views_;
  std::vector<kernels::PagedAttentionItem> att_items_;
  std::vector<float> last_rows_, logits_;
};

}  // namespace model
}  // namespace vlcache

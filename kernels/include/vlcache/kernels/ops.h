// Compute ops behind one interface. The model calls only these; cpu/ is the
// reference implementation (OpenBLAS + plain loops), and a CUDA implementation
// can be added as another subclass of Ops without changing the callers.
//
// Conventions: matrices are row-major float32; activations of a token batch are
// [rows, width]; linear weights are stored as Hugging Face stores them,
// [out_features, in_features], so Linear computes y = x W^T + b.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace vlcache {
namespace kernels {

// The paged KV layout: a pool of equal blocks, each holding block_tokens
// entries of ONE (sequence, layer, kv head): first the keys
// [block_tokens][head_dim], then the values [block_tokens][head_dim].
struct PagedPool {
  const float* base = nullptr;   // block b starts at base + b * block_floats
  int64_t block_floats = 0;      // 2 * block_tokens * head_dim
  int block_tokens = 0;
  int head_dim = 0;

  const float* Key(int32_t block, int slot) const {
    return base + block * block_floats + static_cast<int64_t>(slot) * head_dim;
  }
  const float* Value(int32_t block, int slot) const {
    return base + block * block_floats +
           static_cast<int64_t>(block_tokens + slot) * head_dim;
  }
};

// The cached entries of one (sequence, layer, kv head), in cache order.
struct PagedKvView {
  const int32_t* block_ids = nullptr;
  int length = 0;  // entries held
};

// Queries of one sequence attending over its paged cache (decode: one row;
// appending a prompt chunk over a compressed cache: several rows). The chunk's
// own keys/values must already be appended, so row r sees the first
// length - rows + 1 + r entries of every kv head (causal within the chunk).
struct PagedAttentionItem {
  const float* q = nullptr;  // [rows, num_heads * head_dim]
  float* out = nullptr;      // [rows, num_heads * head_dim]
  int rows = 0;
  const PagedKvView* kv = nullptr;  // [num_kv_heads]
};

// Prefill attention over contiguous K/V of one prompt with optional
// measurements for the compression policy (rows are query positions).
struct PrefillAttentionArgs {
  const float* q = nullptr;  // [m, num_heads * head_dim], RoPE applied
  const float* k = nullptr;  // [m, num_kv_heads * head_dim], RoPE applied
  const float* v = nullptr;  // [m, num_kv_heads * head_dim]
  float* out = nullptr;      // [m, num_heads * head_dim]
  int m = 0;
  int num_heads = 0, num_kv_heads = 0, head_dim = 0;
  bool causal = true;
  // Column sums of the softmax probabilities over rows [score_rows_begin, m),
  // summed over the query heads of each kv head, ADDED to
  // column_scores[kv_head * m + j]. Skipped when score_rows_begin < 0.
  int score_rows_begin = -1;
  float* column_scores = nullptr;  // [num_kv_heads * m]
  // For each query head, the number of causal entries of rows
  // [sparsity_rows_begin, m) whose probability is < sparsity_threshold times
  // their row's maximum, ADDED to sparse_counts[head]. Skipped when < 0.
  int sparsity_rows_begin = -1;
  double sparsity_threshold = 0.01;
  int64_t* sparse_counts = nullptr;  // [num_heads]
  // Query rows computed together: the score tile is chunk_rows x m, never m x m.
  int chunk_rows = 64;
};

enum class Activation { kGeluErf, kGeluTanh, kQuickGelu, kSilu, kRelu };

class Ops {
 public:
  virtual ~Ops() = default;

  // y[rows, out] = x[rows, in] * w[out, in]^T (+ bias[out]); y may not alias x.
  virtual void Linear(const float* x, int rows, int in, const float* w,
                      const float* bias, int out, float* y) = 0;
  // y = LayerNorm(x) * gamma + beta over the last dim; y may alias x.
  virtual void LayerNorm(const float* x, int rows, int dim, const float* gamma,
                         const float* beta, float eps, float* y) = 0;
  // y = x / sqrt(mean(x^2) + eps) * gamma; y may alias x.
  virtual void RmsNorm(const float* x, int rows, int dim, const float* gamma,
                       float eps, float* y) = 0;
  // In place, elementwise.
  virtual void Activate(Activation act, float* x, int64_t n) = 0;
  // gate[i] = silu(gate[i]) * up[i] (the Llama MLP's gating).
  virtual void SiluMul(float* gate, const float* up, int64_t n) = 0;
  // x[i] += y[i].
  virtual void Add(float* x, const float* y, int64_t n) = 0;
  // Rotary embedding in place, "rotate half" convention: x is [rows, heads *
  // head_dim] with row stride `stride`; row r uses position positions[r].
  virtual void Rope(float* x, int rows, int heads, int head_dim, int64_t stride,
                    const int32_t* positions, float theta) = 0;
  // Softmax in place over n values.
  virtual void Softmax(float* x, int n) = 0;
  // Full (non-paged) attention of one prompt; see PrefillAttentionArgs.
  virtual void PrefillAttention(const PrefillAttentionArgs& args) = 0;
  // Attention of several sequences over their paged caches in one call; the
  // cost of an item is proportional to the entries its cache holds.
  virtual void PagedAttention(const PagedPool& pool, const PagedAttentionItem* items,
                              int num_items, int num_heads, int num_kv_heads) = 0;
};

struct OpsOptions {
  int threads = 0;  // 0 = hardware concurrency
};

std::unique_ptr<Ops> CreateCpuOps(const OpsOptions& options);

}  // namespace kernels
}  // namespace vlcache

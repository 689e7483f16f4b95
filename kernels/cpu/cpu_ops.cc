// CPU reference implementation of the ops: OpenBLAS sgemm for every matrix
// product, plain loops elsewhere. Reductions that decide parity with Hugging
// Face (norm statistics, softmax sums) accumulate in double.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "vlcache/kernels/ops.h"
#include "worker_pool.h"

namespace vlcache {
namespace kernels {
namespace {

// Eight independent partial sums: the compiler may not reorder a float
// reduction, but it vectorises independent lanes, and head_dim is a multiple of
// 8 in every model we run.
inline float Dot(const float* a, const float* b, int n) {
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int u = 0; u < 8; ++u) acc[u] += a[i + u] * b[i + u];
  }
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

void SoftmaxRow(float* x, int n) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int i = 0; i < n; ++i) x[i] *= inv;
}

// Prefill tiles are split into this many row slices (see PrefillAttention).
constexpr int kRowSlices = 4;

// One query row of every head of a GQA group against the first `visible`
// entries of one kv head: a single pass over the keys and one over the values,
// so each cached entry is read once whatever the group size. Cloned for AVX2
// when the CPU has it (chosen once at load time), plain x86-64 otherwise.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
void AttendGroup(const PagedPool& pool, const PagedKvView& kv, const float* q, float* o,
                 int visible, int group, float scale, float* s) {
  const int d = pool.head_dim, bt = pool.block_tokens;
  for (int j0 = 0, b = 0; j0 < visible; j0 += bt, ++b) {
    const int n = std::min(bt, visible - j0);
    const float* keys = pool.Key(kv.block_ids[b], 0);
    for (int j = 0; j < n; ++j) {
      const float* k = keys + static_cast<int64_t>(j) * d;
      for (int g = 0; g < group; ++g) {
        s[static_cast<int64_t>(g) * visible + j0 + j] = Dot(q + g * d, k, d) * scale;
      }
    }
  }
  for (int g = 0; g < group; ++g) {
    float* sg = s + static_cast<int64_t>(g) * visible;
    float mx = -std::numeric_limits<float>::infinity();
    for (int j = 0; j < visible; ++j) mx = std::max(mx, sg[j]);
    double sum = 0;
    for (int j = 0; j < visible; ++j) {
      sg[j] = std::exp(sg[j] - mx);
      sum += sg[j];
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (int j = 0; j < visible; ++j) sg[j] *= inv;
  }
  std::fill(o, o + group * d, 0.f);
  for (int j0 = 0, b = 0; j0 < visible; j0 += bt, ++b) {
    const int n = std::min(bt, visible - j0);
    const float* values = pool.Value(kv.block_ids[b], 0);
    for (int j = 0; j < n; ++j) {
      const float* v = values + static_cast<int64_t>(j) * d;
      for (int g = 0; g < group; ++g) {
        const float p = s[static_cast<int64_t>(g) * visible + j0 + j];
        float* og = o + g * d;
        for (int c = 0; c < d; ++c) og[c] += p * v[c];
      }
    }
  }
}

class CpuOps final : public Ops {
 public:
  explicit CpuOps(const OpsOptions& options) {
    threads_ = options.threads > 0 ? options.threads
                                   : static_cast<int>(std::thread::hardware_concurrency());
    if (threads_ <= 0) threads_ = 1;
    openblas_set_num_threads(threads_);
    workers_ = std::make_unique<WorkerPool>(threads_);
  }

  void Linear(const float* x, int rows, int in, const float* w, const float* bias,
              int out, float* y) override {
    if (rows <= 0) return;
    if (bias) {
      for (int r = 0; r < rows; ++r) std::copy(bias, bias + out, y + static_cast<int64_t>(r) * out);
    }
    if (rows == 1) {
      // Matrix-vector: sgemv avoids sgemm's packing overhead in decode.
      cblas_sgemv(CblasRowMajor, CblasNoTrans, out, in, 1.f, w, in, x, 1, bias ? 1.f : 0.f, y, 1);
      return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.f, x, in, w, in,
                bias ? 1.f : 0.f, y, out);
  }

  void LayerNorm(const float* x, int rows, int dim, const float* gamma, const float* beta,
                 float eps, float* y) override {
    for (int r = 0; r < rows; ++r) {
      const float* xr = x + static_cast<int64_t>(r) * dim;
      float* yr = y + static_cast<int64_t>(r) * dim;
      double mean = 0;
      for (int i = 0; i < dim; ++i) mean += xr[i];
      mean /= dim;
      double var = 0;
      for (int i = 0; i < dim; ++i) var += (xr[i] - mean) * (xr[i] - mean);
      var /= dim;
      const double inv = 1.0 / std::sqrt(var + eps);
      for (int i = 0; i < dim; ++i) {
        yr[i] = static_cast<float>((xr[i] - mean) * inv) * gamma[i] + (beta ? beta[i] : 0.f);
      }
    }
  }

  void RmsNorm(const float* x, int rows, int dim, const float* gamma, float eps,
               float* y) override {
    for (int r = 0; r < rows; ++r) {
      const float* xr = x + static_cast<int64_t>(r) * dim;
      float* yr = y + static_cast<int64_t>(r) * dim;
      double ss = 0;
      for (int i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
      const float inv = static_cast<float>(1.0 / std::sqrt(ss / dim + eps));
      for (int i = 0; i < dim; ++i) yr[i] = gamma[i] * (xr[i] * inv);
    }
  }

  void Activate(Activation act, float* x, int64_t n) override {
    switch (act) {
      case Activation::kGeluErf:
        for (int64_t i = 0; i < n; ++i) {
          x[i] = static_cast<float>(0.5 * x[i] * (1.0 + std::erf(x[i] / std::sqrt(2.0))));
        }
        break;
      case Activation::kGeluTanh:
        for (int64_t i = 0; i < n; ++i) {
          const double v = x[i];
          x[i] = static_cast<float>(
              0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v))));
        }
        break;
      case Activation::kQuickGelu:
        for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.f + std::exp(-1.702f * x[i]));
        break;
      case Activation::kSilu:
        for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.f + std::exp(-x[i]));
        break;
      case Activation::kRelu:
        for (int64_t i = 0; i < n; ++i) x[i] = std::max(0.f, x[i]);
        break;
    }
  }

  void SiluMul(float* gate, const float* up, int64_t n) override {
    for (int64_t i = 0; i < n; ++i) gate[i] = gate[i] / (1.f + std::exp(-gate[i])) * up[i];
  }

  void Add(float* x, const float* y, int64_t n) override {
    for (int64_t i = 0; i < n; ++i) x[i] += y[i];
  }

  void Rope(float* x, int rows, int heads, int head_dim, int64_t stride,
            const int32_t* positions, float theta) override {
    const int half = head_dim / 2;
    // inv_freq and the angle in float32, as transformers computes them, so the
    // rotation matches at long positions too.
    if (rope_theta_ != theta || static_cast<int>(inv_freq_.size()) != half) {
      inv_freq_.resize(half);
      cos_t_.resize(half);
      sin_t_.resize(half);
      for (int i = 0; i < half; ++i) {
        inv_freq_[i] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / head_dim);
      }
      rope_theta_ = theta;
    }
    const float* inv_freq = inv_freq_.data();
    float* cos_t = cos_t_.data();
    float* sin_t = sin_t_.data();
    for (int r = 0; r < rows; ++r) {
      for (int i = 0; i < half; ++i) {
        const float angle = static_cast<float>(positions[r]) * inv_freq[i];
        cos_t[i] = static_cast<float>(std::cos(static_cast<double>(angle)));
        sin_t[i] = static_cast<float>(std::sin(static_cast<double>(angle)));
      }
      float* row = x + r * stride;
      for (int h = 0; h < heads; ++h) {
        float* v = row + static_cast<int64_t>(h) * head_dim;
        for (int i = 0; i < half; ++i) {
          const float a = v[i], b = v[i + half];
          v[i] = a * cos_t[i] - b * sin_t[i];
          v[i + half] = b * cos_t[i] + a * sin_t[i];
        }
      }
    }
  }

  void Softmax(float* x, int n) override { SoftmaxRow(x, n); }

  void PrefillAttention(const PrefillAttentionArgs& a) override {
    const int m = a.m, d = a.head_dim;
    const int group = a.num_heads / a.num_kv_heads;
    const int q_stride = a.num_heads * d, kv_stride = a.num_kv_heads * d;
    const int chunk = std::max(1, a.chunk_rows);
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    const bool want_scores = a.column_scores && a.score_rows_begin >= 0;
    const bool want_sparsity = a.sparse_counts && a.sparsity_rows_begin >= 0;
    tile_.resize(static_cast<size_t>(chunk) * m);
    // The rows of a tile are split into a FIXED number of slices, each with its
    // own column sums, added up in slice order: the workers share the softmax
    // work, and the scores do not depend on the thread count or on timing.
    if (want_scores) col_parts_.resize(static_cast<size_t>(kRowSlices) * m);
    for (int h = 0; h < a.num_heads; ++h) {
      const int kvh = h / group;
      const float* kh = a.k + kvh * d;
      const float* vh = a.v + kvh * d;
      if (want_scores) std::fill(col_parts_.begin(), col_parts_.end(), 0.f);
      int64_t sparse[kRowSlices] = {};
      for (int r0 = 0; r0 < m; r0 += chunk) {
        const int rows = std::min(chunk, m - r0);
        // Keys visible to this chunk: all of them, or up to its last row.
        const int n = a.causal ? r0 + rows : m;
        float* s = tile_.data();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n, d, scale,
                    a.q + static_cast<int64_t>(r0) * q_stride + h * d, q_stride, kh, kv_stride,
                    0.f, s, n);
        workers_->Run(kRowSlices, [&](int slice, int) {
          float* col = want_scores ? col_parts_.data() + static_cast<int64_t>(slice) * m : nullptr;
          for (int i = slice * rows / kRowSlices; i < (slice + 1) * rows / kRowSlices; ++i) {
            const int q = r0 + i;
            float* row = s + static_cast<int64_t>(i) * n;
            const int visible = a.causal ? q + 1 : n;
            SoftmaxRow(row, visible);
            std::fill(row + visible, row + n, 0.f);
            if (want_scores && q >= a.score_rows_begin) {
              for (int j = 0; j < visible; ++j) col[j] += row[j];
            }
            if (want_sparsity && q >= a.sparsity_rows_begin) {
              float mx = 0.f;
              for (int j = 0; j < visible; ++j) mx = std::max(mx, row[j]);
              const float cut = static_cast<float>(a.sparsity_threshold * mx);
              int64_t count = 0;
              for (int j = 0; j < visible; ++j) count += row[j] < cut;
              sparse[slice] += count;
            }
          }
        });
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, d, n, 1.f, s, n, vh,
                    kv_stride, 0.f, a.out + static_cast<int64_t>(r0) * q_stride + h * d,
                    q_stride);
      }
      if (want_scores) {
        float* col = a.column_scores + static_cast<int64_t>(kvh) * m;
        for (int slice = 0; slice < kRowSlices; ++slice) {
          const float* part = col_parts_.data() + static_cast<int64_t>(slice) * m;
          for (int j = 0; j < m; ++j) col[j] += part[j];
        }
      }
      if (want_sparsity) {
        for (int slice = 0; slice < kRowSlices; ++slice) a.sparse_counts[h] += sparse[slice];
      }
    }
  }

  void PagedAttention(const PagedPool& pool, const PagedAttentionItem* items, int num_items,
                      int num_heads, int num_kv_heads) override {
    const int group = num_heads / num_kv_heads;
    const int d = pool.head_dim;
    const int tasks = num_items * num_kv_heads;
    int longest = 0;
    for (int i = 0; i < num_items; ++i) {
      for (int h = 0; h < num_kv_heads; ++h) longest = std::max(longest, items[i].kv[h].length);
    }
    const int workers = workers_->size();
    // Score buffers grow to the longest cache once and are reused: no heap
    // allocation per decoded token in steady state.
    if (static_cast<int>(scores_.size()) < workers) scores_.resize(workers);
    const size_t need = static_cast<size_t>(group) * longest;
    for (int w = 0; w < workers; ++w) {
      if (scores_[w].size() < need) scores_[w].resize(need);
    }
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    workers_->Run(tasks, [&](int t, int worker) {
      const PagedAttentionItem& item = items[t / num_kv_heads];
      const int kvh = t % num_kv_heads;
      const PagedKvView& kv = item.kv[kvh];
      const int stride = num_heads * d;
      for (int r = 0; r < item.rows; ++r) {
        AttendGroup(pool, kv, item.q + static_cast<int64_t>(r) * stride + kvh * group * d,
                    item.out + static_cast<int64_t>(r) * stride + kvh * group * d,
                    kv.length - item.rows + 1 + r, group, scale, scores_[worker].data());
      }
    });
  }

 private:
  int threads_ = 1;
  std::unique_ptr<WorkerPool> workers_;
  std::vector<float> tile_;
  std::vector<float> col_parts_;  // [kRowSlices][m] column sums of one head
  float rope_theta_ = 0.f;
  std::vector<float> inv_freq_, cos_t_, sin_t_;
  std::vector<std::vector<float>> scores_;
};

}  // namespace

std::unique_ptr<Ops> CreateCpuOps(const OpsOptions& options) {
  return std::make_unique<CpuOps>(options);
}

}  // namespace kernels
}  // namespace vlcache

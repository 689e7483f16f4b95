#include <algorithm>
#include <cmath>

#include "common.cuh"
#include "prefill_attention.cuh"

namespace vlcache {
namespace kernels {
namespace cuda {
namespace {

/// Softmax of one (query row, head) of a score tile, plus the sparsity count.
/// Entries past the causal limit are zeroed so the tile can go straight into
/// the P V product. Counts use 64-bit integer atomics: exact and order-free.
/// \param tile         [num_heads][head_stride] score tiles, each [rows][n]
/// \param head_stride  floats between the tiles of consecutive heads
/// \param n            keys visible to the chunk (the tile's row width)
/// \param r0           first query row of the chunk
/// \param causal       mask keys after the query row
/// \param sparsity_rows_begin first row counted (< 0: no counting)
/// \param threshold    an entry is sparse when p < threshold * max_p of its row
/// \param sparse_counts [num_heads] counts, ADDED to
__global__ void ChunkSoftmaxKernel(float* tile, int64_t head_stride, int n, int r0, bool causal,
                                   int sparsity_rows_begin, double threshold,
                                   unsigned long long* sparse_counts) {
  __shared__ float fscratch[32];
  __shared__ double dscratch[32];
  __shared__ unsigned long long cscratch[32];
  const int i = blockIdx.x, h = blockIdx.y, q = r0 + i;
  float* row = tile + h * head_stride + static_cast<int64_t>(i) * n;
  const int visible = causal ? q + 1 : n;
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < visible; j += blockDim.x) mx = fmaxf(mx, row[j]);
  mx = BlockMax(mx, fscratch);
  double sum = 0;
  for (int j = threadIdx.x; j < visible; j += blockDim.x) sum += expf(row[j] - mx);
  const float inv = static_cast<float>(1.0 / BlockSum(sum, dscratch));
  // The row maximum of the probabilities is exp(0) * inv = inv exactly, as
  // the CPU path finds it by scanning.
  const bool count = sparse_counts && sparsity_rows_begin >= 0 && q >= sparsity_rows_begin;
  const float cut = static_cast<float>(threshold * inv);
  unsigned long long sparse = 0;
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    if (j < visible) {
      const float p = expf(row[j] - mx) * inv;
      row[j] = p;
      sparse += p < cut;
    } else {
      row[j] = 0.f;
    }
  }
  if (count) {
    const unsigned long long total = BlockSum(sparse, cscratch);
    if (threadIdx.x == 0) atomicAdd(sparse_counts + h, total);
  }
}

/// Column sums of the probabilities of one chunk over the query heads of a kv
/// head and rows >= score_rows_begin, added to column_scores. Each column has
/// one owner thread and chunks run in stream order: no atomics, deterministic.
/// \param tile          probability tiles as left by ChunkSoftmaxKernel
/// \param head_stride   floats between head tiles
/// \param n             tile row width
/// \param row_begin     first tile row that counts
/// \param rows          tile rows
/// \param group         query heads per kv head
/// \param m             prompt length (column_scores row width)
/// \param column_scores [num_kv_heads][m] sums, ADDED to
__global__ void ChunkColumnSumKernel(const float* __restrict__ tile, int64_t head_stride, int n,
                                     int row_begin, int rows, int group, int m,
                                     float* column_scores) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  const int kvh = blockIdx.y;
  if (j >= n) return;
  float sum = 0.f;
  for (int g = 0; g < group; ++g) {
    const float* t = tile + (static_cast<int64_t>(kvh) * group + g) * head_stride + j;
    for (int i = row_begin; i < rows; ++i) sum += t[static_cast<int64_t>(i) * n];
  }
  column_scores[static_cast<int64_t>(kvh) * m + j] += sum;
}

}  // namespace

void PrefillPointerTable(const PrefillAttentionArgs& a, float* tile,
                         std::vector<const float*>* table) {
  const int heads = a.num_heads, group = a.num_heads / a.num_kv_heads, d = a.head_dim;
  const int chunk = std::max(1, a.chunk_rows);
  const int chunks = (a.m + chunk - 1) / chunk;
  const int64_t q_stride = int64_t{heads} * d;
  table->assign(static_cast<size_t>(heads) * (3 + 2 * chunks), nullptr);
  const float** t = table->data();
  for (int h = 0; h < heads; ++h) {
    t[h] = a.k + (h / group) * d;
    t[heads + h] = a.v + (h / group) * d;
    t[2 * heads + h] = tile + static_cast<int64_t>(h) * chunk * a.m;
  }
  for (int c = 0; c < chunks; ++c) {
    const float** qo = t + heads * (3 + 2 * c);
    for (int h = 0; h < heads; ++h) {
      qo[h] = a.q + static_cast<int64_t>(c) * chunk * q_stride + h * d;
      qo[heads + h] = a.out + static_cast<int64_t>(c) * chunk * q_stride + h * d;
    }
  }
}

cudaError_t PrefillAttention(cublasHandle_t handle, cudaStream_t stream,
                             const PrefillAttentionArgs& a, float* tile,
                             const float** table) {
  const int m = a.m, d = a.head_dim, heads = a.num_heads;
  const int group = a.num_heads / a.num_kv_heads;
  const int chunk = std::max(1, a.chunk_rows);
  const int q_stride = heads * d, kv_stride = a.num_kv_heads * d;
  const int64_t head_stride = int64_t{chunk} * m;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const bool want_scores = a.column_scores && a.score_rows_begin >= 0;
  const bool want_sparsity = a.sparse_counts && a.sparsity_rows_begin >= 0;
  const float one = 1.f, zero = 0.f;
  for (int r0 = 0, c = 0; r0 < m; r0 += chunk, ++c) {
    const int rows = std::min(chunk, m - r0);
    const int n = a.causal ? r0 + rows : m;
    const float** qo = table + heads * (3 + 2 * c);
    // S^T (column-major [n, rows]) = K^T-as-stored (OP_T) times Q^T, per head.
    if (cublasSgemmBatched(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, rows, d, &scale, table, kv_stride,
                           qo, q_stride, &zero, const_cast<float**>(table + 2 * heads), n,
                           heads) != CUBLAS_STATUS_SUCCESS) {
      return cudaErrorLaunchFailure;
    }
    ChunkSoftmaxKernel<<<dim3(rows, heads), 256, 0, stream>>>(
        tile, head_stride, n, r0, a.causal, want_sparsity ? a.sparsity_rows_begin : -1,
        a.sparsity_threshold, reinterpret_cast<unsigned long long*>(a.sparse_counts));
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    if (want_scores && r0 + rows > a.score_rows_begin) {
      const int row_begin = std::max(0, a.score_rows_begin - r0);
      ChunkColumnSumKernel<<<dim3((n + 255) / 256, a.num_kv_heads), 256, 0, stream>>>(
          tile, head_stride, n, row_begin, rows, group, m, a.column_scores);
      if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    }
    // O^T (column-major [d, rows]) = V^T-as-stored times P^T, per head.
    if (cublasSgemmBatched(handle, CUBLAS_OP_N, CUBLAS_OP_N, d, rows, n, &one, table + heads,
                           kv_stride, table + 2 * heads, n, &zero,
                           const_cast<float**>(qo + heads), q_stride,
                           heads) != CUBLAS_STATUS_SUCCESS) {
      return cudaErrorLaunchFailure;
    }
  }
  return cudaSuccess;
}

}  // namespace cuda
}  // namespace kernels
}  // namespace vlcache

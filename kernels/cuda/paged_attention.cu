#include <cmath>

#include "common.cuh"
#include "paged_attention.cuh"

namespace vlcache {
namespace kernels {
namespace cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kPerLane = kPagedMaxHeadDim / kWarp;

/// Scores, local softmax and P V of one partition of one query row, for all
/// the query heads of its kv head: each key and value is read once per block.
/// \param pool      paged pool (device base)
/// \param tasks     task table (device)
/// \param units     unit table (device), one per block
/// \param num_heads query heads (row stride = num_heads * head_dim)
/// \param group     query heads per kv head
/// \param partition capacity of the shared score buffer per head
/// \param partial   [units][group][head_dim + 2]: unnormalised output, max, sum
__global__ void PagedPartitionKernel(DevicePagedPool pool, const PagedTask* __restrict__ tasks,
                                     const PagedUnit* __restrict__ units, int num_heads,
                                     int group, int partition, float* __restrict__ partial) {
  extern __shared__ float shared[];
  const int d = pool.head_dim;
  float* q_s = shared;                  // [group][d]
  float* s = shared + group * d;        // [group][partition]
  const PagedUnit u = units[blockIdx.x];
  const PagedTask t = tasks[u.task];
  const int len = u.end - u.begin;
  const int bt = pool.block_tokens;
  const int64_t stride = static_cast<int64_t>(num_heads) * d;
  const float* q = t.q + u.row * stride + static_cast<int64_t>(t.kv_head) * group * d;
  for (int i = threadIdx.x; i < group * d; i += blockDim.x) q_s[i] = q[i];
  __syncthreads();
  const float scale = 1.0f / sqrtf(static_cast<float>(d));
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  for (int jj = warp; jj < len; jj += warps) {
    const int j = u.begin + jj;
    const float* key = pool.Key(t.block_ids[j / bt], j % bt);
    float k_reg[kPerLane];
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) {
      const int c = lane + e * kWarp;
      k_reg[e] = c < d ? key[c] : 0.f;
    }
    for (int g = 0; g < group; ++g) {
      float dot = 0.f;
#pragma unroll
      for (int e = 0; e < kPerLane; ++e) {
        const int c = lane + e * kWarp;
        if (c < d) dot += q_s[g * d + c] * k_reg[e];
      }
      dot = WarpSum(dot);
      if (lane == 0) s[g * partition + jj] = dot * scale;
    }
  }
  __syncthreads();
  float* out = partial + static_cast<int64_t>(blockIdx.x) * group * (d + 2);
  for (int g = warp; g < group; g += warps) {
    float* sg = s + g * partition;
    float mx = -INFINITY;
    for (int j = lane; j < len; j += kWarp) mx = fmaxf(mx, sg[j]);
    mx = WarpMax(mx);
    float sum = 0.f;
    for (int j = lane; j < len; j += kWarp) {
      const float e = expf(sg[j] - mx);
      sg[j] = e;
      sum += e;
    }
    sum = WarpSum(sum);
    if (lane == 0) {
      out[g * (d + 2) + d] = mx;
      out[g * (d + 2) + d + 1] = sum;
    }
  }
  __syncthreads();
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    float acc[kPagedMaxGroup];
#pragma unroll
    for (int g = 0; g < kPagedMaxGroup; ++g) acc[g] = 0.f;
    for (int jj = 0; jj < len; ++jj) {
      const int j = u.begin + jj;
      const float v = pool.Value(t.block_ids[j / bt], j % bt)[c];
#pragma unroll
      for (int g = 0; g < kPagedMaxGroup; ++g) {
        if (g < group) acc[g] += s[g * partition + jj] * v;
      }
    }
#pragma unroll
    for (int g = 0; g < kPagedMaxGroup; ++g) {
      if (g < group) out[g * (d + 2) + c] = acc[g];
    }
  }
}

/// Merges the partitions of one (task, row) with the usual max/sum rescaling
/// and writes the normalised output rows of the group's query heads.
/// \param tasks     task table (device)
/// \param merges    merge table (device), one per block
/// \param num_heads query heads
/// \param group     query heads per kv head
/// \param d         head_dim
/// \param partial   partition results of PagedPartitionKernel
__global__ void PagedMergeKernel(const PagedTask* __restrict__ tasks,
                                 const PagedMerge* __restrict__ merges, int num_heads, int group,
                                 int d, const float* __restrict__ partial) {
  const PagedMerge mg = merges[blockIdx.x];
  const PagedTask t = tasks[mg.task];
  const int64_t stride = static_cast<int64_t>(num_heads) * d;
  float* out = t.out + mg.row * stride + static_cast<int64_t>(t.kv_head) * group * d;
  for (int i = threadIdx.x; i < group * d; i += blockDim.x) {
    const int g = i / d, c = i % d;
    float mx = -INFINITY;
    for (int p = 0; p < mg.num_units; ++p) {
      mx = fmaxf(mx, partial[(static_cast<int64_t>(mg.first_unit + p) * group + g) * (d + 2) + d]);
    }
    float sum = 0.f, acc = 0.f;
    for (int p = 0; p < mg.num_units; ++p) {
      const float* part = partial + (static_cast<int64_t>(mg.first_unit + p) * group + g) * (d + 2);
      const float w = expf(part[d] - mx);
      sum += part[d + 1] * w;
      acc += part[c] * w;
    }
    out[i] = mg.num_units > 0 ? acc / sum : 0.f;
  }
}

}  // namespace

cudaError_t PagedAttention(cudaStream_t stream, const DevicePagedPool& pool,
                           const PagedTask* tasks, const PagedUnit* units, int num_units,
                           const PagedMerge* merges, int num_merges, int num_heads, int group,
                           int partition, float* partial) {
  if (num_merges <= 0) return cudaSuccess;
  if (num_units > 0) {
    const size_t smem = sizeof(float) * (static_cast<size_t>(group) * pool.head_dim +
                                         static_cast<size_t>(group) * partition);
    PagedPartitionKernel<<<num_units, kThreads, smem, stream>>>(pool, tasks, units, num_heads,
                                                                group, partition, partial);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  }
  PagedMergeKernel<<<num_merges, kThreads, 0, stream>>>(tasks, merges, num_heads, group,
                                                        pool.head_dim, partial);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace kernels
}  // namespace vlcache

// Split-K attention of query rows over their paged caches: one block per
// partition of a (task, row)'s visible entries, then one merge block per
// (task, row). Work, and so time, is proportional to the entries held.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace vlcache { namespace kernels { namespace cuda {

// The pool as the kernels see it (flashinfer-style accessors: no kernel
// computes a raw offset itself).
struct DevicePagedPool {
  const float* base;
  int64_t block_floats;
  int block_tokens;
  int head_dim;
  __device__ const float* Key(int32_t block, int slot) const {
    return base + block * block_floats + static_cast<int64_t>(slot) * head_dim;
  }
  __device__ const float* Value(int32_t block, int slot) const {
    return base + block * block_floats + static_cast<int64_t>(block_tokens + slot) * head_dim;
  }
};

// One (item, kv head): q/out are the item's [rows, num_heads * head_dim] rows.
struct PagedTask {
  const float* q;
  float* out;
  const int32_t* block_ids;  // device
  int rows, length, kv_head;
};
// Entries [begin, end) of one row of one task.
struct PagedUnit {
  int task, row, begin, end;
};
// The units [first_unit, first_unit + num_units) of one (task, row).
struct PagedMerge {
  int task, row, first_unit, num_units;
};

// Largest head_dim / group size / partition the kernels are compiled for.
constexpr int kPagedMaxHeadDim = 256;
constexpr int kPagedMaxGroup = 8;

// partial: [num_units][group][head_dim + 2] scratch (accumulator, max, sum).
cudaError_t PagedAttention(cudaStream_t stream, const DevicePagedPool& pool,
                           const PagedTask* tasks, const PagedUnit* units, int num_units,
                           const PagedMerge* merges, int num_merges, int num_heads, int group,
                           int partition, float* partial);
}}}  // namespace vlcache::kernels::cuda

// The CUDA implementation of kernels::Ops.
//
// Every float / int32 / int64 pointer passed to these ops is DEVICE memory:
// activations, weights, Rope positions, PrefillAttentionArgs buffers
// (column_scores, sparse_counts), the paged pool base and every
// PagedKvView::block_ids. Only the small descriptor arrays themselves
// (the PagedAttentionItem array and each item's PagedKvView array) are read on
// the host, because the host needs the lengths to size the launch.
// Ops are asynchronous on the chosen stream; synchronise before reading results.
#pragma once

#include <memory>

#include "vlcache/kernels/ops.h"

namespace vlcache {
namespace kernels {

struct CudaOpsOptions {
  // cuBLAS may use TF32 tensor cores in Linear and the prefill products
  // (faster, ~1e-3 relative error); off keeps exact fp32 as the CPU path.
  bool allow_tf32 = false;
  // Entries of one (sequence, kv head) handled by one thread block of paged
  // attention before the partial results are merged (split-K decode).
  int paged_partition_entries = 256;
  // A cudaStream_t; nullptr is the legacy default stream.
  void* stream = nullptr;
};

// Throws std::runtime_error when no CUDA device can be used.
std::unique_ptr<Ops> CreateCudaOps(const OpsOptions& options);
std::unique_ptr<Ops> CreateCudaOps(const OpsOptions& options, const CudaOpsOptions& cuda);

// False when the runtime finds no CUDA-capable device (or no driver).
bool CudaDeviceAvailable();

}  // namespace kernels
}  // namespace vlcache

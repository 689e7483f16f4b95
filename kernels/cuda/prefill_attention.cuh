// Chunked prefill attention with the policy measurements (see PrefillAttentionArgs).
// The caller provides the device pointer tables built by PrefillPointerTable.
#pragma once
#include <cublas_v2.h>

#include <vector>

#include "vlcache/kernels/ops.h"

namespace vlcache { namespace kernels { namespace cuda {
// Host-side layout of the batched-GEMM pointer table: K, V, tile per head, then Q
// and out per (chunk, head). `tile` is [num_heads][chunk_rows][m] on the device.
void PrefillPointerTable(const PrefillAttentionArgs& args, float* tile,
                         std::vector<const float*>* table);
cudaError_t PrefillAttention(cublasHandle_t handle, cudaStream_t stream,
                             const PrefillAttentionArgs& args, float* tile,
                             const float** device_table);
}}}  // namespace vlcache::kernels::cuda

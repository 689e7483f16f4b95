// Rotary embedding in place, rotate-half convention; positions and inv_freq on the device.
#pragma once
#include <cuda_runtime.h>
#include <cstdint>

namespace vlcache { namespace kernels { namespace cuda {
cudaError_t Rope(cudaStream_t stream, float* x, int rows, int heads, int head_dim, int64_t stride,
                 const int32_t* positions, const float* inv_freq);
}}}  // namespace vlcache::kernels::cuda

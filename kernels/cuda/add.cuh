// x[i] += y[i].
#pragma once
#include <cuda_runtime.h>
#include <cstdint>

namespace vlcache { namespace kernels { namespace cuda {
cudaError_t Add(cudaStream_t stream, float* x, const float* y, int64_t n);
}}}  // namespace vlcache::kernels::cuda

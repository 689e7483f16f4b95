// y = x / sqrt(mean(x^2) + eps) * gamma, one block per row; y may alias x.
#pragma once
#include <cuda_runtime.h>

namespace vlcache { namespace kernels { namespace cuda {
cudaError_t RmsNorm(cudaStream_t stream, const float* x, int rows, int dim, const float* gamma,
                    float eps, float* y);
}}}  // namespace vlcache::kernels::cuda

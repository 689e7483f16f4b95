// y = LayerNorm(x) * gamma + beta over the last dim, one block per row; y may alias x.
#pragma once
#include <cuda_runtime.h>

namespace vlcache { namespace kernels { namespace cuda {
cudaError_t LayerNorm(cudaStream_t stream, const float* x, int rows, int dim, const float* gamma,
                      const float* beta, float eps, float* y);
}}}  // namespace vlcache::kernels::cuda

// Softmax in place over n values (one block).
#pragma once
#include <cuda_runtime.h>

namespace vlcache { namespace kernels { namespace cuda {
cudaError_t Softmax(cudaStream_t stream, float* x, int n);
}}}  // namespace vlcache::kernels::cuda

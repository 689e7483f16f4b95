// Elementwise activation in place (GELU erf/tanh, QuickGELU, SiLU, ReLU).
#pragma once
#include <cuda_runtime.h>

#include "vlcache/kernels/ops.h"

namespace vlcache { namespace kernels { namespace cuda {
cudaError_t Activate(cudaStream_t stream, Activation act, float* x, int64_t n);
}}}  // namespace vlcache::kernels::cuda

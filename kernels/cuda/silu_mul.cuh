// gate[i] = silu(gate[i]) * up[i] (the Llama MLP gating).
#pragma once
#include <cuda_runtime.h>
#include <cstdint>

namespace vlcache { namespace kernels { namespace cuda {
cudaError_t SiluMul(cudaStream_t stream, float* gate, const float* up, int64_t n);
}}}  // namespace vlcache::kernels::cuda

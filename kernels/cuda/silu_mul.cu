#include "common.cuh"
#include "silu_mul.cuh"

namespace vlcache {
namespace kernels {
namespace cuda {
namespace {

/// \param gate [n] gate projection, overwritten by silu(gate) * up
/// \param up   [n] up projection
/// \param n    number of values
__global__ void SiluMulKernel(float* __restrict__ gate, const float* __restrict__ up, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    gate[i] = g / (1.f + expf(-g)) * up[i];
  }
}

}  // namespace

cudaError_t SiluMul(cudaStream_t stream, float* gate, const float* up, int64_t n) {
  if (n <= 0) return cudaSuccess;
  constexpr int kThreads = 256;
  SiluMulKernel<<<ElementwiseBlocks(n, kThreads), kThreads, 0, stream>>>(gate, up, n);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace kernels
}  // namespace vlcache

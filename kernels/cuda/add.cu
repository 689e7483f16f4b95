#include "add.cuh"
#include "common.cuh"

namespace vlcache {
namespace kernels {
namespace cuda {
namespace {

/// \param x [n] accumulator, x += y
/// \param y [n] addend
/// \param n number of values
__global__ void AddKernel(float* __restrict__ x, const float* __restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] += y[i];
  }
}

}  // namespace

cudaError_t Add(cudaStream_t stream, float* x, const float* y, int64_t n) {
  if (n <= 0) return cudaSuccess;
  constexpr int kThreads = 256;
  AddKernel<<<ElementwiseBlocks(n, kThreads), kThreads, 0, stream>>>(x, y, n);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace kernels
}  // namespace vlcache

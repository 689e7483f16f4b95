#include "common.cuh"
#include "softmax.cuh"

namespace vlcache {
namespace kernels {
namespace cuda {
namespace {

/// Single-block softmax (the op is used on one logits row at a time); the sum
/// accumulates in double as on the CPU.
/// \param x [n] values, replaced by their softmax
/// \param n number of values
__global__ void SoftmaxKernel(float* x, int n) {
  __shared__ float fscratch[32];
  __shared__ double dscratch[32];
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < n; i += blockDim.x) mx = fmaxf(mx, x[i]);
  mx = BlockMax(mx, fscratch);
  double sum = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const float e = expf(x[i] - mx);
    x[i] = e;
    sum += e;
  }
  const float inv = static_cast<float>(1.0 / BlockSum(sum, dscratch));
  for (int i = threadIdx.x; i < n; i += blockDim.x) x[i] *= inv;
}

}  // namespace

cudaError_t Softmax(cudaStream_t stream, float* x, int n) {
  if (n <= 0) return cudaSuccess;
  SoftmaxKernel<<<1, 1024, 0, stream>>>(x, n);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace kernels
}  // namespace vlcache

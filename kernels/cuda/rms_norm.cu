#include "common.cuh"
#include "rms_norm.cuh"

namespace vlcache {
namespace kernels {
namespace cuda {
namespace {

/// RMSNorm of one row per block, sum of squares in double (as the CPU path).
/// \param x     [rows, dim] input
/// \param dim   row width
/// \param gamma [dim] scale
/// \param eps   epsilon added to the mean square
/// \param y     [rows, dim] output, may alias x
__global__ void RmsNormKernel(const float* x, int dim, const float* __restrict__ gamma,
                              float eps, float* y) {
  __shared__ double scratch[32];
  const float* xr = x + static_cast<int64_t>(blockIdx.x) * dim;
  float* yr = y + static_cast<int64_t>(blockIdx.x) * dim;
  double ss = 0;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += static_cast<double>(xr[i]) * xr[i];
  const float inv = static_cast<float>(1.0 / sqrt(BlockSum(ss, scratch) / dim + eps));
  for (int i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = gamma[i] * (xr[i] * inv);
}

}  // namespace

cudaError_t RmsNorm(cudaStream_t stream, const float* x, int rows, int dim, const float* gamma,
                    float eps, float* y) {
  if (rows <= 0) return cudaSuccess;
  RmsNormKernel<<<rows, 256, 0, stream>>>(x, dim, gamma, eps, y);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace kernels
}  // namespace vlcache

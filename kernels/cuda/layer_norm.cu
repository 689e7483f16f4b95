#include "common.cuh"
#include "layer_norm.cuh"

namespace vlcache {
namespace kernels {
namespace cuda {
namespace {

/// Two-pass LayerNorm of one row per block; the statistics accumulate in
/// double as the CPU reference does, so long rows agree to float rounding.
/// \param x     [rows, dim] input
/// \param dim   row width
/// \param gamma [dim] scale
/// \param beta  [dim] shift, or nullptr
/// \param eps   variance epsilon
/// \param y     [rows, dim] output, may alias x
__global__ void LayerNormKernel(const float* x, int dim, const float* __restrict__ gamma,
                                const float* __restrict__ beta, float eps, float* y) {
  __shared__ double scratch[32];
  const float* xr = x + static_cast<int64_t>(blockIdx.x) * dim;
  float* yr = y + static_cast<int64_t>(blockIdx.x) * dim;
  double s = 0;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) s += xr[i];
  const double mean = BlockSum(s, scratch) / dim;
  double v = 0;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) v += (xr[i] - mean) * (xr[i] - mean);
  const double inv = 1.0 / sqrt(BlockSum(v, scratch) / dim + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    yr[i] = static_cast<float>((xr[i] - mean) * inv) * gamma[i] + (beta ? beta[i] : 0.f);
  }
}

}  // namespace

cudaError_t LayerNorm(cudaStream_t stream, const float* x, int rows, int dim, const float* gamma,
                      const float* beta, float eps, float* y) {
  if (rows <= 0) return cudaSuccess;
  LayerNormKernel<<<rows, 256, 0, stream>>>(x, dim, gamma, beta, eps, y);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace kernels
}  // namespace vlcache

#include "common.cuh"
#include "linear.cuh"

namespace vlcache {
namespace kernels {
namespace cuda {
namespace {

/// Copies the bias into every row of y so that sgemm can accumulate onto it.
/// \param bias [out] bias vector
/// \param y    [rows, out] output, row-major
__global__ void BroadcastBiasKernel(const float* __restrict__ bias, int64_t rows, int out,
                                    float* __restrict__ y) {
  const int64_t n = rows * out;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] = bias[i % out];
  }
}

}  // namespace

cublasStatus_t Linear(cublasHandle_t handle, cudaStream_t stream, const float* x, int rows,
                      int in, const float* w, const float* bias, int out, float* y) {
  if (rows <= 0 || out <= 0) return CUBLAS_STATUS_SUCCESS;
  if (bias) {
    constexpr int kThreads = 256;
    BroadcastBiasKernel<<<ElementwiseBlocks(int64_t{rows} * out, kThreads), kThreads, 0,
                          stream>>>(bias, rows, out, y);
    if (cudaGetLastError() != cudaSuccess) return CUBLAS_STATUS_EXECUTION_FAILED;
  }
  // Row-major y = x w^T is column-major y^T = w^T(as stored, transposed) x^T:
  // w's row-major [out, in] is column-major [in, out], hence OP_T on it.
  const float alpha = 1.f, beta = bias ? 1.f : 0.f;
  return cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &alpha, w, in, x, in,
                     &beta, y, out);
}

}  // namespace cuda
}  // namespace kernels
}  // namespace vlcache

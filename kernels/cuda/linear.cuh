// y[rows, out] = x[rows, in] * w[out, in]^T (+ bias) with cuBLAS sgemm.
#pragma once
#include <cublas_v2.h>

namespace vlcache { namespace kernels { namespace cuda {
cublasStatus_t Linear(cublasHandle_t handle, cudaStream_t stream, const float* x, int rows,
                      int in, const float* w, const float* bias, int out, float* y);
}}}  // namespace vlcache::kernels::cuda

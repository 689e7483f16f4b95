#include "activate.cuh"
#include "common.cuh"

namespace vlcache {
namespace kernels {
namespace cuda {
namespace {

// The GELUs evaluate in double like the CPU reference: the erf/tanh of float
// arguments differ in the last bits otherwise, which is all we compare against.
template <Activation kAct>
__device__ __forceinline__ float Apply(float x) {
  if (kAct == Activation::kGeluErf) {
    return static_cast<float>(0.5 * x * (1.0 + erf(x / sqrt(2.0))));
  } else if (kAct == Activation::kGeluTanh) {
    const double v = x;
    return static_cast<float>(
        0.5 * v * (1.0 + tanh(sqrt(2.0 / 3.14159265358979323846) * (v + 0.044715 * v * v * v))));
  } else if (kAct == Activation::kQuickGelu) {
    return x / (1.f + expf(-1.702f * x));
  } else if (kAct == Activation::kSilu) {
    return x / (1.f + expf(-x));
  } else {
    return fmaxf(0.f, x);
  }
}

/// \param x [n] values, activated in place
/// \param n number of values
template <Activation kAct>
__global__ void ActivateKernel(float* x, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] = Apply<kAct>(x[i]);
  }
}

template <Activation kAct>
cudaError_t Launch(cudaStream_t stream, float* x, int64_t n) {
  constexpr int kThreads = 256;
  ActivateKernel<kAct><<<ElementwiseBlocks(n, kThreads), kThreads, 0, stream>>>(x, n);
  return cudaGetLastError();
}

}  // namespace

cudaError_t Activate(cudaStream_t stream, Activation act, float* x, int64_t n) {
  if (n <= 0) return cudaSuccess;
  switch (act) {
    case Activation::kGeluErf: return Launch<Activation::kGeluErf>(stream, x, n);
    case Activation::kGeluTanh: return Launch<Activation::kGeluTanh>(stream, x, n);
    case Activation::kQuickGelu: return Launch<Activation::kQuickGelu>(stream, x, n);
    case Activation::kSilu: return Launch<Activation::kSilu>(stream, x, n);
    case Activation::kRelu: return Launch<Activation::kRelu>(stream, x, n);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace kernels
}  // namespace vlcache

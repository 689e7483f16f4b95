#include "common.cuh"
#include "rope.cuh"

namespace vlcache {
namespace kernels {
namespace cuda {
namespace {

/// One block per row; threads cover (head, i < head_dim / 2) pairs.
/// The angle is a float32 product (as transformers computes it) and its
/// cos/sin are taken in double, matching the CPU path bit for bit in the angle.
/// \param x         [rows, stride] rows of heads * head_dim values, rotated in place
/// \param heads     heads per row
/// \param head_dim  width of one head (even)
/// \param stride    floats between consecutive rows
/// \param positions [rows] token positions
/// \param inv_freq  [head_dim / 2] inverse frequencies (computed on the host)
__global__ void RopeKernel(float* x, int heads, int head_dim, int64_t stride,
                           const int32_t* __restrict__ positions,
                           const float* __restrict__ inv_freq) {
  const int half = head_dim / 2;
  const float pos = static_cast<float>(positions[blockIdx.x]);
  float* row = x + blockIdx.x * stride;
  for (int t = threadIdx.x; t < heads * half; t += blockDim.x) {
    const int h = t / half, i = t % half;
    const float angle = pos * inv_freq[i];
    const float c = static_cast<float>(cos(static_cast<double>(angle)));
    const float s = static_cast<float>(sin(static_cast<double>(angle)));
    float* v = row + static_cast<int64_t>(h) * head_dim;
    const float a = v[i], b = v[i + half];
    v[i] = a * c - b * s;
    v[i + half] = b * c + a * s;
  }
}

}  // namespace

cudaError_t Rope(cudaStream_t stream, float* x, int rows, int heads, int head_dim, int64_t stride,
                 const int32_t* positions, const float* inv_freq) {
  if (rows <= 0) return cudaSuccess;
  RopeKernel<<<rows, 128, 0, stream>>>(x, heads, head_dim, stride, positions, inv_freq);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace kernels
}  // namespace vlcache

// A CPU emulation of exactly the CUDA subset kernels/cuda uses, so the
// kernels' indexing, barriers, warp shuffles and cuBLAS argument order can be
// checked on a machine without a GPU (see run.sh). Every CUDA thread is a
// ucontext fiber; the blocks of a launch run one after another, so shared
// memory can be a static and atomics plain adds. __syncthreads and the warp
// shuffles are cooperative barriers over the block / the warp. cuBLAS is a
// column-major double-accumulating reference written from the cuBLAS
// specification. It proves the logic, not the speed, and it cannot find races
// that only concurrent blocks expose: the device check stays the real test.
#pragma once
#include <ucontext.h>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>
#include <algorithm>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static
struct dim3 { unsigned x, y, z; dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };
namespace sim {
struct Fiber { ucontext_t ctx; dim3 tid; bool done = false; std::vector<char> stack; };
inline std::vector<Fiber>& Fibers() { static std::vector<Fiber> f; return f; }
inline int& CurIdx() { static int c = 0; return c; }
inline ucontext_t& Sched() { static ucontext_t s; return s; }
inline dim3& BlockIdx() { static dim3 d; return d; }
inline dim3& BlockDim() { static dim3 d; return d; }
inline dim3& GridDim() { static dim3 d; return d; }
inline std::function<void()>& Body() { static std::function<void()> b; return b; }
inline std::vector<char>& Dyn() { static std::vector<char> d; return d; }
inline float* DynamicShared() { return reinterpret_cast<float*>(Dyn().data()); }
inline void Yield() { swapcontext(&Fibers()[CurIdx()].ctx, &Sched()); }
struct Barrier { int arrived = 0; long gen = 0; };
inline Barrier& BlockBar() { static Barrier b; return b; }
inline std::vector<Barrier>& WarpBars() { static std::vector<Barrier> b; return b; }
inline std::vector<uint64_t>& WarpBuf() { static std::vector<uint64_t> b; return b; }
inline void Wait(Barrier& b, int n) {
  long g = b.gen;
  if (++b.arrived == n) { b.arrived = 0; ++b.gen; return; }
  while (b.gen == g) Yield();
}
inline void Entry() { Body()(); Fibers()[CurIdx()].done = true; swapcontext(&Fibers()[CurIdx()].ctx, &Sched()); }
struct Cfg { dim3 grid, block; size_t smem; Cfg(dim3 g, dim3 b, size_t s = 0, void* = nullptr) : grid(g), block(b), smem(s) {} };
inline int WarpOf() { return Fibers()[CurIdx()].tid.x / 32; }
inline int WarpSize() {
  int w = WarpOf(); int n = BlockDim().x; return std::min(32, n - w * 32);
}
template <typename K, typename... A>
void Launch(Cfg c, K kernel, A... args) {
  const int n = c.block.x * c.block.y * c.block.z;
  if (n > 1024 || n <= 0) { std::abort(); }
  GridDim() = c.grid; BlockDim() = c.block;
  Dyn().assign(c.smem + 16, 0x7f);
  auto& fs = Fibers();
  fs.resize(n);
  for (auto& f : fs) if (f.stack.size() < (1 << 16)) f.stack.resize(1 << 16);
  WarpBars().assign((n + 31) / 32, Barrier{});
  WarpBuf().assign(n, 0);
  Body() = [&] { kernel(args...); };
  for (unsigned bz = 0; bz < c.grid.z; ++bz) for (unsigned by = 0; by < c.grid.y; ++by) for (unsigned bx = 0; bx < c.grid.x; ++bx) {
    BlockIdx() = dim3(bx, by, bz);
    BlockBar() = Barrier{};
    for (int i = 0; i < n; ++i) {
      Fiber& f = fs[i]; f.done = false; f.tid = dim3(i % c.block.x, (i / c.block.x) % c.block.y, i / (c.block.x * c.block.y));
      getcontext(&f.ctx); f.ctx.uc_stack.ss_sp = f.stack.data(); f.ctx.uc_stack.ss_size = f.stack.size(); f.ctx.uc_link = nullptr;
      makecontext(&f.ctx, Entry, 0);
    }
    bool any = true;
    while (any) {
      any = false;
      for (int i = 0; i < n; ++i) if (!fs[i].done) { CurIdx() = i; swapcontext(&Sched(), &fs[i].ctx); any = true; }
    }
  }
}
}  // namespace sim
#define threadIdx (sim::Fibers()[sim::CurIdx()].tid)
#define blockIdx (sim::BlockIdx())
#define blockDim (sim::BlockDim())
#define gridDim (sim::GridDim())
inline void __syncthreads() { sim::Wait(sim::BlockBar(), sim::BlockDim().x); }
template <typename T> T __shfl_xor_sync(unsigned, T v, int o) {
  int lane = threadIdx.x % 32, w = sim::WarpOf();
  uint64_t bits = 0; std::memcpy(&bits, &v, sizeof(T));
  sim::WarpBuf()[w * 32 + lane] = bits;
  sim::Wait(sim::WarpBars()[w], sim::WarpSize());
  T r; uint64_t rb = sim::WarpBuf()[w * 32 + (lane ^ o)]; std::memcpy(&r, &rb, sizeof(T));
  sim::Wait(sim::WarpBars()[w], sim::WarpSize());
  return r;
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { auto o = *p; *p += v; return o; }
inline float atomicAdd(float* p, float v) { auto o = *p; *p += v; return o; }
// ---- runtime
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorLaunchFailure = 4, cudaErrorUnknown = 999 };
typedef void* cudaStream_t; typedef void* cudaEvent_t;
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
enum { cudaEventDisableTiming = 2 };
struct cudaDeviceProp { char name[256]; int major, minor; size_t totalGlobalMem; };
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "sim error"; }
inline cudaError_t cudaGetDeviceCount(int* n) { *n = 1; return cudaSuccess; }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) { std::strcpy(p->name, "cpu-fiber-emulation"); p->major = 0; p->minor = 0; p->totalGlobalMem = 0; return cudaSuccess; }
inline cudaError_t cudaMalloc(void** p, size_t n) { *p = std::malloc(n); std::memset(*p, 0xff, n); return cudaSuccess; }
template <typename T> cudaError_t cudaMalloc(T** p, size_t n) { return cudaMalloc(reinterpret_cast<void**>(p), n); }
inline cudaError_t cudaMallocHost(void** p, size_t n) { return cudaMalloc(p, n); }
inline cudaError_t cudaFree(void* p) { std::free(p); return cudaSuccess; }
inline cudaError_t cudaFreeHost(void* p) { std::free(p); return cudaSuccess; }
inline cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) { std::memcpy(d, s, n); return cudaSuccess; }
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t) { std::memcpy(d, s, n); return cudaSuccess; }
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, int) { *e = (void*)1; return cudaSuccess; }
inline cudaError_t cudaEventCreate(cudaEvent_t* e) { *e = (void*)1; return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t, cudaEvent_t) { *ms = 1.f; return cudaSuccess; }
inline cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b) { *free_b = size_t(8) << 30; *total_b = size_t(16) << 30; return cudaSuccess; }
inline cudaError_t cudaEventDestroy(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t = nullptr) { return cudaSuccess; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
// ---- cuBLAS (column-major reference)
typedef void* cublasHandle_t;
enum cublasStatus_t { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_EXECUTION_FAILED = 13 };
typedef int cublasOperation_t; enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
typedef int cublasMath_t; enum { CUBLAS_DEFAULT_MATH = 0, CUBLAS_TF32_TENSOR_OP_MATH = 3 };
inline cublasStatus_t cublasCreate(cublasHandle_t* h) { *h = (void*)1; return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasDestroy(cublasHandle_t) { return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasSetMathMode(cublasHandle_t, int) { return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasSgemm(cublasHandle_t, int ta, int tb, int m, int n, int k, const float* alpha, const float* A, int lda, const float* B, int ldb, const float* beta, float* C, int ldc) {
  for (int j = 0; j < n; ++j) for (int i = 0; i < m; ++i) {
    double s = 0;
    for (int l = 0; l < k; ++l) {
      const double a = ta == CUBLAS_OP_N ? A[i + (int64_t)l * lda] : A[l + (int64_t)i * lda];
      const double b = tb == CUBLAS_OP_N ? B[l + (int64_t)j * ldb] : B[j + (int64_t)l * ldb];
      s += a * b;
    }
    float& c = C[i + (int64_t)j * ldc];
    c = (float)(*alpha * s + (*beta == 0.f ? 0.0 : (double)*beta * c));
  }
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSgemmBatched(cublasHandle_t h, int ta, int tb, int m, int n, int k, const float* alpha, const float* const A[], int lda, const float* const B[], int ldb, const float* beta, float* const C[], int ldc, int count) {
  for (int b = 0; b < count; ++b) cublasSgemm(h, ta, tb, m, n, k, alpha, A[b], lda, B[b], ldb, beta, C[b], ldc);
  return CUBLAS_STATUS_SUCCESS;
}

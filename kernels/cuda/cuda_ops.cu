// CudaOps: the Ops interface on device pointers. Owns the cuBLAS handle, the
// scratch buffers (prefill score tiles, paged partial results) and a small
// ring of pinned staging buffers for the per-call descriptor tables.
#include <cublas_v2.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "activate.cuh"
#include "add.cuh"
#include "cuda_ops.h"
#include "layer_norm.cuh"
#include "linear.cuh"
#include "paged_attention.cuh"
#include "prefill_attention.cuh"
#include "rms_norm.cuh"
#include "rope.cuh"
#include "silu_mul.cuh"
#include "softmax.cuh"

namespace vlcache {
namespace kernels {
namespace {

void Check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    throw std::runtime_error(std::string("CUDA ") + what + ": " + cudaGetErrorString(e));
  }
}

void Check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    throw std::runtime_error(std::string("cuBLAS ") + what + " failed with status " +
                             std::to_string(static_cast<int>(s)));
  }
}

// A device allocation that only grows (reallocation is rare: the largest
// prompt / batch seen so far).
class DeviceScratch {
 public:
  ~DeviceScratch() { cudaFree(ptr_); }
  void* Get(size_t bytes) {
    if (bytes > bytes_) {
      Check(cudaFree(ptr_), "free scratch");
      ptr_ = nullptr;
      Check(cudaMalloc(&ptr_, bytes), "allocate scratch");
      bytes_ = bytes;
    }
    return ptr_;
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Descriptor tables go host -> device through pinned buffers so the copy is
// truly asynchronous; a slot is reused only after the event recorded behind
// its consumers has fired, so a decode loop never stalls on its own uploads.
class StagingRing {
 public:
  static constexpr int kSlots = 4;
  explicit StagingRing(cudaStream_t stream) : stream_(stream) {}
  ~StagingRing() {
    for (Slot& s : slots_) {
      if (s.event) cudaEventDestroy(s.event);
      cudaFreeHost(s.host);
      cudaFree(s.device);
    }
  }
  // Copies `bytes` to the device; the result is valid until Done() of this
  // slot plus kSlots - 1 further uploads.
  void* Upload(const void* data, size_t bytes) {
    Slot& s = slots_[next_];
    if (s.event) Check(cudaEventSynchronize(s.event), "wait for staging slot");
    if (bytes > s.bytes) {
      cudaFreeHost(s.host);
      cudaFree(s.device);
      s.host = nullptr;
      s.device = nullptr;
      const size_t cap = std::max<size_t>(bytes, 4096);
      Check(cudaMallocHost(&s.host, cap), "allocate pinned staging");
      Check(cudaMalloc(&s.device, cap), "allocate device staging");
      s.bytes = cap;
    }
    std::memcpy(s.host, data, bytes);
    Check(cudaMemcpyAsync(s.device, s.host, bytes, cudaMemcpyHostToDevice, stream_),
          "upload descriptors");
    return s.device;
  }
  // Marks the slot of the last Upload as in use by everything enqueued so far.
  void Done() {
    Slot& s = slots_[next_];
    if (!s.event) Check(cudaEventCreateWithFlags(&s.event, cudaEventDisableTiming), "event");
    Check(cudaEventRecord(s.event, stream_), "record staging event");
    next_ = (next_ + 1) % kSlots;
  }

 private:
  struct Slot {
    void* host = nullptr;
    void* device = nullptr;
    size_t bytes = 0;
    cudaEvent_t event = nullptr;
  };
  cudaStream_t stream_;
  Slot slots_[kSlots];
  int next_ = 0;
};

size_t AlignUp(size_t n) { return (n + 15) / 16 * 16; }

class CudaOps final : public Ops {
 public:
  explicit CudaOps(const CudaOpsOptions& options)
      : options_(options), stream_(static_cast<cudaStream_t>(options.stream)), staging_(stream_) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
      cudaGetLastError();
      throw std::runtime_error("CreateCudaOps: no CUDA-capable device");
    }
    if (options_.paged_partition_entries < 1) {
      throw std::runtime_error("CreateCudaOps: paged_partition_entries must be >= 1");
    }
    Check(cublasCreate(&blas_), "cublasCreate");
    Check(cublasSetStream(blas_, stream_), "cublasSetStream");
    Check(cublasSetMathMode(blas_, options_.allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                       : CUBLAS_DEFAULT_MATH),
          "cublasSetMathMode");
  }
  ~CudaOps() override {
    cudaStreamSynchronize(stream_);
    cublasDestroy(blas_);
    cudaFree(inv_freq_);
  }

  void Linear(const float* x, int rows, int in, const float* w, const float* bias, int out,
              float* y) override {
    Check(cuda::Linear(blas_, stream_, x, rows, in, w, bias, out, y), "Linear (sgemm)");
  }
  void LayerNorm(const float* x, int rows, int dim, const float* gamma, const float* beta,
                 float eps, float* y) override {
    Check(cuda::LayerNorm(stream_, x, rows, dim, gamma, beta, eps, y), "LayerNorm");
  }
  void RmsNorm(const float* x, int rows, int dim, const float* gamma, float eps,
               float* y) override {
    Check(cuda::RmsNorm(stream_, x, rows, dim, gamma, eps, y), "RmsNorm");
  }
  void Activate(Activation act, float* x, int64_t n) override {
    Check(cuda::Activate(stream_, act, x, n), "Activate");
  }
  void SiluMul(float* gate, const float* up, int64_t n) override {
    Check(cuda::SiluMul(stream_, gate, up, n), "SiluMul");
  }
  void Add(float* x, const float* y, int64_t n) override {
    Check(cuda::Add(stream_, x, y, n), "Add");
  }

  void Rope(float* x, int rows, int heads, int head_dim, int64_t stride,
            const int32_t* positions, float theta) override {
    const int half = head_dim / 2;
    if (rope_theta_ != theta || rope_half_ != half) {
      // The same float32 inverse frequencies as the CPU path, computed once on
      // the host so both paths rotate by identical angles.
      std::vector<float> inv(half);
      for (int i = 0; i < half; ++i) {
        inv[i] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / head_dim);
      }
      Check(cudaStreamSynchronize(stream_), "sync before RoPE table update");
      cudaFree(inv_freq_);
      inv_freq_ = nullptr;
      Check(cudaMalloc(&inv_freq_, sizeof(float) * std::max(half, 1)), "allocate inv_freq");
      Check(cudaMemcpy(inv_freq_, inv.data(), sizeof(float) * half, cudaMemcpyHostToDevice),
            "upload inv_freq");
      rope_theta_ = theta;
      rope_half_ = half;
    }
    Check(cuda::Rope(stream_, x, rows, heads, head_dim, stride, positions, inv_freq_), "Rope");
  }

  void Softmax(float* x, int n) override { Check(cuda::Softmax(stream_, x, n), "Softmax"); }

  void PrefillAttention(const PrefillAttentionArgs& a) override {
    if (a.m <= 0) return;
    const int chunk = std::max(1, a.chunk_rows);
    float* tile = static_cast<float*>(
        tile_.Get(sizeof(float) * static_cast<size_t>(a.num_heads) * chunk * a.m));
    cuda::PrefillPointerTable(a, tile, &table_);
    const float** device_table = static_cast<const float**>(
        staging_.Upload(table_.data(), sizeof(const float*) * table_.size()));
    Check(cuda::PrefillAttention(blas_, stream_, a, tile, device_table), "PrefillAttention");
    staging_.Done();
  }

  void PagedAttention(const PagedPool& pool, const PagedAttentionItem* items, int num_items,
                      int num_heads, int num_kv_heads) override {
    const int group = num_heads / num_kv_heads;
    const int part = options_.paged_partition_entries;
    if (pool.head_dim > cuda::kPagedMaxHeadDim || group > cuda::kPagedMaxGroup) {
      throw std::runtime_error("CUDA PagedAttention: head_dim <= " +
                               std::to_string(cuda::kPagedMaxHeadDim) + " and group <= " +
                               std::to_string(cuda::kPagedMaxGroup) + " are supported");
    }
    // The partition kernel keeps the group's query rows and scores in shared memory.
    if (sizeof(float) * static_cast<size_t>(group) * (pool.head_dim + part) > 48 * 1024) {
      throw std::runtime_error("CUDA PagedAttention: group * (head_dim + paged_partition_entries)"
                               " floats exceed 48 KiB of shared memory; lower the partition");
    }
    tasks_.clear();
    units_.clear();
    merges_.clear();
    for (int i = 0; i < num_items; ++i) {
      const PagedAttentionItem& item = items[i];
      for (int h = 0; h < num_kv_heads; ++h) {
        const int task = static_cast<int>(tasks_.size());
        tasks_.push_back({item.q, item.out, item.kv[h].block_ids, item.rows, item.kv[h].length, h});
        for (int r = 0; r < item.rows; ++r) {
          const int visible = std::max(0, item.kv[h].length - item.rows + 1 + r);
          const int first = static_cast<int>(units_.size());
          for (int b = 0; b < visible; b += part) {
            units_.push_back({task, r, b, std::min(visible, b + part)});
          }
          merges_.push_back({task, r, first, static_cast<int>(units_.size()) - first});
        }
      }
    }
    if (merges_.empty()) return;
    // One upload: [tasks][units][merges], each part 16-byte aligned.
    const size_t tb = AlignUp(sizeof(cuda::PagedTask) * tasks_.size());
    const size_t ub = AlignUp(sizeof(cuda::PagedUnit) * units_.size());
    const size_t mb = sizeof(cuda::PagedMerge) * merges_.size();
    blob_.assign(tb + ub + mb, 0);
    std::memcpy(blob_.data(), tasks_.data(), sizeof(cuda::PagedTask) * tasks_.size());
    std::memcpy(blob_.data() + tb, units_.data(), sizeof(cuda::PagedUnit) * units_.size());
    std::memcpy(blob_.data() + tb + ub, merges_.data(), mb);
    char* dev = static_cast<char*>(staging_.Upload(blob_.data(), blob_.size()));
    float* partial = static_cast<float*>(partial_.Get(
        sizeof(float) * std::max<size_t>(1, units_.size()) * group * (pool.head_dim + 2)));
    const cuda::DevicePagedPool dpool{pool.base, pool.block_floats, pool.block_tokens,
                                      pool.head_dim};
    Check(cuda::PagedAttention(stream_, dpool, reinterpret_cast<const cuda::PagedTask*>(dev),
                               reinterpret_cast<const cuda::PagedUnit*>(dev + tb),
                               static_cast<int>(units_.size()),
                               reinterpret_cast<const cuda::PagedMerge*>(dev + tb + ub),
                               static_cast<int>(merges_.size()), num_heads, group, part, partial),
          "PagedAttention");
    staging_.Done();
  }

 private:
  CudaOpsOptions options_;
  cudaStream_t stream_;
  cublasHandle_t blas_ = nullptr;
  StagingRing staging_;
  DeviceScratch tile_, partial_;
  std::vector<const float*> table_;
  std::vector<cuda::PagedTask> tasks_;
  std::vector<cuda::PagedUnit> units_;
  std::vector<cuda::PagedMerge> merges_;
  std::vector<char> blob_;
  float* inv_freq_ = nullptr;
  float rope_theta_ = 0.f;
  int rope_half_ = -1;
};

}  // namespace

std::unique_ptr<Ops> CreateCudaOps(const OpsOptions& options) {
  return CreateCudaOps(options, CudaOpsOptions{});
}

std::unique_ptr<Ops> CreateCudaOps(const OpsOptions&, const CudaOpsOptions& cuda) {
  return std::make_unique<CudaOps>(cuda);
}

bool CudaDeviceAvailable() {
  int devices = 0;
  const bool ok = cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0;
  cudaGetLastError();  // clear a "no device" error so later calls start clean
  return ok;
}

}  // namespace kernels
}  // namespace vlcache

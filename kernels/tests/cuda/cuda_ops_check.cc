// Checks every CUDA op against the CPU reference (CreateCpuOps) on the same
// inputs, with deliberately odd sizes, by normalised max error:
//   max_i |gpu_i - cpu_i| / max(max_i |cpu_i|, 1e-30)
// against a tolerance stated per op. Prints one line per check and a final
// "N passed, M failed"; the exit code is 1 when any check failed. Exits 0
// with a clear message only when there is no CUDA-capable device.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda_ops.h"
#include "vlcache/kernels/ops.h"

namespace vlcache {
namespace kernels {
namespace {

int g_passed = 0, g_failed = 0;

void CheckCuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// A device copy of a host vector.
template <typename T>
class Dev {
 public:
  explicit Dev(const std::vector<T>& host) : n_(host.size()) {
    CheckCuda(cudaMalloc(&ptr_, sizeof(T) * std::max<size_t>(n_, 1)), "cudaMalloc");
    if (n_) CheckCuda(cudaMemcpy(ptr_, host.data(), sizeof(T) * n_, cudaMemcpyHostToDevice), "upload");
  }
  ~Dev() { cudaFree(ptr_); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  T* get() const { return ptr_; }
  std::vector<T> Download() const {
    CheckCuda(cudaDeviceSynchronize(), "sync");
    std::vector<T> host(n_);
    if (n_) CheckCuda(cudaMemcpy(host.data(), ptr_, sizeof(T) * n_, cudaMemcpyDeviceToHost), "download");
    return host;
  }

 private:
  T* ptr_ = nullptr;
  size_t n_;
};

std::vector<float> Random(size_t n, uint64_t seed, float scale = 1.f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

double NormErr(const std::vector<float>& gpu, const std::vector<float>& cpu) {
  double diff = 0, mag = 0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    if (!std::isfinite(gpu[i])) return INFINITY;
    diff = std::max(diff, std::fabs(double(gpu[i]) - cpu[i]));
    mag = std::max(mag, std::fabs(double(cpu[i])));
  }
  return diff / std::max(mag, 1e-30);
}

void Report(const std::string& name, double err, double tol) {
  const bool ok = err <= tol;
  (ok ? g_passed : g_failed)++;
  std::printf("%s %-44s normalised max error %.3e (tolerance %.1e)\n", ok ? "PASS" : "FAIL",
              name.c_str(), err, tol);
}

// Float32 GEMM in a different summation order: a few ulps of the output scale.
constexpr double kTolGemm = 2e-5;
// TF32 keeps 10 mantissa bits of the inputs.
constexpr double kTolTf32 = 5e-3;
constexpr double kTolElementwise = 1e-5;
// Attention: two GEMMs, exp and a reduction in a different order.
constexpr double kTolAttention = 1e-4;

void CheckLinear(Ops& gpu, Ops& cpu, const std::string& tag, double tol) {
  struct Case { int rows, in, out; bool bias; };
  for (const Case& c : {Case{7, 37, 29, true}, Case{1, 130, 67, false}, Case{13, 257, 3, true}}) {
    const auto x = Random(size_t(c.rows) * c.in, 1), w = Random(size_t(c.out) * c.in, 2),
               b = Random(c.out, 3);
    std::vector<float> ref(size_t(c.rows) * c.out);
    cpu.Linear(x.data(), c.rows, c.in, w.data(), c.bias ? b.data() : nullptr, c.out, ref.data());
    Dev<float> dx(x), dw(w), db(b), dy(std::vector<float>(ref.size(), 7.f));
    gpu.Linear(dx.get(), c.rows, c.in, dw.get(), c.bias ? db.get() : nullptr, c.out, dy.get());
    Report("Linear" + tag + " " + std::to_string(c.rows) + "x" + std::to_string(c.in) + "->" +
               std::to_string(c.out) + (c.bias ? " +bias" : ""),
           NormErr(dy.Download(), ref), tol);
  }
}

void CheckNorms(Ops& gpu, Ops& cpu) {
  {
    const int rows = 5, dim = 333;
    const auto x = Random(size_t(rows) * dim, 4, 3.f), g = Random(dim, 5), b = Random(dim, 6);
    std::vector<float> ref(x.size());
    cpu.LayerNorm(x.data(), rows, dim, g.data(), b.data(), 1e-5f, ref.data());
    Dev<float> dx(x), dg(g), db(b);
    gpu.LayerNorm(dx.get(), rows, dim, dg.get(), db.get(), 1e-5f, dx.get());  // in place
    Report("LayerNorm 5x333 in place", NormErr(dx.Download(), ref), kTolElementwise);
  }
  {
    const int rows = 3, dim = 4097;
    const auto x = Random(size_t(rows) * dim, 7, 2.f), g = Random(dim, 8);
    std::vector<float> ref(x.size());
    cpu.RmsNorm(x.data(), rows, dim, g.data(), 1e-6f, ref.data());
    Dev<float> dx(x), dg(g), dy(std::vector<float>(x.size()));
    gpu.RmsNorm(dx.get(), rows, dim, dg.get(), 1e-6f, dy.get());
    Report("RmsNorm 3x4097", NormErr(dy.Download(), ref), kTolElementwise);
  }
}

void CheckElementwise(Ops& gpu, Ops& cpu) {
  const char* names[] = {"gelu-erf", "gelu-tanh", "quick-gelu", "silu", "relu"};
  const Activation acts[] = {Activation::kGeluErf, Activation::kGeluTanh, Activation::kQuickGelu,
                             Activation::kSilu, Activation::kRelu};
  for (int a = 0; a < 5; ++a) {
    auto x = Random(1001, 9 + a, 3.f);
    Dev<float> dx(x);
    cpu.Activate(acts[a], x.data(), int64_t(x.size()));
    gpu.Activate(acts[a], dx.get(), int64_t(x.size()));
    Report(std::string("Activate ") + names[a] + " n=1001", NormErr(dx.Download(), x),
           kTolElementwise);
  }
  {
    auto g = Random(777, 20, 2.f);
    const auto u = Random(777, 21);
    Dev<float> dg(g), du(u);
    cpu.SiluMul(g.data(), u.data(), 777);
    gpu.SiluMul(dg.get(), du.get(), 777);
    Report("SiluMul n=777", NormErr(dg.Download(), g), kTolElementwise);
  }
  {
    auto x = Random(999, 22);
    const auto y = Random(999, 23);
    Dev<float> dx(x), dy(y);
    cpu.Add(x.data(), y.data(), 999);
    gpu.Add(dx.get(), dy.get(), 999);
    Report("Add n=999", NormErr(dx.Download(), x), kTolElementwise);
  }
  {
    auto x = Random(5003, 24, 4.f);
    Dev<float> dx(x);
    cpu.Softmax(x.data(), 5003);
    gpu.Softmax(dx.get(), 5003);
    Report("Softmax n=5003", NormErr(dx.Download(), x), kTolElementwise);
  }
  {
    // An odd row stride (a fused qkv row) and positions up to 30000, where a
    // float64 angle would already differ from transformers' float32 one.
    const int rows = 5, heads = 3, head_dim = 18;
    const int64_t stride = heads * head_dim + 7;
    auto x = Random(size_t(rows) * stride, 25);
    const std::vector<int32_t> pos = {0, 1, 17, 4099, 30000};
    Dev<float> dx(x);
    Dev<int32_t> dpos(pos);
    cpu.Rope(x.data(), rows, heads, head_dim, stride, pos.data(), 1e6f);
    gpu.Rope(dx.get(), rows, heads, head_dim, stride, dpos.get(), 1e6f);
    Report("Rope 5 rows x 3 heads x 18, stride 61", NormErr(dx.Download(), x), kTolElementwise);
  }
}

void CheckPrefill(Ops& gpu, Ops& cpu, int m, int heads, int kv_heads, int d, int chunk,
                  bool causal, int score_begin, int sparsity_begin, double threshold) {
  const std::string tag = "m=" + std::to_string(m) + " h=" + std::to_string(heads) + "/" +
                          std::to_string(kv_heads) + " d=" + std::to_string(d) + " chunk=" +
                          std::to_string(chunk) + (causal ? " causal" : " full");
  const auto q = Random(size_t(m) * heads * d, 30, 2.f), k = Random(size_t(m) * kv_heads * d, 31, 2.f),
             v = Random(size_t(m) * kv_heads * d, 32);
  // Non-zero starting scores/counts: both are ADDED to.
  std::vector<float> scores(size_t(kv_heads) * m, 0.25f);
  std::vector<int64_t> counts(heads, 5);
  std::vector<float> out(size_t(m) * heads * d);
  PrefillAttentionArgs a;
  a.m = m;
  a.num_heads = heads;
  a.num_kv_heads = kv_heads;
  a.head_dim = d;
  a.causal = causal;
  a.score_rows_begin = score_begin;
  a.sparsity_rows_begin = sparsity_begin;
  a.sparsity_threshold = threshold;
  a.chunk_rows = chunk;
  a.q = q.data();
  a.k = k.data();
  a.v = v.data();
  a.out = out.data();
  a.column_scores = scores.data();
  a.sparse_counts = counts.data();
  std::vector<float> ref_scores = scores;
  std::vector<int64_t> ref_counts = counts;
  a.column_scores = ref_scores.data();
  a.sparse_counts = ref_counts.data();
  cpu.PrefillAttention(a);
  Dev<float> dq(q), dk(k), dv(v), dout(std::vector<float>(out.size())), dscores(scores);
  Dev<int64_t> dcounts(counts);
  a.q = dq.get();
  a.k = dk.get();
  a.v = dv.get();
  a.out = dout.get();
  a.column_scores = dscores.get();
  a.sparse_counts = dcounts.get();
  gpu.PrefillAttention(a);
  Report("PrefillAttention out " + tag, NormErr(dout.Download(), out), kTolAttention);
  Report("PrefillAttention column scores " + tag, NormErr(dscores.Download(), ref_scores),
         kTolAttention);
  // Sparse counts are integers; an entry whose probability sits within float
  // rounding of the cut may land on either side, so allow 0.1% (at least 2).
  const auto got = dcounts.Download();
  double worst = 0;
  for (int h = 0; h < heads; ++h) {
    const double allowed = std::max(2.0, 1e-3 * double(ref_counts[h]));
    worst = std::max(worst, std::fabs(double(got[h] - ref_counts[h])) / allowed);
    if (h == 0) {
      std::printf("     sparse count head 0: gpu %lld cpu %lld\n", (long long)got[0],
                  (long long)ref_counts[0]);
    }
  }
  Report("PrefillAttention sparse counts " + tag + " (|diff|/max(2,0.1%))", worst, 1.0);
}

void CheckPaged(Ops& gpu, Ops& cpu, const std::string& tag, int heads, int kv_heads, int d,
                int block_tokens, const std::vector<int>& rows,
                const std::vector<std::vector<int>>& lengths, uint64_t seed) {
  const int items = static_cast<int>(rows.size());
  int blocks_needed = 0;
  for (const auto& ls : lengths)
    for (int l : ls) blocks_needed += (l + block_tokens - 1) / block_tokens;
  const int pool_blocks = blocks_needed + 17;  // spare blocks that nobody reads
  const int64_t block_floats = 2LL * block_tokens * d;
  const auto pool_data = Random(size_t(pool_blocks) * block_floats, seed, 1.5f);
  // Scattered ids: a random permutation of the pool handed out in order.
  std::vector<int32_t> perm(pool_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(seed));
  std::vector<std::vector<int32_t>> ids(size_t(items) * kv_heads);
  size_t next = 0;
  for (int i = 0; i < items; ++i) {
    for (int h = 0; h < kv_heads; ++h) {
      const int nb = (lengths[i][h] + block_tokens - 1) / block_tokens;
      for (int b = 0; b < nb; ++b) ids[size_t(i) * kv_heads + h].push_back(perm[next++]);
    }
  }
  std::vector<std::vector<float>> qs, outs;
  for (int i = 0; i < items; ++i) {
    qs.push_back(Random(size_t(rows[i]) * heads * d, seed + 100 + i, 2.f));
    outs.emplace_back(size_t(rows[i]) * heads * d, 0.f);
  }
  // CPU reference on host copies.
  PagedPool host_pool{pool_data.data(), block_floats, block_tokens, d};
  std::vector<std::vector<PagedKvView>> host_views(items), dev_views(items);
  std::vector<PagedAttentionItem> host_items(items), dev_items(items);
  for (int i = 0; i < items; ++i) {
    for (int h = 0; h < kv_heads; ++h) {
      host_views[i].push_back({ids[size_t(i) * kv_heads + h].data(), lengths[i][h]});
    }
    host_items[i] = {qs[i].data(), outs[i].data(), rows[i], host_views[i].data()};
  }
  cpu.PagedAttention(host_pool, host_items.data(), items, heads, kv_heads);
  // GPU: the same, with every pointer but the descriptor arrays on the device.
  Dev<float> dpool(pool_data);
  std::vector<std::unique_ptr<Dev<int32_t>>> dids;
  std::vector<std::unique_ptr<Dev<float>>> dq, dout;
  for (const auto& v : ids) dids.push_back(std::make_unique<Dev<int32_t>>(v));
  for (int i = 0; i < items; ++i) {
    dq.push_back(std::make_unique<Dev<float>>(qs[i]));
    dout.push_back(std::make_unique<Dev<float>>(std::vector<float>(outs[i].size(), 9.f)));
    for (int h = 0; h < kv_heads; ++h) {
      dev_views[i].push_back({dids[size_t(i) * kv_heads + h]->get(), lengths[i][h]});
    }
    dev_items[i] = {dq[i]->get(), dout[i]->get(), rows[i], dev_views[i].data()};
  }
  PagedPool dev_pool{dpool.get(), block_floats, block_tokens, d};
  gpu.PagedAttention(dev_pool, dev_items.data(), items, heads, kv_heads);
  double err = 0;
  for (int i = 0; i < items; ++i) err = std::max(err, NormErr(dout[i]->Download(), outs[i]));
  Report("PagedAttention " + tag, err, kTolAttention);
}

int Main() {
  if (!CudaDeviceAvailable()) {
    std::printf("no CUDA-capable device: nothing was checked (this is not a pass)\n");
    std::printf("0 passed, 0 failed\n");
    return 0;
  }
  cudaDeviceProp prop;
  CheckCuda(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  OpsOptions opts;
  opts.threads = 2;
  auto cpu = CreateCpuOps(opts);
  auto gpu = CreateCudaOps(opts);
  CudaOpsOptions tf32;
  tf32.allow_tf32 = true;
  auto gpu_tf32 = CreateCudaOps(opts, tf32);
  CudaOpsOptions small_parts;
  small_parts.paged_partition_entries = 7;  // many partitions: exercises the merge
  auto gpu_split = CreateCudaOps(opts, small_parts);

  CheckLinear(*gpu, *cpu, "", kTolGemm);
  CheckLinear(*gpu_tf32, *cpu, " (TF32)", kTolTf32);
  CheckNorms(*gpu, *cpu);
  CheckElementwise(*gpu, *cpu);
  CheckPrefill(*gpu, *cpu, 77, 6, 2, 20, 16, true, 30, 10, 0.05);
  CheckPrefill(*gpu, *cpu, 131, 4, 4, 64, 64, false, 0, 0, 0.01);
  CheckPrefill(*gpu, *cpu, 1000, 8, 2, 128, 96, true, 600, 500, 0.01);
  // Decode rows, a 3-row chunk over a compressed cache, a cache longer than
  // one partition, and lengths not multiples of the block size.
  const std::vector<int> rows = {1, 3, 1};
  const std::vector<std::vector<int>> lengths = {{13, 1}, {40, 7}, {600, 301}};
  CheckPaged(*gpu, *cpu, "h=8/2 d=24 bt=5", 8, 2, 24, 5, rows, lengths, 40);
  CheckPaged(*gpu_split, *cpu, "h=8/2 d=24 bt=5 partition=7", 8, 2, 24, 5, rows, lengths, 41);
  CheckPaged(*gpu, *cpu, "h=32/8 d=128 bt=16 (Mistral shape)", 32, 8, 128, 16, {1, 1},
             {{1000, 999, 998, 997, 996, 995, 994, 993}, {5, 17, 33, 65, 129, 257, 513, 1025}}, 42);
  CheckPaged(*gpu, *cpu, "h=6/6 d=40 bt=3", 6, 6, 40, 3, {2}, {{11, 12, 13, 14, 15, 16}}, 43);

  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}

}  // namespace
}  // namespace kernels
}  // namespace vlcache

int main() {
  try {
    return vlcache::kernels::Main();
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    std::printf("%d passed, %d failed\n", vlcache::kernels::g_passed,
                vlcache::kernels::g_failed + 1);
    return 1;
  }
}

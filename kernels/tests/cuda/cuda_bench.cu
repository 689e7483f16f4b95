// vlcache-cuda-bench: op-level timing of the CUDA path on a synthetic decode
// step shaped like LLaVA-1.6-Mistral-7B's language model, over a paged KV
// cache holding round(keep_ratio * prompt) entries per (layer, kv head), and
// the cost of the policy measurements in prefill attention.
//
// This is NOT an engine benchmark: weights are random fp32 initialised on the
// device, the embedding lookup, KV append and sampling are not part of the
// step (see docs/cuda.md). It answers: how much of the memory-bound ideal
// speed-up of a compressed cache do these kernels realise?
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda_ops.h"

namespace vlcache {
namespace kernels {
namespace {

void Check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

/// Fills x with uniform values in [-scale, scale) from a counter hash, so
/// tens of GB of weights initialise in milliseconds without a host copy.
/// \param x     [n] output (device)
/// \param n     number of values
/// \param seed  stream id
/// \param scale half-width of the range
__global__ void FillUniformKernel(float* x, int64_t n, uint64_t seed, float scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(i);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    x[i] = scale * (static_cast<float>(z >> 40) * (2.0f / 16777216.0f) - 1.0f);
  }
}

void FillUniform(float* x, int64_t n, uint64_t seed, float scale) {
  const int64_t blocks = std::min<int64_t>(2048, (n + 255) / 256);
  FillUniformKernel<<<static_cast<unsigned>(std::max<int64_t>(blocks, 1)), 256>>>(x, n, seed, scale);
  Check(cudaGetLastError(), "fill");
}

struct Flags {
  std::string out_dir = ".";
  std::vector<int> lengths = {2048, 8192, 32768};
  std::vector<int> batches = {1, 8};
  std::vector<double> ratios = {1.0, 0.4, 0.1, 0.05};
  int layers = 32, hidden = 4096, heads = 32, kv_heads = 8, head_dim = 128;
  int intermediate = 14336, vocab = 32000;
  int block_tokens = 16;
  int warmup = 2, steps = 7;
  int prefill_m = 8192, chunk_rows = 128;
  bool tf32 = false;
  int partition = 256;
  double free_margin_gb = 2.0;
};

template <typename T>
std::vector<T> ParseList(const std::string& s) {
  std::vector<T> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) v.push_back(static_cast<T>(std::stod(item)));
  return v;
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("flag " + a + " needs a value");
      return argv[++i];
    };
    if (a == "--out") f.out_dir = value();
    else if (a == "--lengths") f.lengths = ParseList<int>(value());
    else if (a == "--batches") f.batches = ParseList<int>(value());
    else if (a == "--ratios") f.ratios = ParseList<double>(value());
    else if (a == "--layers") f.layers = std::stoi(value());
    else if (a == "--hidden") f.hidden = std::stoi(value());
    else if (a == "--heads") f.heads = std::stoi(value());
    else if (a == "--kv-heads") f.kv_heads = std::stoi(value());
    else if (a == "--head-dim") f.head_dim = std::stoi(value());
    else if (a == "--intermediate") f.intermediate = std::stoi(value());
    else if (a == "--vocab") f.vocab = std::stoi(value());
    else if (a == "--block-tokens") f.block_tokens = std::stoi(value());
    else if (a == "--warmup") f.warmup = std::stoi(value());
    else if (a == "--steps") f.steps = std::stoi(value());
    else if (a == "--prefill-m") f.prefill_m = std::stoi(value());
    else if (a == "--chunk-rows") f.chunk_rows = std::stoi(value());
    else if (a == "--partition") f.partition = std::stoi(value());
    else if (a == "--free-margin-gb") f.free_margin_gb = std::stod(value());
    else if (a == "--tf32") f.tf32 = true;
    else if (a == "--help") {
      std::printf(
          "vlcache-cuda-bench [--out DIR] [--lengths 2048,8192,32768] [--batches 1,8]\n"
          "  [--ratios 1,0.4,0.1,0.05] [--layers 32] [--hidden 4096] [--heads 32]\n"
          "  [--kv-heads 8] [--head-dim 128] [--intermediate 14336] [--vocab 32000]\n"
          "  [--block-tokens 16] [--warmup 2]\n"
          "  [--steps 7] [--prefill-m 8192] [--chunk-rows 128] [--partition 256]\n"
          "  [--free-margin-gb 2] [--tf32]\n");
      std::exit(0);
    } else {
      throw std::runtime_error("unknown flag " + a + " (see --help)");
    }
  }
  if (f.ratios.empty() || f.ratios[0] != 1.0) {
    throw std::runtime_error("--ratios must start with 1 (the speed-up baseline)");
  }
  return f;
}

float* DeviceAlloc(size_t floats) {
  float* p = nullptr;
  Check(cudaMalloc(&p, sizeof(float) * std::max<size_t>(floats, 1)), "cudaMalloc");
  return p;
}

struct Layer {
  float *attn_norm, *wq, *wk, *wv, *wo, *mlp_norm, *wg, *wu, *wd;
};

// Median of `steps` timed runs of fn after `warmup` untimed ones, in ms.
template <typename Fn>
double TimeMedian(int warmup, int steps, Fn fn) {
  cudaEvent_t start, stop;
  Check(cudaEventCreate(&start), "event");
  Check(cudaEventCreate(&stop), "event");
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < steps; ++i) {
    Check(cudaEventRecord(start), "record");
    fn();
    Check(cudaEventRecord(stop), "record");
    Check(cudaEventSynchronize(stop), "sync");
    float t = 0;
    Check(cudaEventElapsedTime(&t, start, stop), "elapsed");
    ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

struct DecodeRow {
  int length, batch;
  double ratio;
  int kept;
  double ms, speedup, bound, fraction, gain, gbps;
};

int Main(int argc, char** argv) {
  const Flags f = ParseFlags(argc, argv);
  if (!CudaDeviceAvailable()) {
    std::printf("no CUDA-capable device: nothing measured\n");
    return 0;
  }
  cudaDeviceProp prop;
  Check(cudaGetDeviceProperties(&prop, 0), "properties");
  std::printf("device: %s, %.1f GiB\n", prop.name, prop.totalGlobalMem / 1073741824.0);
  CudaOpsOptions copts;
  copts.allow_tf32 = f.tf32;
  copts.paged_partition_entries = f.partition;
  auto ops = CreateCudaOps(OpsOptions{}, copts);
  const int H = f.hidden, I = f.intermediate, d = f.head_dim, KVH = f.kv_heads;
  const int qdim = f.heads * d, kvdim = KVH * d;

  // --- Prefill: attention of one layer with and without the measurements.
  struct PrefillRow { int m; double plain_ms, scored_ms; };
  std::vector<PrefillRow> prefill;
  if (f.prefill_m > 0) {
    const int m = f.prefill_m;
    float* q = DeviceAlloc(size_t(m) * qdim);
    float* k = DeviceAlloc(size_t(m) * kvdim);
    float* v = DeviceAlloc(size_t(m) * kvdim);
    float* o = DeviceAlloc(size_t(m) * qdim);
    float* scores = DeviceAlloc(size_t(KVH) * m);
    int64_t* counts = nullptr;
    Check(cudaMalloc(&counts, sizeof(int64_t) * f.heads), "cudaMalloc");
    FillUniform(q, int64_t(m) * qdim, 1, 1.f);
    FillUniform(k, int64_t(m) * kvdim, 2, 1.f);
    FillUniform(v, int64_t(m) * kvdim, 3, 1.f);
    PrefillAttentionArgs a;
    a.q = q; a.k = k; a.v = v; a.out = o; a.m = m;
    a.num_heads = f.heads; a.num_kv_heads = KVH; a.head_dim = d;
    a.chunk_rows = f.chunk_rows;
    const double plain = TimeMedian(1, 3, [&] { ops->PrefillAttention(a); });
    // VL-Cache measures over the post-vision window: here the last half.
    a.score_rows_begin = m / 2;
    a.column_scores = scores;
    a.sparsity_rows_begin = m / 2;
    a.sparse_counts = counts;
    const double scored = TimeMedian(1, 3, [&] { ops->PrefillAttention(a); });
    prefill.push_back({m, plain, scored});
    std::printf("prefill attention m=%d (one layer): %.2f ms plain, %.2f ms with scores+sparsity "
                "(+%.1f%%)\n", m, plain, scored, 100.0 * (scored / plain - 1.0));
    for (float* p : {q, k, v, o, scores}) cudaFree(p);
    cudaFree(counts);
  }

  // --- Weights, initialised on the device.
  std::vector<float*> allocations;
  auto weight = [&](size_t n, float scale) {
    float* p = DeviceAlloc(n);
    FillUniform(p, int64_t(n), allocations.size() + 11, scale);
    allocations.push_back(p);
    return p;
  };
  std::vector<Layer> layers(f.layers);
  double weight_floats = 0;
  for (Layer& l : layers) {
    const float sh = 1.f / std::sqrt(float(H)), si = 1.f / std::sqrt(float(I));
    l.attn_norm = weight(H, 1.f);
    l.wq = weight(size_t(qdim) * H, sh);
    l.wk = weight(size_t(kvdim) * H, sh);
    l.wv = weight(size_t(kvdim) * H, sh);
    l.wo = weight(size_t(H) * qdim, sh);
    l.mlp_norm = weight(H, 1.f);
    l.wg = weight(size_t(I) * H, sh);
    l.wu = weight(size_t(I) * H, sh);
    l.wd = weight(size_t(H) * I, si);
    weight_floats += 2.0 * H + double(qdim) * H * 2 + 2.0 * kvdim * H + 3.0 * I * H;
  }
  float* final_norm = weight(H, 1.f);
  float* lm_head = weight(size_t(f.vocab) * H, 1.f / std::sqrt(float(H)));
  weight_floats += H + double(f.vocab) * H;
  const double W = 4.0 * weight_floats;
  std::printf("weights: %.2f GB fp32 (read once per decode step)\n", W / 1e9);

  std::vector<DecodeRow> rows;
  std::vector<std::string> skipped;
  for (int length : f.lengths) {
    for (int batch : f.batches) {
      const int B = batch;
      const int blocks_per = (length + f.block_tokens - 1) / f.block_tokens;
      const int64_t caches = int64_t(B) * f.layers * KVH;
      const int64_t pool_blocks = caches * blocks_per;
      const int64_t block_floats = 2LL * f.block_tokens * d;
      const double pool_bytes = 4.0 * pool_blocks * block_floats;
      const double act_bytes = 4.0 * B * (3.0 * H + qdim + 2.0 * kvdim + 2.0 * I + f.vocab) +
                               4.0 * pool_blocks + 64e6;
      size_t free_b = 0, total_b = 0;
      Check(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
      if (pool_bytes + act_bytes + f.free_margin_gb * 1e9 > double(free_b)) {
        char msg[200];
        std::snprintf(msg, sizeof(msg),
                      "prompt %d batch %d skipped: cache %.1f GB + buffers do not fit in %.1f GB free",
                      length, B, pool_bytes / 1e9, free_b / 1e9);
        std::printf("%s\n", msg);
        skipped.push_back(msg);
        continue;
      }
      float* pool = DeviceAlloc(size_t(pool_blocks) * block_floats);
      FillUniform(pool, pool_blocks * block_floats, 99, 1.f);
      float* x = DeviceAlloc(size_t(B) * H);
      float* h = DeviceAlloc(size_t(B) * H);
      float* q = DeviceAlloc(size_t(B) * qdim);
      float* k = DeviceAlloc(size_t(B) * kvdim);
      float* v = DeviceAlloc(size_t(B) * kvdim);
      float* attn = DeviceAlloc(size_t(B) * qdim);
      float* t = DeviceAlloc(size_t(B) * H);
      float* g = DeviceAlloc(size_t(B) * I);
      float* u = DeviceAlloc(size_t(B) * I);
      float* logits = DeviceAlloc(size_t(B) * f.vocab);
      int32_t* pos = nullptr;
      int32_t* ids = nullptr;
      Check(cudaMalloc(&pos, sizeof(int32_t) * B), "cudaMalloc");
      Check(cudaMalloc(&ids, sizeof(int32_t) * pool_blocks), "cudaMalloc");
      std::vector<int32_t> host_pos(B, length);
      Check(cudaMemcpy(pos, host_pos.data(), sizeof(int32_t) * B, cudaMemcpyHostToDevice), "copy");
      const PagedPool ppool{pool, block_floats, f.block_tokens, d};
      const double KV = pool_bytes;  // the full cache of the batch
      double base_ms = 0;
      for (double ratio : f.ratios) {
        const int kept = std::max(1, int(std::lround(ratio * length)));
        const int nb = (kept + f.block_tokens - 1) / f.block_tokens;
        // Block i of cache c is pool block i * caches + c: every cache's blocks
        // are scattered over the whole pool, as after many admissions.
        std::vector<int32_t> host_ids(size_t(caches) * nb);
        for (int64_t c = 0; c < caches; ++c)
          for (int i = 0; i < nb; ++i) host_ids[size_t(c) * nb + i] = int32_t(int64_t(i) * caches + c);
        Check(cudaMemcpy(ids, host_ids.data(), sizeof(int32_t) * host_ids.size(),
                         cudaMemcpyHostToDevice), "copy ids");
        std::vector<PagedKvView> views(static_cast<size_t>(caches));
        for (int64_t c = 0; c < caches; ++c) views[size_t(c)] = {ids + c * nb, kept};
        // items[layer][seq]; cache c = (seq * layers + layer) * KVH + head.
        std::vector<std::vector<PagedAttentionItem>> items(f.layers,
                                                           std::vector<PagedAttentionItem>(B));
        for (int l = 0; l < f.layers; ++l)
          for (int s = 0; s < B; ++s)
            items[l][s] = {q + size_t(s) * qdim, attn + size_t(s) * qdim, 1,
                           views.data() + (size_t(s) * f.layers + l) * KVH};
        FillUniform(x, int64_t(B) * H, 5, 1.f);
        auto step = [&] {
          for (int l = 0; l < f.layers; ++l) {
            const Layer& w = layers[l];
            ops->RmsNorm(x, B, H, w.attn_norm, 1e-5f, h);
            ops->Linear(h, B, H, w.wq, nullptr, qdim, q);
            ops->Linear(h, B, H, w.wk, nullptr, kvdim, k);
            ops->Linear(h, B, H, w.wv, nullptr, kvdim, v);
            ops->Rope(q, B, f.heads, d, qdim, pos, 1e6f);
            ops->Rope(k, B, KVH, d, kvdim, pos, 1e6f);
            ops->PagedAttention(ppool, items[l].data(), B, f.heads, KVH);
            ops->Linear(attn, B, qdim, w.wo, nullptr, H, t);
            ops->Add(x, t, int64_t(B) * H);
            ops->RmsNorm(x, B, H, w.mlp_norm, 1e-5f, h);
            ops->Linear(h, B, H, w.wg, nullptr, I, g);
            ops->Linear(h, B, H, w.wu, nullptr, I, u);
            ops->SiluMul(g, u, int64_t(B) * I);
            ops->Linear(g, B, I, w.wd, nullptr, H, t);
            ops->Add(x, t, int64_t(B) * H);
          }
          ops->RmsNorm(x, B, H, final_norm, 1e-5f, h);
          ops->Linear(h, B, H, lm_head, nullptr, f.vocab, logits);
        };
        const double ms = TimeMedian(f.warmup, f.steps, step);
        if (ratio == 1.0) base_ms = ms;
        const double alpha = double(kept) / length;
        DecodeRow r;
        r.length = length; r.batch = B; r.ratio = ratio; r.kept = kept; r.ms = ms;
        r.speedup = base_ms / ms;
        r.bound = (W + KV) / (W + alpha * KV);
        r.fraction = r.speedup / r.bound;
        r.gain = r.bound > 1.0 + 1e-9 ? (r.speedup - 1.0) / (r.bound - 1.0) : 1.0;
        r.gbps = (W + alpha * KV) / (ms * 1e-3) / 1e9;
        rows.push_back(r);
        std::printf("prompt %6d batch %d keep %.2f (%6d kept): %8.3f ms/step  speed-up %.2fx  "
                    "bound %.2fx  fraction %.2f  gain realised %.2f  %.0f GB/s\n",
                    length, B, ratio, kept, ms, r.speedup, r.bound, r.fraction, r.gain, r.gbps);
      }
      for (float* p : {pool, x, h, q, k, v, attn, t, g, u, logits}) cudaFree(p);
      cudaFree(pos);
      cudaFree(ids);
    }
  }
  for (float* p : allocations) cudaFree(p);
  Check(cudaDeviceSynchronize(), "final sync");

  // --- Reports.
  std::ostringstream md, js;
  md << "# vlcache-cuda-bench on " << prop.name << "\n\n"
     << "Synthetic decode step of a decoder (LLaVA-1.6-Mistral-7B shape by default; here " << f.layers
     << " layers, hidden " << H << ", " << f.heads << "/" << KVH << " heads, head_dim " << d
     << ", intermediate " << I << ", vocab " << f.vocab << "), fp32, random weights ("
     << W / 1e9 << " GB), paged cache of block " << f.block_tokens << " tokens, "
     << (f.tf32 ? "TF32" : "exact fp32") << " GEMMs. Median of " << f.steps << " steps after "
     << f.warmup << " warm-up. bound = (W + KV) / (W + alpha KV); fraction = speed-up / bound; "
     << "gain realised = (speed-up - 1) / (bound - 1).\n\n"
     << "| prompt | batch | keep | kept | ms/step | speed-up | bound | fraction | gain realised | GB/s |\n"
     << "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  js << "{\n  \"device\": \"" << prop.name << "\",\n  \"weights_bytes\": " << W
     << ",\n  \"block_tokens\": " << f.block_tokens << ",\n  \"tf32\": "
     << (f.tf32 ? "true" : "false") << ",\n  \"decode\": [";
  char buf[512];
  for (size_t i = 0; i < rows.size(); ++i) {
    const DecodeRow& r = rows[i];
    std::snprintf(buf, sizeof(buf), "| %d | %d | %.2f | %d | %.3f | %.2fx | %.2fx | %.2f | %.2f | %.0f |\n",
                  r.length, r.batch, r.ratio, r.kept, r.ms, r.speedup, r.bound, r.fraction, r.gain,
                  r.gbps);
    md << buf;
    std::snprintf(buf, sizeof(buf),
                  "%s\n    {\"prompt\": %d, \"batch\": %d, \"keep_ratio\": %.4f, \"kept\": %d, "
                  "\"ms_per_step\": %.4f, \"speedup\": %.4f, \"bound\": %.4f, \"fraction\": %.4f, "
                  "\"gain_realised\": %.4f, \"gbps\": %.1f}",
                  i ? "," : "", r.length, r.batch, r.ratio, r.kept, r.ms, r.speedup, r.bound,
                  r.fraction, r.gain, r.gbps);
    js << buf;
  }
  js << "\n  ],\n  \"prefill\": [";
  md << "\nPrefill attention of one layer (" << f.heads << "/" << KVH << " heads, chunk_rows "
     << f.chunk_rows << "), scores and sparsity over the last half of the rows:\n\n"
     << "| prompt | plain ms | with measurements ms | overhead |\n|---:|---:|---:|---:|\n";
  for (size_t i = 0; i < prefill.size(); ++i) {
    const PrefillRow& p = prefill[i];
    std::snprintf(buf, sizeof(buf), "| %d | %.2f | %.2f | %+.1f%% |\n", p.m, p.plain_ms,
                  p.scored_ms, 100.0 * (p.scored_ms / p.plain_ms - 1.0));
    md << buf;
    std::snprintf(buf, sizeof(buf),
                  "%s\n    {\"prompt\": %d, \"plain_ms\": %.4f, \"with_measurements_ms\": %.4f}",
                  i ? "," : "", p.m, p.plain_ms, p.scored_ms);
    js << buf;
  }
  js << "\n  ],\n  \"skipped\": [";
  for (size_t i = 0; i < skipped.size(); ++i) js << (i ? ", " : "") << "\"" << skipped[i] << "\"";
  js << "]\n}\n";
  for (const std::string& s : skipped) md << "\nSkipped: " << s << "\n";
  std::ofstream(f.out_dir + "/gpu-bench.md") << md.str();
  std::ofstream(f.out_dir + "/gpu-bench.json") << js.str();
  std::printf("wrote %s/gpu-bench.md and gpu-bench.json\n", f.out_dir.c_str());
  return 0;
}

}  // namespace
}  // namespace kernels
}  // namespace vlcache

int main(int argc, char** argv) {
  try {
    return vlcache::kernels::Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vlcache-cuda-bench: %s\n", e.what());
    return 1;
  }
}

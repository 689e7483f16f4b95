#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "vlcache/kernels/ops.h"

namespace vlcache {
namespace kernels {
namespace {

std::vector<float> Random(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

double MaxDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - b[i]));
  return m;
}

struct Dims {
  int m = 37, heads = 6, kv_heads = 2, d = 12;
};

// Brute-force attention probabilities of one (row, head) in double.
std::vector<double> Probs(const std::vector<float>& q, const std::vector<float>& k, const Dims& s,
                          int row, int head, bool causal) {
  const int kvh = head / (s.heads / s.kv_heads);
  const int n = causal ? row + 1 : s.m;
  std::vector<double> p(n);
  double mx = -1e300;
  for (int j = 0; j < n; ++j) {
    double dot = 0;
    for (int c = 0; c < s.d; ++c) {
      dot += double(q[(size_t)row * s.heads * s.d + head * s.d + c]) *
             k[(size_t)j * s.kv_heads * s.d + kvh * s.d + c];
    }
    p[j] = dot / std::sqrt(double(s.d));
    mx = std::max(mx, p[j]);
  }
  double sum = 0;
  for (double& x : p) sum += (x = std::exp(x - mx));
  for (double& x : p) x /= sum;
  return p;
}

std::vector<float> ReferenceAttention(const std::vector<float>& q, const std::vector<float>& k,
                                      const std::vector<float>& v, const Dims& s, bool causal) {
  std::vector<float> out((size_t)s.m * s.heads * s.d);
  for (int r = 0; r < s.m; ++r) {
    for (int h = 0; h < s.heads; ++h) {
      const int kvh = h / (s.heads / s.kv_heads);
      const std::vector<double> p = Probs(q, k, s, r, h, causal);
      for (int c = 0; c < s.d; ++c) {
        double acc = 0;
        for (size_t j = 0; j < p.size(); ++j) acc += p[j] * v[j * s.kv_heads * s.d + kvh * s.d + c];
        out[(size_t)r * s.heads * s.d + h * s.d + c] = static_cast<float>(acc);
      }
    }
  }
  return out;
}

class PrefillAttentionTest : public ::testing::TestWithParam<int> {};

// Any thread count gives the same numbers, bit for bit.
TEST(OpsTest, PrefillScoresDoNotDependOnThreads) {
  Dims s;
  const auto q = Random((size_t)s.m * s.heads * s.d, 21);
  const auto k = Random((size_t)s.m * s.kv_heads * s.d, 22);
  const auto v = Random((size_t)s.m * s.kv_heads * s.d, 23);
  std::vector<std::vector<float>> scores;
  for (int threads : {1, 2, 3}) {
    auto ops = CreateCpuOps({threads});
    std::vector<float> out(q.size()), col((size_t)s.kv_heads * s.m, 0.f);
    PrefillAttentionArgs a;
    a.q = q.data();
    a.k = k.data();
    a.v = v.data();
    a.out = out.data();
    a.m = s.m;
    a.num_heads = s.heads;
    a.num_kv_heads = s.kv_heads;
    a.head_dim = s.d;
    a.chunk_rows = 6;
    a.score_rows_begin = 3;
    a.column_scores = col.data();
    ops->PrefillAttention(a);
    scores.push_back(col);
  }
  EXPECT_EQ(scores[0], scores[1]);
  EXPECT_EQ(scores[0], scores[2]);
}

TEST_P(PrefillAttentionTest, WithScoresAndSparsity) {
  auto ops = CreateCpuOps({GetParam()});
  Dims s;
  const auto q = Random((size_t)s.m * s.heads * s.d, 1);
  const auto k = Random((size_t)s.m * s.kv_heads * s.d, 2);
  const auto v = Random((size_t)s.m * s.kv_heads * s.d, 3);
  std::vector<float> out(q.size()), scores((size_t)s.kv_heads * s.m, 0.f);
  std::vector<int64_t> sparse(s.heads, 0);
  PrefillAttentionArgs a;
  a.q = q.data();
  a.k = k.data();
  a.v = v.data();
  a.out = out.data();
  a.m = s.m;
  a.num_heads = s.heads;
  a.num_kv_heads = s.kv_heads;
  a.head_dim = s.d;
  a.chunk_rows = 8;  // chunks straddle both measurement boundaries
  a.score_rows_begin = 20;
  a.column_scores = scores.data();
  a.sparsity_rows_begin = 11;
  a.sparsity_threshold = 0.3;  // large, so that each row has sparse and dense entries
  a.sparse_counts = sparse.data();
  ops->PrefillAttention(a);
  EXPECT_LE(MaxDiff(out, ReferenceAttention(q, k, v, s, true)), 1e-5);

  std::vector<double> want_scores((size_t)s.kv_heads * s.m, 0.0);
  std::vector<int64_t> want_sparse(s.heads, 0);
  for (int h = 0; h < s.heads; ++h) {
    const int kvh = h / (s.heads / s.kv_heads);
    for (int r = 0; r < s.m; ++r) {
      const std::vector<double> p = Probs(q, k, s, r, h, true);
      if (r >= 20) {
        for (size_t j = 0; j < p.size(); ++j) want_scores[kvh * s.m + j] += p[j];
      }
      if (r >= 11) {
        const double mx = *std::max_element(p.begin(), p.end());
        for (double x : p) want_sparse[h] += x < 0.3 * mx;
      }
    }
  }
  for (size_t i = 0; i < scores.size(); ++i) EXPECT_NEAR(scores[i], want_scores[i], 1e-5) << i;
  EXPECT_EQ(sparse, want_sparse);
  // Each requested (row, query head) adds probability mass 1, other rows none.
  double total = 0;
  for (float x : scores) total += x;
  EXPECT_NEAR(total, double(s.m - 20) * s.heads, 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Threads, PrefillAttentionTest, ::testing::Values(1, 2));

TEST(OpsTest, NonCausalAttention) {
  auto ops = CreateCpuOps({1});
  Dims s;
  s.kv_heads = s.heads;
  const auto q = Random((size_t)s.m * s.heads * s.d, 4);
  const auto k = Random((size_t)s.m * s.heads * s.d, 5);
  const auto v = Random((size_t)s.m * s.heads * s.d, 6);
  std::vector<float> out(q.size());
  PrefillAttentionArgs a;
  a.q = q.data();
  a.k = k.data();
  a.v = v.data();
  a.out = out.data();
  a.m = s.m;
  a.num_heads = a.num_kv_heads = s.heads;
  a.head_dim = s.d;
  a.causal = false;
  a.chunk_rows = 16;
  ops->PrefillAttention(a);
  EXPECT_LE(MaxDiff(out, ReferenceAttention(q, k, v, s, false)), 1e-5);
}

// Paged attention over scattered blocks equals the contiguous causal result
// for a multi-row chunk at the end of the cache (the compress_after case), for
// two sequences of different lengths in one call.
TEST(OpsTest, PagedAttentionMatchesContiguous) {
  Dims s;
  const int bt = 5;
  const auto q = Random((size_t)s.m * s.heads * s.d, 7);
  const auto k = Random((size_t)s.m * s.kv_heads * s.d, 8);
  const auto v = Random((size_t)s.m * s.kv_heads * s.d, 9);
  const std::vector<float> want = ReferenceAttention(q, k, v, s, true);

  const int blocks_per_head = (s.m + bt - 1) / bt;
  const int total_blocks = 2 * s.kv_heads * blocks_per_head;
  std::vector<float> arena((size_t)total_blocks * 2 * bt * s.d, 0.f);
  PagedPool pool;
  pool.base = arena.data();
  pool.block_floats = 2 * bt * s.d;
  pool.block_tokens = bt;
  pool.head_dim = s.d;
  // Scrambled block ids: odd blocks first, then even.
  std::vector<int32_t> order;
  for (int b = 1; b < total_blocks; b += 2) order.push_back(b);
  for (int b = 0; b < total_blocks; b += 2) order.push_back(b);
  const int lengths[2] = {s.m, 23};  // the second sequence is a prefix of the first
  std::vector<std::vector<int32_t>> ids(2 * s.kv_heads);
  std::vector<PagedKvView> views(2 * s.kv_heads);
  size_t next = 0;
  for (int seq = 0; seq < 2; ++seq) {
    for (int h = 0; h < s.kv_heads; ++h) {
      auto& list = ids[seq * s.kv_heads + h];
      for (int b = 0; b < blocks_per_head; ++b) list.push_back(order[next++]);
      for (int j = 0; j < lengths[seq]; ++j) {
        float* kd = arena.data() + list[j / bt] * pool.block_floats + (j % bt) * s.d;
        float* vd = kd + bt * s.d;
        std::copy_n(&k[(size_t)j * s.kv_heads * s.d + h * s.d], s.d, kd);
        std::copy_n(&v[(size_t)j * s.kv_heads * s.d + h * s.d], s.d, vd);
      }
      views[seq * s.kv_heads + h] = {list.data(), lengths[seq]};
    }
  }
  const int rows[2] = {7, 1};
  const int width = s.heads * s.d;
  std::vector<float> out0((size_t)rows[0] * width), out1(width);
  PagedAttentionItem items[2];
  items[0] = {q.data() + (size_t)(lengths[0] - rows[0]) * width, out0.data(), rows[0], &views[0]};
  items[1] = {q.data() + (size_t)(lengths[1] - 1) * width, out1.data(), rows[1], &views[s.kv_heads]};
  for (int threads : {1, 2}) {
    auto ops = CreateCpuOps({threads});
    ops->PagedAttention(pool, items, 2, s.heads, s.kv_heads);
    EXPECT_LE(MaxDiff(out0, std::vector<float>(want.begin() + (size_t)(lengths[0] - rows[0]) * width,
                                               want.begin() + (size_t)lengths[0] * width)),
              1e-5);
    EXPECT_LE(MaxDiff(out1, std::vector<float>(want.begin() + (size_t)(lengths[1] - 1) * width,
                                               want.begin() + (size_t)lengths[1] * width)),
              1e-5);
  }
}

TEST(OpsTest, LinearNormsRopeActivations) {
  auto ops = CreateCpuOps({1});
  const int rows = 3, in = 7, out = 5;
  const auto x = Random(rows * in, 10), w = Random(out * in, 11), b = Random(out, 12);
  for (int r : {1, rows}) {
    std::vector<float> y(r * out);
    ops->Linear(x.data(), r, in, w.data(), b.data(), out, y.data());
    for (int i = 0; i < r; ++i) {
      for (int o = 0; o < out; ++o) {
        double acc = b[o];
        for (int c = 0; c < in; ++c) acc += double(x[i * in + c]) * w[o * in + c];
        EXPECT_NEAR(y[i * out + o], acc, 1e-5);
      }
    }
  }
  const auto g = Random(in, 13), beta = Random(in, 14);
  std::vector<float> rms(rows * in), ln(rows * in);
  ops->RmsNorm(x.data(), rows, in, g.data(), 1e-5f, rms.data());
  ops->LayerNorm(x.data(), rows, in, g.data(), beta.data(), 1e-5f, ln.data());
  for (int i = 0; i < rows; ++i) {
    double ss = 0, mean = 0, var = 0;
    for (int c = 0; c < in; ++c) ss += double(x[i * in + c]) * x[i * in + c], mean += x[i * in + c];
    mean /= in;
    for (int c = 0; c < in; ++c) var += (x[i * in + c] - mean) * (x[i * in + c] - mean);
    var /= in;
    for (int c = 0; c < in; ++c) {
      EXPECT_NEAR(rms[i * in + c], x[i * in + c] / std::sqrt(ss / in + 1e-5) * g[c], 1e-5);
      EXPECT_NEAR(ln[i * in + c], (x[i * in + c] - mean) / std::sqrt(var + 1e-5) * g[c] + beta[c],
                  1e-5);
    }
  }
  // RoPE: position 0 is the identity; a rotation keeps each pair's norm and
  // turns pair i by position * theta^(-2i/d).
  const int heads = 2, d = 8;
  auto r0 = Random(2 * heads * d, 15);
  std::vector<float> r1 = r0;
  const int32_t pos[2] = {0, 9};
  ops->Rope(r1.data(), 2, heads, d, heads * d, pos, 10000.f);
  for (int c = 0; c < heads * d; ++c) EXPECT_EQ(r1[c], r0[c]);
  for (int h = 0; h < heads; ++h) {
    for (int i = 0; i < d / 2; ++i) {
      const float* a = &r0[heads * d + h * d];
      const float* o = &r1[heads * d + h * d];
      const double angle = 9.0 * std::pow(10000.0, -2.0 * i / d);
      EXPECT_NEAR(o[i], a[i] * std::cos(angle) - a[i + d / 2] * std::sin(angle), 1e-5);
      EXPECT_NEAR(o[i + d / 2], a[i + d / 2] * std::cos(angle) + a[i] * std::sin(angle), 1e-5);
    }
  }
  std::vector<float> act = {-2.f, -0.5f, 0.f, 0.7f, 3.f};
  std::vector<float> gelu = act, quick = act, silu = act;
  ops->Activate(Activation::kGeluErf, gelu.data(), 5);
  ops->Activate(Activation::kQuickGelu, quick.data(), 5);
  ops->Activate(Activation::kSilu, silu.data(), 5);
  for (int i = 0; i < 5; ++i) {
    const double z = act[i];
    EXPECT_NEAR(gelu[i], 0.5 * z * (1 + std::erf(z / std::sqrt(2.0))), 1e-6);
    EXPECT_NEAR(quick[i], z / (1 + std::exp(-1.702 * z)), 1e-6);
    EXPECT_NEAR(silu[i], z / (1 + std::exp(-z)), 1e-6);
  }
}

}  // namespace
}  // namespace kernels
}  // namespace vlcache

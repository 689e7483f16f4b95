// Token selection: the banned (image) token is never chosen, greedy is argmax,
// top-k 1 and a tiny top-p collapse to greedy, and a seed fixes the stream.
#include <gtest/gtest.h>

#include "engine/sampler.h"

namespace vlcache {
namespace engine {
namespace {

std::vector<float> Logits() {
  // Token 4 (the banned one) is the most likely by far.
  return {0.5f, 2.0f, 1.0f, 1.9f, 9.0f, -1.0f, 0.0f, 1.5f};
}

TEST(SamplerTest, GreedyIsArgmaxWithoutTheBannedToken) {
  SamplingParams p;
  Sampler s(p, 4);
  const std::vector<float> l = Logits();
  EXPECT_EQ(s.Next(l.data(), 8), 1);
}

TEST(SamplerTest, SamplingNeverPicksTheBannedToken) {
  SamplingParams p;
  p.temperature = 5.0f;
  p.seed = 3;
  Sampler s(p, 4);
  const std::vector<float> l = Logits();
  std::vector<int> seen(8, 0);
  for (int i = 0; i < 2000; ++i) ++seen[s.Next(l.data(), 8)];
  EXPECT_EQ(seen[4], 0);
  int distinct = 0;
  for (int c : seen) distinct += c > 0;
  EXPECT_GE(distinct, 5);  // a high temperature spreads the choice
}

TEST(SamplerTest, TopKOneAndTinyTopPAreGreedy) {
  const std::vector<float> l = Logits();
  SamplingParams k1;
  k1.temperature = 1.0f;
  k1.top_k = 1;
  SamplingParams p_small;
  p_small.temperature = 1.0f;
  p_small.top_p = 1e-4f;
  Sampler a(k1, 4), b(p_small, 4);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(a.Next(l.data(), 8), 1);
    EXPECT_EQ(b.Next(l.data(), 8), 1);
  }
}

TEST(SamplerTest, TopKLimitsTheCandidates) {
  SamplingParams p;
  p.temperature = 10.0f;
  p.top_k = 2;
  Sampler s(p, 4);
  const std::vector<float> l = Logits();
  for (int i = 0; i < 500; ++i) {
    const int t = s.Next(l.data(), 8);
    EXPECT_TRUE(t == 1 || t == 3) << t;
  }
}

TEST(SamplerTest, SeedFixesTheStream) {
  SamplingParams p;
  p.temperature = 2.0f;
  p.seed = 42;
  Sampler a(p, 4), b(p, 4);
  p.seed = 43;
  Sampler c(p, 4);
  const std::vector<float> l = Logits();
  std::vector<int> sa, sb, sc;
  for (int i = 0; i < 64; ++i) {
    sa.push_back(a.Next(l.data(), 8));
    sb.push_back(b.Next(l.data(), 8));
    sc.push_back(c.Next(l.data(), 8));
  }
  EXPECT_EQ(sa, sb);
  EXPECT_NE(sa, sc);
}

TEST(SamplerTest, ValidationNamesTheField) {
  SamplingParams p;
  p.top_p = 1.5f;
  EXPECT_NE(ValidateSampling(p).message.find("top_p"), std::string::npos);
  p = SamplingParams{};
  p.max_tokens = 0;
  EXPECT_NE(ValidateSampling(p).message.find("max_tokens"), std::string::npos);
  EXPECT_TRUE(ValidateSampling(SamplingParams{}).ok());
}

}  // namespace
}  // namespace engine
}  // namespace vlcache

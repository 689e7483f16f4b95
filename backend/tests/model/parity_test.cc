// Parity with Hugging Face transformers on the checkpoints in testdata/: the
// last prompt position's logits within 1e-3 (max abs, fp32) and the 16 greedy
// tokens of golden.json (image token masked, eos not a stop). The greedy
// tokens are produced by the cached path (prefill into scratch, copy to the
// pool, one-token decode steps), so both decoder paths are covered.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "kvcache/block_pool.h"
#include "kvcache/sequence_cache.h"
#include "model/llava_model.h"
#include "png_util.h"

namespace vlcache {
namespace {

constexpr double kLogitTolerance = 1e-3;

struct Case {
  std::string checkpoint;
  int prompt;
};

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  std::string name = info.param.checkpoint + "_p" + std::to_string(info.param.prompt);
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

class ParityTest : public ::testing::TestWithParam<Case> {};

TEST_P(ParityTest, LogitsAndGreedyTokensMatchTransformers) {
  const std::string dir = std::string(VLCACHE_TESTDATA_DIR) + "/" + GetParam().checkpoint;
  std::ifstream in(dir + "/golden.json");
  ASSERT_TRUE(in) << dir;
  const nlohmann::json golden = nlohmann::json::parse(in);
  const nlohmann::json& prompt = golden["prompts"][GetParam().prompt];

  auto ops = kernels::CreateCpuOps({});
  std::unique_ptr<model::LlavaModel> m;
  Status s = model::LlavaModel::Load(dir, ops.get(), &m);
  ASSERT_TRUE(s.ok()) << s.message;

  std::vector<Image> images;
  for (const auto& path : prompt["images"]) {
    Image img;
    s = testing_util::ReadPng(dir + "/" + path.get<std::string>(), &img);
    ASSERT_TRUE(s.ok()) << s.message;
    ASSERT_TRUE(m->CheckImage(img).ok());
    images.push_back(std::move(img));
  }
  const std::vector<int32_t> ids = prompt["input_ids"].get<std::vector<int32_t>>();
  const int n = static_cast<int>(ids.size());
  const int hidden = m->hidden_size(), vocab = m->vocab_size();
  const int image_id = m->config().image_token_id;

  std::vector<float> features, embeddings(static_cast<size_t>(n) * hidden);
  m->EncodeImages(images, &features);
  ASSERT_EQ(features.size(),
            static_cast<size_t>(std::count(ids.begin(), ids.end(), image_id)) * hidden);
  m->Embed(ids.data(), n, features.data(), embeddings.data());

  model::PrefillScratch scratch;
  PrefillStats stats;
  std::vector<float> logits(vocab);
  m->Prefill(embeddings.data(), n, model::PrefillOptions{}, &scratch, &stats, logits.data());

  const std::vector<float> hf = prompt["hf"]["last_logits"].get<std::vector<float>>();
  ASSERT_EQ(hf.size(), logits.size());
  double max_diff = 0;
  for (int i = 0; i < vocab; ++i) max_diff = std::max(max_diff, std::fabs(double(logits[i]) - hf[i]));
  std::printf("[ parity ] %s prompt %d (%d ids): max |logit - hf| = %.3g\n",
              GetParam().checkpoint.c_str(), GetParam().prompt, n, max_diff);
  EXPECT_LE(max_diff, kLogitTolerance);

  // Greedy decode over the paged cache, everything kept.
  const int L = m->num_layers(), Hkv = m->num_kv_heads(), d = m->head_dim();
  const int steps = 16;
  kvcache::BlockPool pool(64ll << 20, 16, d);
  kvcache::SequenceCache cache(&pool, L, Hkv);
  ASSERT_TRUE(cache.Reserve(std::vector<int>(L, n + steps)));
  for (int l = 0; l < L; ++l) {
    for (int h = 0; h < Hkv; ++h) {
      for (int p = 0; p < n; ++p) {
        ASSERT_TRUE(cache.Append(l, h, scratch.Key(l, p, h, d), scratch.Value(l, p, h, d), p));
      }
    }
  }
  cache.set_next_position(n);
  auto argmax = [&](const std::vector<float>& v) {
    int best = -1;
    float bv = -std::numeric_limits<float>::infinity();
    for (int i = 0; i < vocab; ++i) {
      if (i != image_id && v[i] > bv) {
        bv = v[i];
        best = i;
      }
    }
    return best;
  };
  std::vector<int32_t> tokens{argmax(logits)};
  std::vector<float> embedding(hidden);
  while (static_cast<int>(tokens.size()) < steps) {
    const int32_t last = tokens.back();
    m->Embed(&last, 1, nullptr, embedding.data());
    model::CachedForwardItem item;
    item.embeddings = embedding.data();
    item.rows = 1;
    item.cache = &cache;
    item.logits = logits.data();
    s = m->ForwardCached(&item, 1);
    ASSERT_TRUE(s.ok()) << s.message;
    tokens.push_back(argmax(logits));
  }
  EXPECT_EQ(tokens, prompt["hf"]["greedy_16"].get<std::vector<int32_t>>());
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, ParityTest,
                         ::testing::Values(Case{"tiny-llava-random", 0},
                                           Case{"tiny-llava-random", 1},
                                           Case{"tiny-llava-random", 2},
                                           Case{"tiny-llava-trained", 0},
                                           Case{"tiny-llava-trained", 1},
                                           Case{"tiny-llava-trained", 2}),
                         CaseName);

}  // namespace
}  // namespace vlcache

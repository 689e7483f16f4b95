// The compression policies against the independent Python oracle
// (backend/tests/oracles/policy_oracle.py) and against their own invariants.
#include "kvcache/policy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

namespace vlcache {
namespace {

using nlohmann::json;

json LoadCases() {
  std::ifstream in(VLCACHE_POLICY_CASES);
  EXPECT_TRUE(in.good()) << "cannot open " << VLCACHE_POLICY_CASES;
  return json::parse(in);
}

// Inverse of the oracle's to_mask: hex digit i holds positions 4i..4i+3.
std::vector<int32_t> FromMask(const std::string& hex) {
  std::vector<int32_t> out;
  for (size_t i = 0; i < hex.size(); ++i) {
    const char c = hex[i];
    const int bits = c <= '9' ? c - '0' : c - 'a' + 10;
    for (int b = 0; b < 4; ++b) {
      if (bits & (1 << b)) out.push_back(static_cast<int32_t>(4 * i + b));
    }
  }
  return out;
}

PrefillStats StatsFor(const json& c, const ScoreRequest& plan) {
  PrefillStats stats;
  stats.num_layers = c["num_layers"];
  stats.num_kv_heads = c["num_kv_heads"];
  stats.prompt_len = c["prompt_len"];
  if (plan.score_rows_begin >= 0) {
    for (const auto& layer : c["scores"].at(std::to_string(plan.score_rows_begin))) {
      std::vector<std::vector<float>> heads;
      for (const auto& row : layer) {
        std::vector<float> values;
        for (const auto& v : row) values.push_back(static_cast<float>(v.get<double>()));
        heads.push_back(std::move(values));
      }
      stats.scores.push_back(std::move(heads));
    }
  }
  if (plan.sparsity_rows_begin >= 0) {
    stats.sparsity = c["sparsity"].get<std::vector<double>>();
  }
  return stats;
}

TEST(PolicyOracle, MatchesEveryPolicyRatioAndMode) {
  const json doc = LoadCases();
  ASSERT_GE(doc["cases"].size(), 5u);
  const std::vector<double> ratios = doc["ratios"].get<std::vector<double>>();
  ASSERT_EQ(ratios.size(), 6u);
  int checked = 0;
  for (const json& c : doc["cases"]) {
    const std::string name = c["name"];
    const int len = c["prompt_len"];
    const int post_vision = c["post_vision_begin"];
    for (const std::string& policy : KnownPolicies()) {
      SCOPED_TRACE(name + " " + policy);
      ASSERT_TRUE(c["plans"].contains(policy)) << "oracle lacks policy " << policy;
      const ScoreRequest plan = PlanScores(policy, len, post_vision);
      EXPECT_EQ(plan.score_rows_begin, c["plans"][policy][0].get<int>());
      EXPECT_EQ(plan.sparsity_rows_begin, c["plans"][policy][1].get<int>());
      const PrefillStats stats = StatsFor(c, plan);
      for (double ratio : ratios) {
        char ratio_text[32];
        std::snprintf(ratio_text, sizeof ratio_text, "%g", ratio);
        for (const std::string mode : {"exact", "paper"}) {
          const std::string prefix = policy + "/" + ratio_text + "/";
          const json* want = nullptr;
          if (c["results"].contains(prefix + mode)) {
            want = &c["results"][prefix + mode];
          } else if (c["results"].contains(prefix + "any")) {
            want = &c["results"][prefix + "any"];
          }
          ASSERT_NE(want, nullptr) << "oracle lacks " << prefix << mode;
          SCOPED_TRACE(prefix + mode);
          Selection got;
          Status status = SelectKeep(policy, ratio, mode, stats, &got);
          ASSERT_TRUE(status.ok()) << status.message;
          EXPECT_EQ(got.layer_budget, (*want)["budget"].get<std::vector<int>>());
          ASSERT_EQ(got.keep.size(), (*want)["keep"].size());
          for (size_t l = 0; l < got.keep.size(); ++l) {
            ASSERT_EQ(got.keep[l].size(), (*want)["keep"][l].size());
            for (size_t h = 0; h < got.keep[l].size(); ++h) {
              EXPECT_EQ(got.keep[l][h], FromMask((*want)["keep"][l][h]))
                  << "layer " << l << " kv head " << h;
            }
          }
          ++checked;
        }
      }
    }
  }
  EXPECT_EQ(checked, static_cast<int>(doc["cases"].size() * KnownPolicies().size() * 6 * 2));
}

// Random stats of the given shape, every measurement present.
PrefillStats RandomStats(std::mt19937* rng, int layers, int heads, int len) {
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  PrefillStats stats;
  stats.num_layers = layers;
  stats.num_kv_heads = heads;
  stats.prompt_len = len;
  stats.scores.assign(layers, std::vector<std::vector<float>>(heads, std::vector<float>(len)));
  for (auto& layer : stats.scores) {
    for (auto& row : layer) {
      for (float& s : row) s = static_cast<float>(unit(*rng) * 4.0);
    }
  }
  for (int l = 0; l < layers; ++l) stats.sparsity.push_back(unit(*rng));
  return stats;
}

int64_t HalfUp(double x) { return static_cast<int64_t>(std::floor(x + 0.5)); }

TEST(PolicyBudget, ExactModeHitsTheTotal) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> layers_dist(1, 40), len_dist(1, 600);
  std::uniform_real_distribution<double> ratio_dist(0.001, 1.0);
  for (int trial = 0; trial < 500; ++trial) {
    const int layers = layers_dist(rng), len = len_dist(rng);
    const double ratio = trial % 5 == 0 ? 0.1 : ratio_dist(rng);
    PrefillStats stats = RandomStats(&rng, layers, 1, len);
    if (trial % 7 == 0) stats.sparsity.assign(layers, 0.999);  // near-empty densities
    if (trial % 11 == 0) stats.sparsity[0] = 0.0;               // one dominant layer
    for (const char* policy : {"vlcache", "vlcache-budget"}) {
      Selection sel;
      ASSERT_TRUE(SelectKeep(policy, ratio, "exact", stats, &sel).ok());
      int64_t want = HalfUp(ratio * layers * len);
      want = std::max<int64_t>(layers, std::min<int64_t>(want, int64_t{layers} * len));
      int64_t total = 0;
      for (int k : sel.layer_budget) {
        EXPECT_GE(k, 1);
        EXPECT_LE(k, len);
        total += k;
      }
      EXPECT_EQ(total, want) << policy << " L=" << layers << " m=" << len << " ratio=" << ratio;
      // A denser layer never keeps fewer tokens than a sparser one.
      for (int a = 0; a < layers; ++a) {
        for (int b = 0; b < layers; ++b) {
          if (stats.sparsity[a] < stats.sparsity[b] - 1e-6) {
            EXPECT_GE(sel.layer_budget[a], sel.layer_budget[b]);
          }
        }
      }
    }
  }
}

TEST(PolicyBudget, PaperModeIsTheFormula) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 300; ++trial) {
    const int layers = 1 + trial % 32, len = 1 + (trial * 37) % 900;
    const double ratio = std::vector<double>{0.4, 0.2, 0.1, 0.05, 0.01, 0.77}[trial % 6];
    const PrefillStats stats = RandomStats(&rng, layers, 1, len);
    Selection sel;
    ASSERT_TRUE(SelectKeep("vlcache", ratio, "paper", stats, &sel).ok());
    double density_sum = 0;
    for (double g : stats.sparsity) density_sum += 1.0 - g;
    for (int l = 0; l < layers; ++l) {
      const double beta =
          std::clamp(ratio * layers * (1.0 - stats.sparsity[l]) / density_sum, 0.01, 1.0);
      EXPECT_EQ(sel.layer_budget[l], std::max<int64_t>(1, HalfUp(beta * len)))
          << "layer " << l << " of " << layers << ", m=" << len;
    }
  }
}

TEST(PolicyBudget, UniformAndPyramid) {
  std::mt19937 rng(3);
  const PrefillStats stats = RandomStats(&rng, 6, 2, 250);
  Selection uniform, pyramid;
  ASSERT_TRUE(SelectKeep("snapkv", 0.2, "exact", stats, &uniform).ok());
  ASSERT_TRUE(SelectKeep("pyramidkv", 0.2, "exact", stats, &pyramid).ok());
  EXPECT_EQ(uniform.layer_budget, std::vector<int>(6, 50));
  int total = 0;
  for (size_t l = 0; l < pyramid.layer_budget.size(); ++l) {
    total += pyramid.layer_budget[l];
    if (l > 0) {
      EXPECT_LT(pyramid.layer_budget[l], pyramid.layer_budget[l - 1]);
    }
  }
  EXPECT_EQ(total, 6 * 50);
}

TEST(PolicySelect, RatioOneKeepsEverything) {
  std::mt19937 rng(5);
  const PrefillStats stats = RandomStats(&rng, 3, 2, 77);
  for (const std::string& policy : KnownPolicies()) {
    for (const char* mode : {"exact", "paper"}) {
      Selection sel;
      ASSERT_TRUE(SelectKeep(policy, 1.0, mode, stats, &sel).ok()) << policy;
      EXPECT_EQ(sel.layer_budget, std::vector<int>(3, 77)) << policy << " " << mode;
      for (const auto& layer : sel.keep) {
        for (const auto& kept : layer) {
          ASSERT_EQ(kept.size(), 77u);
          for (int j = 0; j < 77; ++j) EXPECT_EQ(kept[j], j);
        }
      }
    }
  }
}

TEST(PolicySelect, KeptListsAreSortedUniqueInRangeAndSized) {
  std::mt19937 rng(9);
  for (int trial = 0; trial < 40; ++trial) {
    const int layers = 1 + trial % 5, heads = 1 + trial % 4, len = 1 + (trial * 53) % 300;
    const PrefillStats stats = RandomStats(&rng, layers, heads, len);
    for (const std::string& policy : KnownPolicies()) {
      for (double ratio : {1.0, 0.4, 0.2, 0.1, 0.05, 0.01, 0.333}) {
        for (const char* mode : {"exact", "paper"}) {
          Selection sel;
          ASSERT_TRUE(SelectKeep(policy, ratio, mode, stats, &sel).ok());
          ASSERT_EQ(static_cast<int>(sel.layer_budget.size()), layers);
          ASSERT_EQ(static_cast<int>(sel.keep.size()), layers);
          for (int l = 0; l < layers; ++l) {
            ASSERT_EQ(static_cast<int>(sel.keep[l].size()), heads);
            for (const auto& kept : sel.keep[l]) {
              ASSERT_EQ(static_cast<int>(kept.size()), sel.layer_budget[l]) << policy;
              for (size_t i = 0; i < kept.size(); ++i) {
                EXPECT_GE(kept[i], 0);
                EXPECT_LT(kept[i], len);
                if (i > 0) {
                  EXPECT_LT(kept[i - 1], kept[i]) << policy;
                }
              }
            }
          }
        }
      }
    }
  }
}

TEST(PolicySelect, AlwaysKeptSets) {
  std::mt19937 rng(13);
  PrefillStats stats = RandomStats(&rng, 1, 1, 200);
  // Scores that prefer the earliest positions, so the windows show.
  for (int j = 0; j < 200; ++j) stats.scores[0][0][j] = static_cast<float>(200 - j);
  Selection sel;
  ASSERT_TRUE(SelectKeep("streamingllm", 0.1, "exact", stats, &sel).ok());
  std::vector<int32_t> want = {0, 1, 2, 3};
  for (int j = 184; j < 200; ++j) want.push_back(j);
  EXPECT_EQ(sel.keep[0][0], want);

  ASSERT_TRUE(SelectKeep("vlcache-scores", 0.1, "exact", stats, &sel).ok());
  want.clear();  // k = 20: ceil(2) = 2 recent, 18 by score (the earliest)
  for (int j = 0; j < 18; ++j) want.push_back(j);
  want.push_back(198);
  want.push_back(199);
  EXPECT_EQ(sel.keep[0][0], want);

  ASSERT_TRUE(SelectKeep("h2o", 0.1, "exact", stats, &sel).ok());
  want.clear();  // k = 20: 10 recent, 10 heavy hitters
  for (int j = 0; j < 10; ++j) want.push_back(j);
  for (int j = 190; j < 200; ++j) want.push_back(j);
  EXPECT_EQ(sel.keep[0][0], want);

  ASSERT_TRUE(SelectKeep("snapkv", 0.5, "exact", stats, &sel).ok());
  want.clear();  // k = 100: window min(32, 50) = 32, 68 by pooled score
  for (int j = 0; j < 68; ++j) want.push_back(j);
  for (int j = 168; j < 200; ++j) want.push_back(j);
  EXPECT_EQ(sel.keep[0][0], want);
}

TEST(PolicySelect, TiesGoToTheEarlierPosition) {
  PrefillStats stats;
  stats.num_layers = 1;
  stats.num_kv_heads = 1;
  stats.prompt_len = 50;
  stats.scores = {{std::vector<float>(50, 1.0f)}};
  stats.scores[0][0][30] = 2.0f;
  Selection sel;
  ASSERT_TRUE(SelectKeep("h2o", 0.2, "exact", stats, &sel).ok());  // k = 10, 5 recent
  EXPECT_EQ(sel.keep[0][0], (std::vector<int32_t>{0, 1, 2, 3, 30, 45, 46, 47, 48, 49}));
}

TEST(PolicySelect, GqaHeadsChooseIndependently) {
  PrefillStats stats;
  stats.num_layers = 1;
  stats.num_kv_heads = 2;
  stats.prompt_len = 40;
  stats.scores.assign(1, std::vector<std::vector<float>>(2, std::vector<float>(40, 0.0f)));
  stats.scores[0][0][3] = 5.0f;
  stats.scores[0][1][17] = 5.0f;
  Selection sel;
  ASSERT_TRUE(SelectKeep("vlcache-scores", 0.05, "exact", stats, &sel).ok());  // k = 2
  EXPECT_EQ(sel.keep[0][0], (std::vector<int32_t>{3, 39}));
  EXPECT_EQ(sel.keep[0][1], (std::vector<int32_t>{17, 39}));
}

TEST(PolicyPlan, RowsEachPolicyNeeds) {
  // One image ending at 70 in a 100-token prompt: 30 post-vision queries.
  EXPECT_EQ(PlanScores("vlcache", 100, 70).score_rows_begin, 70);
  EXPECT_EQ(PlanScores("vlcache", 100, 70).sparsity_rows_begin, 70);
  EXPECT_EQ(PlanScores("vlcache-scores", 100, 70).score_rows_begin, 70);
  EXPECT_EQ(PlanScores("vlcache-scores", 100, 70).sparsity_rows_begin, -1);
  EXPECT_EQ(PlanScores("vlcache-budget", 100, 70).score_rows_begin, 68);
  EXPECT_EQ(PlanScores("vlcache-budget", 100, 70).sparsity_rows_begin, 70);
  EXPECT_EQ(PlanScores("h2o", 100, 70).score_rows_begin, 0);
  EXPECT_EQ(PlanScores("snapkv", 100, 70).score_rows_begin, 68);
  EXPECT_EQ(PlanScores("pyramidkv", 10, 2).score_rows_begin, 0);
  for (const char* none : {"full", "streamingllm", "nonsense"}) {
    EXPECT_EQ(PlanScores(none, 100, 70).score_rows_begin, -1) << none;
    EXPECT_EQ(PlanScores(none, 100, 70).sparsity_rows_begin, -1) << none;
  }
  // Fewer than 8 queries after the image, or no image: the last 32 rows.
  EXPECT_EQ(PlanScores("vlcache", 100, 93).score_rows_begin, 68);
  EXPECT_EQ(PlanScores("vlcache", 100, 92).score_rows_begin, 92);
  EXPECT_EQ(PlanScores("vlcache", 100, -1).score_rows_begin, 68);
  EXPECT_EQ(PlanScores("vlcache", 20, -1).sparsity_rows_begin, 0);
}

TEST(PolicyErrors, BadInputsNameTheProblem) {
  std::mt19937 rng(1);
  const PrefillStats good = RandomStats(&rng, 2, 2, 30);
  Selection sel;
  auto message = [&](const std::string& policy, double ratio, const std::string& mode,
                     const PrefillStats& stats) {
    return SelectKeep(policy, ratio, mode, stats, &sel).message;
  };
  EXPECT_NE(message("lru", 0.1, "exact", good).find("unknown policy \"lru\""), std::string::npos);
  for (double ratio : {0.0, -0.2, 1.5, std::numeric_limits<double>::quiet_NaN()}) {
    EXPECT_NE(message("vlcache", ratio, "exact", good).find("keep_ratio"), std::string::npos)
        << ratio;
  }
  EXPECT_NE(message("vlcache", 0.1, "fast", good).find("budget_mode"), std::string::npos);

  PrefillStats no_scores = good;
  no_scores.scores.clear();
  EXPECT_NE(message("snapkv", 0.1, "exact", no_scores).find("attention scores"),
            std::string::npos);
  EXPECT_TRUE(SelectKeep("streamingllm", 0.1, "exact", no_scores, &sel).ok());

  PrefillStats short_row = good;
  short_row.scores[1][0].pop_back();
  EXPECT_NE(message("h2o", 0.1, "exact", short_row).find("layer 1 kv head 0"),
            std::string::npos);

  PrefillStats no_sparsity = good;
  no_sparsity.sparsity.clear();
  EXPECT_NE(message("vlcache", 0.1, "exact", no_sparsity).find("sparsity"), std::string::npos);
  EXPECT_TRUE(SelectKeep("vlcache-scores", 0.1, "exact", no_sparsity, &sel).ok());

  PrefillStats bad_sparsity = good;
  bad_sparsity.sparsity[0] = 1.5;
  EXPECT_NE(message("vlcache", 0.1, "paper", bad_sparsity).find("sparsity of layer 0"),
            std::string::npos);

  PrefillStats empty;
  EXPECT_NE(message("full", 0.1, "exact", empty).find("prompt_len"), std::string::npos);
}

}  // namespace
}  // namespace vlcache

// KV-cache compression policies: docs/vlcache.md sections 1, 2 and 4. The
// exact arithmetic (rounding, tie-breaking, the order of float operations that
// can change a rank) is specified in docs/policies.md, because an independent
// oracle (backend/tests/oracles/policy_oracle.py) reproduces it bit for bit.
#include "kvcache/policy.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

namespace vlcache {
namespace {

// How a policy scores, budgets and protects positions. The ablations are rows
// of this table rather than code paths of their own.
enum class Scores { kNone, kPostVision, kAllRows, kLastWindow };
enum class Budget { kFull, kUniform, kPyramid, kSparsity };
enum class Protect { kEverything, kVlcacheRecent, kHalfRecent, kSnapWindow, kSinksAndRecent };

struct PolicySpec {
  const char* name;
  Scores scores;
  Budget budget;
  Protect protect;
  bool pooled;  // snapkv's 1-D average pooling of the scores
};

constexpr PolicySpec kPolicies[] = {
    {"full", Scores::kNone, Budget::kFull, Protect::kEverything, false},
    {"vlcache", Scores::kPostVision, Budget::kSparsity, Protect::kVlcacheRecent, false},
    {"h2o", Scores::kAllRows, Budget::kUniform, Protect::kHalfRecent, false},
    {"snapkv", Scores::kLastWindow, Budget::kUniform, Protect::kSnapWindow, true},
    {"streamingllm", Scores::kNone, Budget::kUniform, Protect::kSinksAndRecent, false},
    {"pyramidkv", Scores::kLastWindow, Budget::kPyramid, Protect::kSnapWindow, true},
    {"vlcache-scores", Scores::kPostVision, Budget::kUniform, Protect::kVlcacheRecent, false},
    {"vlcache-budget", Scores::kLastWindow, Budget::kSparsity, Protect::kSnapWindow, true},
};

const PolicySpec* FindPolicy(const std::string& name) {
  for (const PolicySpec& spec : kPolicies) {
    if (name == spec.name) return &spec;
  }
  return nullptr;
}

bool NeedsSparsity(const PolicySpec& spec) { return spec.budget == Budget::kSparsity; }

// Half-up rounding of a non-negative value; std::round's half-away-from-zero
// is the same there, spelled out because the oracle must match it (Python's
// round() is half-to-even).
int64_t RoundHalfUp(double x) { return static_cast<int64_t>(std::floor(x + 0.5)); }

int64_t Clamp(int64_t x, int64_t lo, int64_t hi) { return std::max(lo, std::min(hi, x)); }

int UniformBudget(double keep_ratio, int prompt_len) {
  return static_cast<int>(Clamp(RoundHalfUp(keep_ratio * prompt_len), 1, prompt_len));
}

// Two weights (or fractional parts) closer than this count as equal, so that
// the first layer wins instead of float noise.
constexpr double kTieTolerance = 1e-9;

// Splits `total` tokens over layers in proportion to `weight`, each layer
// within [1, cap]: the real shares are clamp(c * weight[l], 1, cap) with c
// solved exactly on the piecewise-linear sum, then rounded by largest
// remainder (ties to the lower layer). Sum of the result == total after total
// is clamped to [L, L * cap].
std::vector<int> WaterFill(const std::vector<double>& weight, int64_t total, int cap) {
  const int layers = static_cast<int>(weight.size());
  total = Clamp(total, layers, static_cast<int64_t>(layers) * cap);
  std::vector<double> share(layers, 1.0);
  if (total == layers) {
    return std::vector<int>(layers, 1);
  }
  if (total == static_cast<int64_t>(layers) * cap) {
    return std::vector<int>(layers, cap);
  }
  // Breakpoints of f(c) = sum_l clamp(c * w[l], 1, cap): c = 1/w and c = cap/w.
  std::vector<double> breaks;
  for (double w : weight) {
    if (w > 0) {
      breaks.push_back(1.0 / w);
      breaks.push_back(cap / w);
    }
  }
  std::sort(breaks.begin(), breaks.end());
  auto sum_at = [&](double c, double* slope) {
    double sum = 0, s = 0;
    for (double w : weight) {
      double x = c * w;
      if (x <= 1.0) {
        sum += 1.0;
      } else if (x >= cap) {
        sum += cap;
      } else {
        sum += x;
        s += w;
      }
    }
    if (slope) *slope = s;
    return sum;
  };
  // Find the first breakpoint where f reaches the total; f is linear on the
  // segment before it, so solve there.
  double c = breaks.empty() ? 0.0 : breaks.back();
  for (size_t i = 0; i < breaks.size(); ++i) {
    if (sum_at(breaks[i], nullptr) >= static_cast<double>(total)) {
      const double lo = i == 0 ? 0.0 : breaks[i - 1];
      const double mid = 0.5 * (lo + breaks[i]);
      double slope = 0;
      const double f_mid = sum_at(mid, &slope);
      c = slope > 0 ? mid + (static_cast<double>(total) - f_mid) / slope : breaks[i];
      break;
    }
  }
  for (int l = 0; l < layers; ++l) {
    share[l] = std::min<double>(cap, std::max(1.0, c * weight[l]));
  }
  std::vector<int> budget(layers);
  std::vector<double> frac(layers);
  int64_t assigned = 0;
  for (int l = 0; l < layers; ++l) {
    budget[l] = static_cast<int>(Clamp(static_cast<int64_t>(std::floor(share[l])), 1, cap));
    frac[l] = share[l] - budget[l];
    assigned += budget[l];
  }
  // Largest remainder; an exhausted layer cannot take more.
  while (assigned < total) {
    int best = -1;
    for (int l = 0; l < layers; ++l) {
      if (budget[l] >= cap) continue;
      if (best < 0 || frac[l] > frac[best] + kTieTolerance) best = l;
    }
    budget[best] += 1;
    frac[best] = -1.0;
    ++assigned;
  }
  while (assigned > total) {  // float noise only: take from the smallest remainder
    int best = -1;
    for (int l = 0; l < layers; ++l) {
      if (budget[l] <= 1) continue;
      if (best < 0 || frac[l] < frac[best] - kTieTolerance) best = l;
    }
    budget[best] -= 1;
    frac[best] = 2.0;
    --assigned;
  }
  return budget;
}

std::vector<double> Densities(const std::vector<double>& sparsity) {
  std::vector<double> density(sparsity.size());
  double sum = 0;
  for (size_t l = 0; l < sparsity.size(); ++l) {
    density[l] = 1.0 - sparsity[l];
    sum += density[l];
  }
  // All-sparse layers (only possible with degenerate stats): spread evenly.
  if (!(sum > 0)) std::fill(density.begin(), density.end(), 1.0);
  return density;
}

std::vector<int> SparsityBudgets(double keep_ratio, bool paper, const std::vector<double>& sparsity,
                                 int prompt_len) {
  const int layers = static_cast<int>(sparsity.size());
  const std::vector<double> density = Densities(sparsity);
  if (!paper) {
    const int64_t total = RoundHalfUp(keep_ratio * layers * prompt_len);
    return WaterFill(density, total, prompt_len);
  }
  double density_sum = 0;
  for (double d : density) density_sum += d;
  std::vector<int> budget(layers);
  for (int l = 0; l < layers; ++l) {
    double fraction = keep_ratio * layers * density[l] / density_sum;
    fraction = std::min(1.0, std::max(kMinLayerFraction, fraction));
    budget[l] = static_cast<int>(Clamp(RoundHalfUp(fraction * prompt_len), 1, prompt_len));
  }
  return budget;
}

// PyramidKV's schedule: linear in the layer index, the top layer getting
// 1/kPyramidTopDivisor of the mean, the bottom the rest of twice the mean, so
// the total equals the uniform policy's.
constexpr double kPyramidTopDivisor = 20.0;

std::vector<int> PyramidBudgets(double keep_ratio, int layers, int prompt_len) {
  const int uniform = UniformBudget(keep_ratio, prompt_len);
  if (layers == 1) return {uniform};
  const double mean = uniform;
  const double top = mean / kPyramidTopDivisor;
  const double bottom = 2.0 * mean - top;
  std::vector<double> weight(layers);
  for (int l = 0; l < layers; ++l) {
    weight[l] = bottom + (top - bottom) * l / (layers - 1);
  }
  return WaterFill(weight, static_cast<int64_t>(uniform) * layers, prompt_len);
}

// ceil(count * fraction) without the float excess of e.g. 0.1 * 30.
int CeilFraction(int count, double fraction) {
  return static_cast<int>(std::ceil(count * fraction - kTieTolerance));
}

std::vector<double> PoolScores(const std::vector<float>& scores) {
  const int n = static_cast<int>(scores.size());
  const int half = kSnapkvPoolKernel / 2;
  std::vector<double> pooled(n);
  for (int j = 0; j < n; ++j) {
    double sum = 0;
    int count = 0;
    for (int i = std::max(0, j - half); i <= std::min(n - 1, j + half); ++i) {
      sum += static_cast<double>(scores[i]);
      ++count;
    }
    pooled[j] = sum / count;
  }
  return pooled;
}

// Keeps `budget` of the prompt's positions for one (layer, kv head).
std::vector<int32_t> SelectHead(const PolicySpec& spec, int budget, int prompt_len,
                                const std::vector<float>* scores) {
  int recent = 0;  // always kept: [prompt_len - recent, prompt_len)
  int sinks = 0;   // always kept: [0, sinks)
  switch (spec.protect) {
    case Protect::kEverything:
      recent = prompt_len;
      break;
    case Protect::kVlcacheRecent:
      recent = CeilFraction(budget, kVlcacheRecentFraction);
      break;
    case Protect::kHalfRecent:
      recent = budget / 2;
      break;
    case Protect::kSnapWindow:
      recent = std::min(kObservationWindow, budget / 2);
      break;
    case Protect::kSinksAndRecent:
      sinks = std::min(kStreamingSinkTokens, budget);
      recent = budget - sinks;
      break;
  }
  recent = std::min(recent, budget);
  std::vector<int32_t> kept;
  kept.reserve(budget);
  for (int j = 0; j < sinks; ++j) kept.push_back(j);
  const int by_score = budget - sinks - recent;
  const int candidates_end = prompt_len - recent;
  if (by_score > 0) {
    std::vector<double> value;
    if (spec.pooled) {
      value = PoolScores(*scores);
    } else {
      value.assign(scores->begin(), scores->end());
    }
    std::vector<int32_t> order;
    for (int j = sinks; j < candidates_end; ++j) order.push_back(j);
    // Higher score first; equal scores keep the earlier position.
    std::partial_sort(order.begin(), order.begin() + by_score, order.end(),
                      [&](int32_t a, int32_t b) {
                        if (value[a] != value[b]) return value[a] > value[b];
                        return a < b;
                      });
    order.resize(by_score);
    kept.insert(kept.end(), order.begin(), order.end());
  }
  for (int j = candidates_end; j < prompt_len; ++j) kept.push_back(j);
  std::sort(kept.begin(), kept.end());
  return kept;
}

Status CheckStats(const PolicySpec& spec, const PrefillStats& stats) {
  const int layers = stats.num_layers, heads = stats.num_kv_heads, len = stats.prompt_len;
  if (layers < 1 || heads < 1 || len < 1) {
    std::ostringstream msg;
    msg << "prefill stats need num_layers, num_kv_heads and prompt_len >= 1 (got " << layers
        << ", " << heads << ", " << len << ")";
    return Status::Error(msg.str());
  }
  if (spec.scores != Scores::kNone) {
    if (static_cast<int>(stats.scores.size()) != layers) {
      return Status::Error("policy " + std::string(spec.name) +
                           " needs attention scores for every layer; prefill stats have " +
                           std::to_string(stats.scores.size()) + " of " + std::to_string(layers));
    }
    for (int l = 0; l < layers; ++l) {
      if (static_cast<int>(stats.scores[l].size()) != heads) {
        return Status::Error("attention scores of layer " + std::to_string(l) + " have " +
                             std::to_string(stats.scores[l].size()) + " kv heads, expected " +
                             std::to_string(heads));
      }
      for (int h = 0; h < heads; ++h) {
        const auto& row = stats.scores[l][h];
        if (static_cast<int>(row.size()) != len) {
          return Status::Error("attention scores of layer " + std::to_string(l) + " kv head " +
                               std::to_string(h) + " have " + std::to_string(row.size()) +
                               " positions, expected prompt_len " + std::to_string(len));
        }
        for (float s : row) {
          if (!std::isfinite(s)) {
            return Status::Error("attention scores of layer " + std::to_string(l) +
                                 " are not finite");
          }
        }
      }
    }
  }
  if (NeedsSparsity(spec)) {
    if (static_cast<int>(stats.sparsity.size()) != layers) {
      return Status::Error("policy " + std::string(spec.name) +
                           " needs the sparsity of every layer; prefill stats have " +
                           std::to_string(stats.sparsity.size()) + " of " +
                           std::to_string(layers));
    }
    for (int l = 0; l < layers; ++l) {
      const double g = stats.sparsity[l];
      if (!(g >= 0.0 && g <= 1.0)) {
        return Status::Error("sparsity of layer " + std::to_string(l) +
                             " must be in [0, 1], got " + std::to_string(g));
      }
    }
  }
  return Status::Ok();
}

}  // namespace

bool IsKnownPolicy(const std::string& policy) { return FindPolicy(policy) != nullptr; }

const std::vector<std::string>& KnownPolicies() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const PolicySpec& spec : kPolicies) out.emplace_back(spec.name);
    return out;
  }();
  return names;
}

ScoreRequest PlanScores(const std::string& policy, int prompt_len, int post_vision_begin) {
  ScoreRequest request;
  const PolicySpec* spec = FindPolicy(policy);
  if (spec == nullptr || prompt_len < 1) return request;
  const int window_begin = prompt_len - std::min(kObservationWindow, prompt_len);
  const bool has_post_vision = post_vision_begin >= 0 && post_vision_begin <= prompt_len &&
                               prompt_len - post_vision_begin >= kMinPostVisionQueries;
  const int post_vision_rows = has_post_vision ? post_vision_begin : window_begin;
  switch (spec->scores) {
    case Scores::kNone:
      break;
    case Scores::kPostVision:
      request.score_rows_begin = post_vision_rows;
      break;
    case Scores::kAllRows:
      request.score_rows_begin = 0;
      break;
    case Scores::kLastWindow:
      request.score_rows_begin = window_begin;
      break;
  }
  if (NeedsSparsity(*spec)) request.sparsity_rows_begin = post_vision_rows;
  return request;
}

Status SelectKeep(const std::string& policy, double keep_ratio, const std::string& budget_mode,
                  const PrefillStats& stats, Selection* out) {
  const PolicySpec* spec = FindPolicy(policy);
  if (spec == nullptr) {
    std::string known;
    for (const std::string& name : KnownPolicies()) known += (known.empty() ? "" : ", ") + name;
    return Status::Error("unknown policy \"" + policy + "\" (known: " + known + ")");
  }
  if (!(keep_ratio > 0.0 && keep_ratio <= 1.0)) {
    return Status::Error("keep_ratio must be in (0, 1], got " + std::to_string(keep_ratio));
  }
  if (budget_mode != "exact" && budget_mode != "paper") {
    return Status::Error("budget_mode must be \"exact\" or \"paper\", got \"" + budget_mode +
                         "\"");
  }
  const bool keep_all = spec->budget == Budget::kFull || keep_ratio == 1.0;
  if (keep_all) {
    // Nothing is dropped, so the measurements are not needed; only the shape is.
    Status status = CheckStats(kPolicies[0], stats);
    if (!status.ok()) return status;
  } else {
    Status status = CheckStats(*spec, stats);
    if (!status.ok()) return status;
  }
  const int layers = stats.num_layers, heads = stats.num_kv_heads, len = stats.prompt_len;

  std::vector<int> budget;
  if (keep_all) {
    // keep_ratio 1 means the whole cache for every policy, including the
    // paper's formula, which would otherwise still trim the sparser layers.
    budget.assign(layers, len);
  } else {
    switch (spec->budget) {
      case Budget::kFull:
        budget.assign(layers, len);
        break;
      case Budget::kUniform:
        budget.assign(layers, UniformBudget(keep_ratio, len));
        break;
      case Budget::kPyramid:
        budget = PyramidBudgets(keep_ratio, layers, len);
        break;
      case Budget::kSparsity:
        budget = SparsityBudgets(keep_ratio, budget_mode == "paper", stats.sparsity, len);
        break;
    }
  }

  Selection selection;
  selection.layer_budget = budget;
  selection.keep.resize(layers);
  for (int l = 0; l < layers; ++l) {
    selection.keep[l].resize(heads);
    for (int h = 0; h < heads; ++h) {
      if (budget[l] >= len) {
        std::vector<int32_t> all(len);
        std::iota(all.begin(), all.end(), 0);
        selection.keep[l][h] = std::move(all);
      } else {
        const std::vector<float>* scores =
            spec->scores == Scores::kNone ? nullptr : &stats.scores[l][h];
        selection.keep[l][h] = SelectHead(*spec, budget[l], len, scores);
      }
    }
  }
  *out = std::move(selection);
  return Status::Ok();
}

}  // namespace vlcache

#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace vlcache {
namespace engine {

Sampler::Sampler(const SamplingParams& params, int banned_token)
    : params_(params), banned_(banned_token), rng_(params.seed) {}

int32_t Sampler::Next(const float* logits, int vocab) {
  const bool greedy = params_.temperature <= 0.f || params_.top_k == 1;
  if (greedy) {
    int32_t best = -1;
    float best_value = -std::numeric_limits<float>::infinity();
    for (int i = 0; i < vocab; ++i) {
      if (i != banned_ && (best < 0 || logits[i] > best_value)) {
        best = i;
        best_value = logits[i];
      }
    }
    return best;
  }
  candidates_.clear();
  const float inv_t = 1.f / params_.temperature;
  for (int i = 0; i < vocab; ++i) {
    if (i != banned_) candidates_.emplace_back(logits[i] * inv_t, i);
  }
  auto by_logit = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t n = candidates_.size();
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < n) {
    n = static_cast<size_t>(params_.top_k);
    std::partial_sort(candidates_.begin(), candidates_.begin() + n, candidates_.end(), by_logit);
  } else {
    std::sort(candidates_.begin(), candidates_.end(), by_logit);
  }
  // Softmax over the survivors (sorted, so the first holds the maximum).
  const float mx = candidates_[0].first;
  double total = 0;
  for (size_t i = 0; i < n; ++i) {
    candidates_[i].first = static_cast<float>(std::exp(candidates_[i].first - mx));
    total += candidates_[i].first;
  }
  // Nucleus: the smallest prefix whose probability reaches top_p.
  if (params_.top_p < 1.f) {
    double cum = 0;
    size_t keep = 0;
    while (keep < n) {
      cum += candidates_[keep].first / total;
      ++keep;
      if (cum >= params_.top_p) break;
    }
    n = keep;
    total = 0;
    for (size_t i = 0; i < n; ++i) total += candidates_[i].first;
  }
  std::uniform_real_distribution<double> uniform(0.0, total);
  double u = uniform(rng_);
  for (size_t i = 0; i < n; ++i) {
    u -= candidates_[i].first;
    if (u < 0) return candidates_[i].second;
  }
  return candidates_[n - 1].second;
}

Status ValidateSampling(const SamplingParams& p) {
  if (p.max_tokens < 1) return Status::Error("max_tokens: must be at least 1");
  if (!(p.temperature >= 0.f) || !std::isfinite(p.temperature)) {
    return Status::Error("temperature: must be a finite number >= 0");
  }
  if (!(p.top_p > 0.f && p.top_p <= 1.f)) return Status::Error("top_p: must be in (0, 1]");
  if (p.top_k < 0) return Status::Error("top_k: must be >= 0 (0 = off)");
  return Status::Ok();
}

}  // namespace engine
}  // namespace vlcache

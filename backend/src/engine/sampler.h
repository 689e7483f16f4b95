// Token selection from one row of logits: greedy, or temperature / top-k /
// top-p sampling with the sequence's own seeded generator. One token id is
// banned (the image placeholder: the model must never generate it).
#pragma once

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "engine/engine.h"

namespace vlcache {
namespace engine {

class Sampler {
 public:
  Sampler(const SamplingParams& params, int banned_token);
  int32_t Next(const float* logits, int vocab);

 private:
  SamplingParams params_;
  int banned_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;  // reused: no allocation per token
};

// Checks temperature, top_p, top_k and max_tokens; names the bad field.
Status ValidateSampling(const SamplingParams& params);

}  // namespace engine
}  // namespace vlcache

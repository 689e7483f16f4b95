// KV-cache compression policies as pure functions (no tensors, no model): what a
// policy needs the prefill to measure, and, from those measurements, how many
// prompt tokens each layer keeps and which positions each (layer, kv head) keeps.
// The method is docs/vlcache.md (VL-Cache and the baselines); every
// choice the paper leaves open is a named constant below.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/engine.h"  // Status

namespace vlcache {

// Named choices (printed with every evaluation result).
constexpr double kSparsityThreshold = 0.01;  // p of Eq. 1: A[q,j] < p * max_j A[q,j]
constexpr int kObservationWindow = 32;       // fallback query window / snapkv window
constexpr int kMinPostVisionQueries = 8;     // fewer than this after the last image: use the window
constexpr double kMinLayerFraction = 0.01;   // beta clip lower bound
constexpr double kVlcacheRecentFraction = 0.1;  // recent window = ceil(0.1 * k[l])
constexpr int kStreamingSinkTokens = 4;
constexpr int kSnapkvPoolKernel = 5;

// What the prefill must measure for a policy, in the prompt's own coordinates.
// Rows are query positions [begin, prompt_len); -1 means "not needed".
struct ScoreRequest {
  int score_rows_begin = -1;     // accumulate column sums of softmax(QK^T) over these rows
  int sparsity_rows_begin = -1;  // count sparse causal entries over these rows
};

// Measurements of one prompt, filled by the model during prefill.
struct PrefillStats {
  int num_layers = 0;
  int num_kv_heads = 0;
  int prompt_len = 0;
  // [layer][kv_head][position]: sum over the query heads sharing the kv head
  // and over the score rows of the attention probability; empty when not requested.
  std::vector<std::vector<std::vector<float>>> scores;
  // [layer]: mean over query heads of the fraction of sparse causal entries in
  // the sparsity rows (gamma[l]); empty when not requested.
  std::vector<double> sparsity;
};

struct Selection {
  std::vector<int> layer_budget;  // k[l], tokens kept per kv head
  // [layer][kv_head] -> kept positions, ascending.
  std::vector<std::vector<std::vector<int32_t>>> keep;
};

bool IsKnownPolicy(const std::string& policy);
const std::vector<std::string>& KnownPolicies();

// post_vision_begin: v, the first position after the last image token of the
// prompt, or -1 when the prompt has no image.
ScoreRequest PlanScores(const std::string& policy, int prompt_len, int post_vision_begin);

// Chooses the kept positions. keep_ratio in (0, 1]; budget_mode "exact" or "paper".
Status SelectKeep(const std::string& policy, double keep_ratio,
                  const std::string& budget_mode, const PrefillStats& stats,
                  Selection* out);

}  // namespace vlcache

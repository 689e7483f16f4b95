// The public pieces of engine.h that do not depend on the model family.
#include "engine/engine.h"

#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "engine/llava_engine.h"

namespace vlcache {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
  }
  return "error";
}

std::string SequenceStats::ToJson() const {
  nlohmann::ordered_json j;
  j["prompt_tokens"] = prompt_tokens;
  j["image_tokens"] = image_tokens;
  j["completion_tokens"] = completion_tokens;
  j["policy"] = policy;
  // The float's shortest decimal form (0.1, not 0.10000000149011612).
  char ratio[32];
  std::snprintf(ratio, sizeof(ratio), "%.7g", keep_ratio);
  j["keep_ratio"] = std::strtod(ratio, nullptr);
  j["budget_mode"] = budget_mode;
  j["kv_tokens_full"] = kv_tokens_full;
  j["kv_tokens_kept"] = kv_tokens_kept;
  j["kv_bytes_full"] = kv_bytes_full;
  j["kv_bytes_kept"] = kv_bytes_kept;
  nlohmann::ordered_json layer_list = nlohmann::ordered_json::array();
  for (const LayerStats& l : layers) {
    nlohmann::ordered_json o;
    o["budget"] = l.budget;
    // null when the policy did not measure the layer's sparsity
    if (l.sparsity >= 0) o["sparsity"] = l.sparsity;
    else o["sparsity"] = nullptr;
    layer_list.push_back(o);
  }
  j["layers"] = layer_list;
  if (!kept_positions.empty()) j["kept_positions"] = kept_positions;
  j["queue_ms"] = queue_ms;
  j["prefill_ms"] = prefill_ms;
  j["compress_ms"] = compress_ms;
  j["decode_ms"] = decode_ms;
  return j.dump();
}

Status Engine::Create(const EngineConfig& config, std::unique_ptr<Engine>* out) {
  return engine::LlavaEngine::Create(config, out);
}

}  // namespace vlcache

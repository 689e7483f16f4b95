// The model's config.pbtxt (as Triton's JSON rendering) checked once against
// the contract, and its `parameters` read into the engine's configuration.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "engine/engine.h"

namespace vlcache {
namespace triton {

struct ModelParameters {
  EngineConfig engine;
  // Whether the checkpoint parameter was relative (resolved against the model
  // directory); kept for the log line at load.
  std::string checkpoint_parameter;
  // How long the serving thread sleeps between cancellation polls when
  // sequences are live but the engine had nothing to do (e.g. all waiting for
  // pool space). With no live sequence it sleeps until a request arrives.
  int idle_wait_us = 2000;
  // At unload, how long live sequences may take to finish after being cancelled.
  int shutdown_drain_ms = 10000;
  // A pause after every engine step that did work, in microseconds: 0 (the
  // default) in production. Tests set it to keep a sequence alive for seconds.
  int step_delay_us = 0;
};

// Checks max_batch_size 0, the decoupled transaction policy, instance kinds and
// every input and output against docs/contract.md. The message names the field.
Status ValidateModelConfig(const nlohmann::json& config);

// Reads `parameters` { key: { string_value: ... } }. A relative checkpoint path
// is taken relative to model_dir. Unknown keys are errors (they are typos).
Status ReadModelParameters(const nlohmann::json& config, const std::string& model_dir,
                           ModelParameters* out);

}  // namespace triton
}  // namespace vlcache

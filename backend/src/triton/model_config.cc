#include "triton/model_config.h"

#include <cmath>
#include <map>

#include "triton/contract.h"

namespace vlcache {
namespace triton {
namespace {

using nlohmann::json;

// Protobuf's JSON mapping writes int64 fields as strings; accept both.
bool ToInt64(const json& value, int64_t* out) {
  try {
    if (value.is_number_integer()) {
      *out = value.get<int64_t>();
      return true;
    }
    if (value.is_string()) {
      size_t used = 0;
      const std::string s = value.get<std::string>();
      *out = std::stoll(s, &used);
      return used == s.size();
    }
  } catch (const std::exception&) {
  }
  return false;
}

Status CheckTensors(const json& config, const char* section,
                    const std::vector<TensorSpec>& specs, bool inputs) {
  std::map<std::string, const TensorSpec*> wanted;
  for (const TensorSpec& spec : specs) wanted[spec.name] = &spec;
  std::map<std::string, bool> seen;
  if (config.contains(section) && !config[section].is_array()) {
    return Status::Error(std::string(section) + ": must be a list");
  }
  const json empty = json::array();
  for (const json& tensor : config.contains(section) ? config[section] : empty) {
    const std::string name = tensor.value("name", "");
    auto it = wanted.find(name);
    if (it == wanted.end()) {
      return Status::Error(std::string(section) + ": '" + name +
                           "' is not in the contract (docs/contract.md)");
    }
    const TensorSpec& spec = *it->second;
    const std::string type = tensor.value("data_type", "");
    if (DataTypeFromName(type) != spec.type) {
      return Status::Error(std::string(section) + ": '" + name + "' must be TYPE_" +
                           (spec.type == DataType::kBytes ? std::string("STRING")
                                                          : DataTypeName(spec.type)) +
                           ", config has " + type);
    }
    std::vector<int64_t> dims;
    for (const json& d : tensor.value("dims", json::array())) {
      int64_t v = 0;
      if (!ToInt64(d, &v)) return Status::Error(std::string(section) + ": '" + name + "' has a bad dim");
      dims.push_back(v);
    }
    if (dims != spec.dims) {
      return Status::Error(std::string(section) + ": '" + name + "' must have dims " +
                           ShapeString(spec.dims) + ", config has " + ShapeString(dims));
    }
    if (inputs) {
      const bool optional = tensor.value("optional", false);
      if (optional == spec.required) {
        return Status::Error(std::string(section) + ": '" + name + "' must be " +
                             (spec.required ? "required (optional: false)" : "optional: true"));
      }
    }
    seen[name] = true;
  }
  for (const TensorSpec& spec : specs) {
    if (!seen.count(spec.name)) {
      return Status::Error(std::string(section) + ": '" + spec.name +
                           "' from the contract is missing");
    }
  }
  return Status::Ok();
}

}  // namespace

Status ValidateModelConfig(const json& config) {
  int64_t max_batch = 0;
  if (config.contains("max_batch_size") && !ToInt64(config["max_batch_size"], &max_batch)) {
    return Status::Error("max_batch_size: not an integer");
  }
  if (max_batch != 0) {
    return Status::Error("max_batch_size: must be 0 (one request is one sequence; the engine "
                         "batches internally), config has " + std::to_string(max_batch));
  }
  const json policy = config.value("model_transaction_policy", json::object());
  if (!policy.value("decoupled", false)) {
    return Status::Error(
        "model_transaction_policy: must be { decoupled: true } (tokens are streamed)");
  }
  for (const json& group : config.value("instance_group", json::array())) {
    const std::string kind = group.value("kind", "KIND_CPU");
    if (kind != "KIND_CPU" && kind != "KIND_GPU") {
      return Status::Error("instance_group: kind must be KIND_CPU or KIND_GPU, config has " + kind);
    }
  }
  Status status = CheckTensors(config, "input", ContractInputs(), true);
  if (!status.ok()) return status;
  return CheckTensors(config, "output", ContractOutputs(), false);
}

Status ReadModelParameters(const json& config, const std::string& model_dir,
                           ModelParameters* out) {
  *out = ModelParameters{};
  std::map<std::string, std::string> values;
  const json parameters = config.value("parameters", json::object());
  for (auto it = parameters.begin(); it != parameters.end(); ++it) {
    if (!it.value().is_object() || !it.value().contains("string_value")) {
      return Status::Error("parameters: '" + it.key() + "' needs a string_value");
    }
    values[it.key()] = it.value()["string_value"].get<std::string>();
  }

  auto take_int = [&](const char* key, int64_t min, int64_t* value) -> Status {
    auto it = values.find(key);
    if (it == values.end()) return Status::Ok();
    int64_t v = 0;
    if (!ToInt64(json(it->second), &v) || v < min) {
      return Status::Error(std::string("parameters: '") + key + "' must be an integer >= " +
                           std::to_string(min) + ", got '" + it->second + "'");
    }
    *value = v;
    values.erase(it);
    return Status::Ok();
  };
  auto take_string = [&](const char* key, std::string* value) {
    auto it = values.find(key);
    if (it == values.end()) return;
    *value = it->second;
    values.erase(it);
  };

  EngineConfig& engine = out->engine;
  take_string("checkpoint", &out->checkpoint_parameter);
  if (out->checkpoint_parameter.empty()) {
    return Status::Error("parameters: 'checkpoint' (the model directory in Hugging Face layout, "
                         "relative to the Triton model directory or absolute) is required");
  }
  engine.model_dir = out->checkpoint_parameter[0] == '/'
                         ? out->checkpoint_parameter
                         : model_dir + "/" + out->checkpoint_parameter;

  take_string("default_policy", &engine.default_policy);
  bool known = false;
  for (const std::string& p : KnownPolicies()) known = known || p == engine.default_policy;
  if (!known) {
    return Status::Error("parameters: 'default_policy' is not a known policy: '" +
                         engine.default_policy + "'");
  }
  take_string("default_budget_mode", &engine.default_budget_mode);
  known = false;
  for (const std::string& m : KnownBudgetModes()) known = known || m == engine.default_budget_mode;
  if (!known) {
    return Status::Error("parameters: 'default_budget_mode' must be exact or paper, got '" +
                         engine.default_budget_mode + "'");
  }
  auto ratio = values.find("default_keep_ratio");
  if (ratio != values.end()) {
    char* end = nullptr;
    const float r = std::strtof(ratio->second.c_str(), &end);
    if (end == ratio->second.c_str() || *end != '\0' || !(r > 0.0f && r <= 1.0f)) {
      return Status::Error("parameters: 'default_keep_ratio' must be in (0, 1], got '" +
                           ratio->second + "'");
    }
    engine.default_keep_ratio = r;
    values.erase(ratio);
  }
  int64_t v = engine.kv_pool_bytes;
  Status status = take_int("kv_pool_bytes", 1, &v);
  if (!status.ok()) return status;
  engine.kv_pool_bytes = v;
  v = engine.block_tokens;
  if (!(status = take_int("block_tokens", 1, &v)).ok()) return status;
  engine.block_tokens = static_cast<int>(v);
  v = engine.max_batch;
  if (!(status = take_int("max_batch", 1, &v)).ok()) return status;
  engine.max_batch = static_cast<int>(v);
  v = engine.threads;
  if (!(status = take_int("threads", 0, &v)).ok()) return status;
  engine.threads = static_cast<int>(v);
  take_string("device", &engine.device);
  v = out->idle_wait_us;
  if (!(status = take_int("idle_wait_us", 1, &v)).ok()) return status;
  out->idle_wait_us = static_cast<int>(v);
  v = out->shutdown_drain_ms;
  if (!(status = take_int("shutdown_drain_ms", 0, &v)).ok()) return status;
  out->shutdown_drain_ms = static_cast<int>(v);
  v = out->step_delay_us;
  if (!(status = take_int("step_delay_us", 0, &v)).ok()) return status;
  out->step_delay_us = static_cast<int>(v);

  if (!values.empty()) {
    return Status::Error("parameters: unknown parameter '" + values.begin()->first + "'");
  }
  return Status::Ok();
}

}  // namespace triton
}  // namespace vlcache

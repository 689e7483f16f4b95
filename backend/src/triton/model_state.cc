#include "triton/model_state.h"

#include <memory>

namespace vlcache {
namespace triton {

TRITONSERVER_Error* ModelState::Create(TRITONBACKEND_Model* model, MetricFamilies* families,
                                       ModelState** state) {
  std::unique_ptr<ModelState> s(new ModelState());
  s->model_ = model;
  s->families_ = families;
  const char* name = nullptr;
  VLCACHE_RETURN_IF_TRITON_ERROR(TRITONBACKEND_ModelName(model, &name));
  s->name_ = name;
  uint64_t version = 0;
  VLCACHE_RETURN_IF_TRITON_ERROR(TRITONBACKEND_ModelVersion(model, &version));
  s->version_ = static_cast<int64_t>(version);

  TRITONSERVER_Message* message = nullptr;
  VLCACHE_RETURN_IF_TRITON_ERROR(TRITONBACKEND_ModelConfig(model, 1 /* config version */, &message));
  const char* buffer = nullptr;
  size_t size = 0;
  TRITONSERVER_Error* err = TRITONSERVER_MessageSerializeToJson(message, &buffer, &size);
  nlohmann::json config;
  if (err == nullptr) {
    config = nlohmann::json::parse(std::string(buffer, size), nullptr, /*allow_exceptions=*/false);
  }
  LogIfError(TRITONSERVER_MessageDelete(message), "deleting the model config message");
  if (err != nullptr) return err;
  if (config.is_discarded()) {
    return TRITONSERVER_ErrorNew(TRITONSERVER_ERROR_INTERNAL, "model config is not valid JSON");
  }

  const std::string prefix = "model '" + s->name_ + "' config.pbtxt: ";
  Status status = ValidateModelConfig(config);
  if (!status.ok()) return ToTritonError(Status::Error(prefix + status.message));

  TRITONBACKEND_ArtifactType artifact_type;
  const char* location = nullptr;
  VLCACHE_RETURN_IF_TRITON_ERROR(TRITONBACKEND_ModelRepository(model, &artifact_type, &location));
  if (artifact_type != TRITONBACKEND_ARTIFACT_FILESYSTEM) {
    return TRITONSERVER_ErrorNew(TRITONSERVER_ERROR_UNSUPPORTED,
                                 "the vlcache backend needs a model repository on a filesystem");
  }
  status = ReadModelParameters(config, location, &s->parameters_);
  if (!status.ok()) return ToTritonError(Status::Error(prefix + status.message));

  const EngineConfig& engine = s->parameters_.engine;
  VLCACHE_LOG_INFO("vlcache model '" + s->name_ + "': checkpoint " + engine.model_dir +
                   ", default policy " + engine.default_policy + " keep ratio " +
                   std::to_string(engine.default_keep_ratio) + ", KV pool " +
                   std::to_string(engine.kv_pool_bytes) + " bytes, max batch " +
                   std::to_string(engine.max_batch));
  *state = s.release();
  return nullptr;
}

}  // namespace triton
}  // namespace vlcache

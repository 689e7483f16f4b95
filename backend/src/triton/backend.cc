// The C entry points Triton looks up in libtriton_vlcache.so, in the order
// Triton calls them. Each only converts between Triton's handles and our
// state objects; the work is in ModelState and InstanceState.
#include <memory>

#include "triton/instance_state.h"
#include "triton/metrics.h"
#include "triton/model_state.h"
#include "triton/triton_utils.h"

namespace vlcache {
namespace triton {
namespace {

// Process-wide backend state: the metric families every instance's metrics
// belong to (a family name may be registered once per process).
struct BackendState {
  std::unique_ptr<MetricFamilies> families;
};

}  // namespace

extern "C" {

// Triton calls TRITONBACKEND_Initialize once, when it loads the library for
// the first model that names backend "vlcache".
TRITONSERVER_Error* TRITONBACKEND_Initialize(TRITONBACKEND_Backend* backend) {
  uint32_t major = 0, minor = 0;
  VLCACHE_RETURN_IF_TRITON_ERROR(TRITONBACKEND_ApiVersion(&major, &minor));
  if (major != TRITONBACKEND_API_VERSION_MAJOR || minor < TRITONBACKEND_API_VERSION_MINOR) {
    return TRITONSERVER_ErrorNew(
        TRITONSERVER_ERROR_UNSUPPORTED,
        ("the vlcache backend was built for Triton backend API " +
         std::to_string(TRITONBACKEND_API_VERSION_MAJOR) + "." +
         std::to_string(TRITONBACKEND_API_VERSION_MINOR) + ", the server speaks " +
         std::to_string(major) + "." + std::to_string(minor))
            .c_str());
  }
  auto state = std::make_unique<BackendState>();
  state->families = std::make_unique<MetricFamilies>();
  VLCACHE_RETURN_IF_TRITON_ERROR(TRITONBACKEND_BackendSetState(backend, state.release()));
  VLCACHE_LOG_INFO("vlcache backend loaded (Triton backend API " + std::to_string(major) + "." +
                   std::to_string(minor) + ")");
  return nullptr;
}

// Triton calls TRITONBACKEND_ModelInitialize when it loads a model (a version
// of one) served by this backend, before creating its instances.
TRITONSERVER_Error* TRITONBACKEND_ModelInitialize(TRITONBACKEND_Model* model) {
  TRITONBACKEND_Backend* backend = nullptr;
  VLCACHE_RETURN_IF_TRITON_ERROR(TRITONBACKEND_ModelBackend(model, &backend));
  void* backend_state = nullptr;
  VLCACHE_RETURN_IF_TRITON_ERROR(TRITONBACKEND_BackendState(backend, &backend_state));
  MetricFamilies* families = static_cast<BackendState*>(backend_state)->families.get();
  ModelState* state = nullptr;
  VLCACHE_RETURN_IF_TRITON_ERROR(ModelState::Create(model, families, &state));
  TRITONSERVER_Error* err = TRITONBACKEND_ModelSetState(model, state);
  if (err != nullptr) delete state;
  return err;
}

// Triton calls TRITONBACKEND_ModelInstanceInitialize for each instance of
// instance_group, after the model is initialized.
TRITONSERVER_Error* TRITONBACKEND_ModelInstanceInitialize(TRITONBACKEND_ModelInstance* instance) {
  TRITONBACKEND_Model* model = nullptr;
  VLCACHE_RETURN_IF_TRITON_ERROR(TRITONBACKEND_ModelInstanceModel(instance, &model));
  void* model_state = nullptr;
  VLCACHE_RETURN_IF_TRITON_ERROR(TRITONBACKEND_ModelState(model, &model_state));
  InstanceState* state = nullptr;
  VLCACHE_RETURN_IF_TRITON_ERROR(
      InstanceState::Create(static_cast<ModelState*>(model_state), instance, &state));
  TRITONSERVER_Error* err = TRITONBACKEND_ModelInstanceSetState(instance, state);
  if (err != nullptr) delete state;
  return err;
}

// Triton calls TRITONBACKEND_ModelInstanceExecute with requests for this
// instance. It returns once they are queued in the engine; responses follow
// from the instance's response thread. Returning nullptr hands every request
// to us, so failures are reported per request, never for the whole batch.
TRITONSERVER_Error* TRITONBACKEND_ModelInstanceExecute(TRITONBACKEND_ModelInstance* instance,
                                                       TRITONBACKEND_Request** requests,
                                                       const uint32_t request_count) {
  void* state = nullptr;
  VLCACHE_RETURN_IF_TRITON_ERROR(TRITONBACKEND_ModelInstanceState(instance, &state));
  static_cast<InstanceState*>(state)->Execute(requests, request_count);
  return nullptr;
}

// Triton calls TRITONBACKEND_ModelInstanceFinalize when it unloads an
// instance: live sequences are cancelled and finished, then the engine freed.
TRITONSERVER_Error* TRITONBACKEND_ModelInstanceFinalize(TRITONBACKEND_ModelInstance* instance) {
  void* state = nullptr;
  VLCACHE_RETURN_IF_TRITON_ERROR(TRITONBACKEND_ModelInstanceState(instance, &state));
  delete static_cast<InstanceState*>(state);
  return nullptr;
}

// Triton calls TRITONBACKEND_ModelFinalize after all of a model's instances
// are finalized.
TRITONSERVER_Error* TRITONBACKEND_ModelFinalize(TRITONBACKEND_Model* model) {
  void* state = nullptr;
  VLCACHE_RETURN_IF_TRITON_ERROR(TRITONBACKEND_ModelState(model, &state));
  delete static_cast<ModelState*>(state);
  return nullptr;
}

// Triton calls TRITONBACKEND_Finalize when it unloads the library, after
// every model using it is finalized (so no metric of a family is left).
TRITONSERVER_Error* TRITONBACKEND_Finalize(TRITONBACKEND_Backend* backend) {
  void* state = nullptr;
  VLCACHE_RETURN_IF_TRITON_ERROR(TRITONBACKEND_BackendState(backend, &state));
  delete static_cast<BackendState*>(state);
  return nullptr;
}

}  // extern "C"

}  // namespace triton
}  // namespace vlcache

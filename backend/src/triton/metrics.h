// The backend's own Prometheus metrics, served by Triton on its metrics port
// beside nv_inference_*: the KV pool and the engine's queues per model
// instance, and finished sequences by reason. Creating them is best effort:
// a server started with metrics off still serves requests.
#pragma once

#include <string>

#include "engine/engine.h"
#include "triton/core/tritonserver.h"

namespace vlcache {
namespace triton {

// Families are process-wide (one per name); created at backend load.
class MetricFamilies {
 public:
  MetricFamilies();
  ~MetricFamilies();
  TRITONSERVER_MetricFamily* pool_capacity = nullptr;
  TRITONSERVER_MetricFamily* pool_free = nullptr;
  TRITONSERVER_MetricFamily* running = nullptr;
  TRITONSERVER_MetricFamily* waiting = nullptr;
  TRITONSERVER_MetricFamily* finished = nullptr;
};

// One model instance's metrics, labelled model, version and instance.
class InstanceMetrics {
 public:
  InstanceMetrics(MetricFamilies* families, const std::string& model, int64_t version,
                  const std::string& instance);
  ~InstanceMetrics();
  void Update(const EngineMetrics& metrics);
  void CountFinished(FinishReason reason);

 private:
  TRITONSERVER_Metric* pool_capacity_ = nullptr;
  TRITONSERVER_Metric* pool_free_ = nullptr;
  TRITONSERVER_Metric* running_ = nullptr;
  TRITONSERVER_Metric* waiting_ = nullptr;
  TRITONSERVER_Metric* finished_[4] = {nullptr, nullptr, nullptr, nullptr};
};

}  // namespace triton
}  // namespace vlcache

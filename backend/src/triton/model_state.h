// Per-model state: the config.pbtxt checked once against the contract and the
// parameters turned into an EngineConfig. Shared by the model's instances.
#pragma once

#include <string>

#include "triton/metrics.h"
#include "triton/model_config.h"
#include "triton/triton_utils.h"

namespace vlcache {
namespace triton {

class ModelState {
 public:
  static TRITONSERVER_Error* Create(TRITONBACKEND_Model* model, MetricFamilies* families,
                                    ModelState** state);

  TRITONBACKEND_Model* model() const { return model_; }
  const std::string& name() const { return name_; }
  int64_t version() const { return version_; }
  const ModelParameters& parameters() const { return parameters_; }
  MetricFamilies* metric_families() const { return families_; }

 private:
  ModelState() = default;

  TRITONBACKEND_Model* model_ = nullptr;
  std::string name_;
  int64_t version_ = 0;
  ModelParameters parameters_;
  MetricFamilies* families_ = nullptr;
};

}  // namespace triton
}  // namespace vlcache

#include "triton/metrics.h"

#include <vector>

#include "triton/triton_utils.h"

namespace vlcache {
namespace triton {
namespace {

TRITONSERVER_MetricFamily* NewFamily(TRITONSERVER_MetricKind kind, const char* name,
                                     const char* help) {
  TRITONSERVER_MetricFamily* family = nullptr;
  TRITONSERVER_Error* err = TRITONSERVER_MetricFamilyNew(&family, kind, name, help);
  if (err != nullptr) {
    LogIfError(err, name);
    return nullptr;
  }
  return family;
}

TRITONSERVER_Metric* NewMetric(TRITONSERVER_MetricFamily* family,
                               const std::vector<std::pair<std::string, std::string>>& labels) {
  if (family == nullptr) return nullptr;
  std::vector<const TRITONSERVER_Parameter*> params;
  for (const auto& [key, value] : labels) {
    params.push_back(
        TRITONSERVER_ParameterNew(key.c_str(), TRITONSERVER_PARAMETER_STRING, value.c_str()));
  }
  TRITONSERVER_Metric* metric = nullptr;
  TRITONSERVER_Error* err = TRITONSERVER_MetricNew(&metric, family, params.data(), params.size());
  for (const TRITONSERVER_Parameter* p : params) {
    TRITONSERVER_ParameterDelete(const_cast<TRITONSERVER_Parameter*>(p));
  }
  if (err != nullptr) {
    LogIfError(err, "creating a vlcache metric");
    return nullptr;
  }
  return metric;
}

void DeleteMetric(TRITONSERVER_Metric* metric) {
  if (metric != nullptr) LogIfError(TRITONSERVER_MetricDelete(metric), "deleting a metric");
}

void DeleteFamily(TRITONSERVER_MetricFamily* family) {
  if (family != nullptr) {
    LogIfError(TRITONSERVER_MetricFamilyDelete(family), "deleting a metric family");
  }
}

void Set(TRITONSERVER_Metric* metric, double value) {
  if (metric != nullptr) LogIfError(TRITONSERVER_MetricSet(metric, value), "setting a metric");
}

}  // namespace

MetricFamilies::MetricFamilies() {
  pool_capacity = NewFamily(TRITONSERVER_METRIC_KIND_GAUGE, "vlcache_kv_pool_capacity_bytes",
                            "Bytes of the model instance's KV block pool");
  pool_free = NewFamily(TRITONSERVER_METRIC_KIND_GAUGE, "vlcache_kv_pool_free_bytes",
                        "Free bytes of the model instance's KV block pool");
  running = NewFamily(TRITONSERVER_METRIC_KIND_GAUGE, "vlcache_sequences_running",
                      "Sequences holding KV blocks and decoding");
  waiting = NewFamily(TRITONSERVER_METRIC_KIND_GAUGE, "vlcache_sequences_waiting",
                      "Sequences queued for admission");
  finished = NewFamily(TRITONSERVER_METRIC_KIND_COUNTER, "vlcache_sequences_finished_total",
                       "Sequences finished, by finish reason");
}

MetricFamilies::~MetricFamilies() {
  DeleteFamily(pool_capacity);
  DeleteFamily(pool_free);
  DeleteFamily(running);
  DeleteFamily(waiting);
  DeleteFamily(finished);
}

InstanceMetrics::InstanceMetrics(MetricFamilies* families, const std::string& model,
                                 int64_t version, const std::string& instance) {
  if (families == nullptr) return;
  const std::vector<std::pair<std::string, std::string>> labels = {
      {"model", model}, {"version", std::to_string(version)}, {"instance", instance}};
  pool_capacity_ = NewMetric(families->pool_capacity, labels);
  pool_free_ = NewMetric(families->pool_free, labels);
  running_ = NewMetric(families->running, labels);
  waiting_ = NewMetric(families->waiting, labels);
  for (FinishReason reason : {FinishReason::kStop, FinishReason::kLength,
                              FinishReason::kCancelled, FinishReason::kError}) {
    auto with_reason = labels;
    with_reason.emplace_back("reason", FinishReasonName(reason));
    finished_[static_cast<int>(reason)] = NewMetric(families->finished, with_reason);
  }
}

InstanceMetrics::~InstanceMetrics() {
  DeleteMetric(pool_capacity_);
  DeleteMetric(pool_free_);
  DeleteMetric(running_);
  DeleteMetric(waiting_);
  for (TRITONSERVER_Metric* m : finished_) DeleteMetric(m);
}

void InstanceMetrics::Update(const EngineMetrics& metrics) {
  Set(pool_capacity_, static_cast<double>(metrics.kv_pool_capacity_bytes));
  Set(pool_free_, static_cast<double>(metrics.kv_pool_free_bytes));
  Set(running_, metrics.sequences_running);
  Set(waiting_, metrics.sequences_waiting);
}

void InstanceMetrics::CountFinished(FinishReason reason) {
  TRITONSERVER_Metric* metric = finished_[static_cast<int>(reason)];
  if (metric != nullptr) LogIfError(TRITONSERVER_MetricIncrement(metric, 1), "counting a finish");
}

}  // namespace triton
}  // namespace vlcache

#include "triton/instance_state.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include <nlohmann/json.hpp>

#include "triton/request_parser.h"

namespace vlcache {
namespace triton {
namespace {

// Triton's statistics and traces use steady-clock nanoseconds.
uint64_t NowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

DataType FromTriton(TRITONSERVER_DataType type) {
  switch (type) {
    case TRITONSERVER_TYPE_BOOL: return DataType::kBool;
    case TRITONSERVER_TYPE_UINT8: return DataType::kUint8;
    case TRITONSERVER_TYPE_INT32: return DataType::kInt32;
    case TRITONSERVER_TYPE_UINT64: return DataType::kUint64;
    case TRITONSERVER_TYPE_FP32: return DataType::kFp32;
    case TRITONSERVER_TYPE_BYTES: return DataType::kBytes;
    default: return DataType::kOther;
  }
}

// Reads a request's input tensors into host memory.
class TritonInputSource : public InputSource {
 public:
  explicit TritonInputSource(TRITONBACKEND_Request* request) : request_(request) {}

  Status Get(const std::string& name, bool* present, InputTensor* tensor) override {
    TRITONBACKEND_Input* input = nullptr;
    TRITONSERVER_Error* err = TRITONBACKEND_RequestInput(request_, name.c_str(), &input);
    if (err != nullptr) {  // the only failure for a declared input: not sent
      TRITONSERVER_ErrorDelete(err);
      *present = false;
      return Status::Ok();
    }
    *present = true;
    TRITONSERVER_DataType type;
    const int64_t* shape = nullptr;
    uint32_t dims = 0;
    uint64_t byte_size = 0;
    uint32_t buffers = 0;
    if (!Check(TRITONBACKEND_InputProperties(input, nullptr, &type, &shape, &dims, &byte_size,
                                             &buffers))) {
      return Status::Error(last_error_);
    }
    tensor->type = FromTriton(type);
    tensor->type_name = TRITONSERVER_DataTypeString(type);
    tensor->shape.assign(shape, shape + dims);
    tensor->data.clear();
    tensor->data.reserve(byte_size);
    for (uint32_t i = 0; i < buffers; ++i) {
      const void* buffer = nullptr;
      uint64_t size = 0;
      TRITONSERVER_MemoryType memory_type = TRITONSERVER_MEMORY_CPU;
      int64_t memory_id = 0;
      if (!Check(TRITONBACKEND_InputBuffer(input, i, &buffer, &size, &memory_type, &memory_id))) {
        return Status::Error(last_error_);
      }
      if (memory_type == TRITONSERVER_MEMORY_GPU) {
        return Status::Error("is in GPU memory; send it in system memory");
      }
      tensor->data.append(static_cast<const char*>(buffer), size);
    }
    return Status::Ok();
  }

 private:
  bool Check(TRITONSERVER_Error* err) {
    if (err == nullptr) return true;
    last_error_ = TRITONSERVER_ErrorMessage(err);
    TRITONSERVER_ErrorDelete(err);
    return false;
  }

  TRITONBACKEND_Request* request_;
  std::string last_error_;
};

// Adds one output tensor and copies data into it.
TRITONSERVER_Error* AddOutput(TRITONBACKEND_Response* response, const char* name,
                              TRITONSERVER_DataType type, const std::vector<int64_t>& shape,
                              const void* data, size_t size) {
  TRITONBACKEND_Output* output = nullptr;
  VLCACHE_RETURN_IF_TRITON_ERROR(
      TRITONBACKEND_ResponseOutput(response, &output, name, type, shape.data(), shape.size()));
  void* buffer = nullptr;
  TRITONSERVER_MemoryType memory_type = TRITONSERVER_MEMORY_CPU;
  int64_t memory_id = 0;
  VLCACHE_RETURN_IF_TRITON_ERROR(
      TRITONBACKEND_OutputBuffer(output, &buffer, size, &memory_type, &memory_id));
  if (memory_type == TRITONSERVER_MEMORY_GPU) {
    return TRITONSERVER_ErrorNew(TRITONSERVER_ERROR_INTERNAL,
                                 "Triton gave a GPU output buffer to a CPU backend");
  }
  if (size > 0) std::memcpy(buffer, data, size);
  return nullptr;
}

TRITONSERVER_Error* AddTokens(TRITONBACKEND_Response* response,
                              const std::vector<int32_t>& tokens) {
  return AddOutput(response, kOutputIds, TRITONSERVER_TYPE_INT32,
                   {static_cast<int64_t>(tokens.size())}, tokens.data(),
                   tokens.size() * sizeof(int32_t));
}

TRITONSERVER_Error* AddString(TRITONBACKEND_Response* response, const char* name,
                              const std::string& value) {
  const std::string encoded = EncodeBytesElement(value);
  return AddOutput(response, name, TRITONSERVER_TYPE_BYTES, {1}, encoded.data(), encoded.size());
}

bool FactoryCancelled(TRITONBACKEND_ResponseFactory* factory, TRITONBACKEND_Request* request) {
  bool cancelled = false;
  TRITONSERVER_Error* err = TRITONBACKEND_ResponseFactoryIsCancelled(factory, &cancelled);
  if (err != nullptr) {
    TRITONSERVER_ErrorDelete(err);
    cancelled = false;
  }
  if (!cancelled) {
    err = TRITONBACKEND_RequestIsCancelled(request, &cancelled);
    if (err != nullptr) {
      TRITONSERVER_ErrorDelete(err);
      cancelled = false;
    }
  }
  return cancelled;
}

}  // namespace

TRITONSERVER_Error* InstanceState::Create(ModelState* model_state,
                                          TRITONBACKEND_ModelInstance* instance,
                                          InstanceState** state) {
  std::unique_ptr<InstanceState> s(new InstanceState(model_state, instance));
  const char* name = nullptr;
  VLCACHE_RETURN_IF_TRITON_ERROR(TRITONBACKEND_ModelInstanceName(instance, &name));
  s->name_ = name;
  TRITONSERVER_InstanceGroupKind kind;
  VLCACHE_RETURN_IF_TRITON_ERROR(TRITONBACKEND_ModelInstanceKind(instance, &kind));

  EngineConfig config = model_state->parameters().engine;
  if (kind == TRITONSERVER_INSTANCEGROUPKIND_GPU && config.device == "cpu") config.device = "cuda";
  Status status = Engine::Create(config, &s->engine_);
  if (!status.ok()) {
    return TRITONSERVER_ErrorNew(
        TRITONSERVER_ERROR_INTERNAL,
        ("instance '" + s->name_ + "': the engine failed to load: " + status.message).c_str());
  }
  s->metrics_ = std::make_unique<InstanceMetrics>(model_state->metric_families(),
                                                  model_state->name(), model_state->version(),
                                                  s->name_);
  s->metrics_->Update(s->engine_->Metrics());
  ServingLoopOptions options;
  options.idle_wait_us = model_state->parameters().idle_wait_us;
  options.shutdown_drain_ms = model_state->parameters().shutdown_drain_ms;
  options.step_delay_us = model_state->parameters().step_delay_us;
  s->loop_ = std::make_unique<ServingLoop>(s->engine_.get(), s.get(), options);
  s->loop_->Start();
  const ModelInfo& info = s->engine_->Info();
  VLCACHE_LOG_INFO("vlcache instance '" + s->name_ + "' ready on " + config.device +
                   ": context " + std::to_string(info.max_context) + ", " +
                   std::to_string(info.image_tokens_per_image) + " tokens per " +
                   std::to_string(info.image_height) + "x" + std::to_string(info.image_width) +
                   " image");
  *state = s.release();
  return nullptr;
}

InstanceState::~InstanceState() {
  // Stops the threads before the engine and the metrics they use go away.
  if (loop_) loop_->Stop();
  loop_.reset();
  metrics_.reset();
  engine_.reset();
}

void InstanceState::Refuse(TRITONBACKEND_Request* request, TRITONBACKEND_ResponseFactory* factory,
                           const std::string& message, uint64_t start_ns) {
  // Statistics first: a client that sees the error response must also see it
  // counted in Triton's metrics and statistics.
  const uint64_t end_ns = NowNs();
  LogIfError(TRITONBACKEND_ModelInstanceReportStatistics(instance_, request, false, start_ns,
                                                         start_ns, end_ns, end_ns),
             "reporting statistics");
  TRITONSERVER_Error* error = TRITONSERVER_ErrorNew(TRITONSERVER_ERROR_INVALID_ARG, message.c_str());
  TRITONBACKEND_Response* response = nullptr;
  TRITONSERVER_Error* err = factory != nullptr
                                ? TRITONBACKEND_ResponseNewFromFactory(&response, factory)
                                : TRITONBACKEND_ResponseNew(&response, request);
  if (err == nullptr) {
    LogIfError(TRITONBACKEND_ResponseSend(response, TRITONSERVER_RESPONSE_COMPLETE_FINAL, error),
               "sending an error response");
  } else {
    LogIfError(err, "creating an error response");
  }
  TRITONSERVER_ErrorDelete(error);
  if (factory != nullptr) LogIfError(TRITONBACKEND_ResponseFactoryDelete(factory), "factory delete");
  LogIfError(TRITONBACKEND_RequestRelease(request, TRITONSERVER_REQUEST_RELEASE_ALL),
             "releasing a request");
}

void InstanceState::Execute(TRITONBACKEND_Request** requests, uint32_t count) {
  const uint64_t exec_start_ns = NowNs();
  for (uint32_t r = 0; r < count; ++r) {
    TRITONBACKEND_Request* request = requests[r];
    const uint64_t start_ns = NowNs();
    TRITONBACKEND_ResponseFactory* factory = nullptr;
    TRITONSERVER_Error* err = TRITONBACKEND_ResponseFactoryNew(&factory, request);
    if (err != nullptr) {
      const std::string message = TRITONSERVER_ErrorMessage(err);
      TRITONSERVER_ErrorDelete(err);
      Refuse(request, nullptr, "cannot create a response factory: " + message, start_ns);
      continue;
    }

    GenerationRequest generation;
    TritonInputSource source(request);
    Status status = ParseGenerationRequest(source, &generation);
    if (!status.ok()) {
      Refuse(request, factory, status.message, start_ns);
      continue;
    }

    const uint64_t seq_id = next_seq_id_.fetch_add(1);
    {
      std::lock_guard<std::mutex> lock(mu_);
      sequences_[seq_id] = Sequence{request, factory, start_ns};
    }
    status = loop_->Submit(seq_id, std::move(generation),
                           [factory, request] { return FactoryCancelled(factory, request); });
    if (!status.ok()) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        sequences_.erase(seq_id);
      }
      Refuse(request, factory, status.message, start_ns);
    }
  }
  const uint64_t exec_end_ns = NowNs();
  LogIfError(TRITONBACKEND_ModelInstanceReportBatchStatistics(instance_, count, exec_start_ns,
                                                              exec_start_ns, exec_end_ns,
                                                              exec_end_ns),
             "reporting batch statistics");
}

void InstanceState::SendTokens(uint64_t seq_id, const std::vector<int32_t>& tokens) {
  SendTokenResponse(seq_id, tokens, nullptr);
}

void InstanceState::SendFirstTokens(uint64_t seq_id, const std::vector<int32_t>& tokens,
                                    const SequenceStats& stats) {
  const std::string stats_json = stats.ToJson();
  SendTokenResponse(seq_id, tokens, &stats_json);
}

void InstanceState::SendTokenResponse(uint64_t seq_id, const std::vector<int32_t>& tokens,
                                      const std::string* stats_json) {
  TRITONBACKEND_ResponseFactory* factory = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sequences_.find(seq_id);
    if (it == sequences_.end()) return;
    factory = it->second.factory;
  }
  TRITONBACKEND_Response* response = nullptr;
  TRITONSERVER_Error* err = TRITONBACKEND_ResponseNewFromFactory(&response, factory);
  if (err == nullptr) {
    err = AddTokens(response, tokens);
    if (err == nullptr && stats_json != nullptr) err = AddString(response, kStats, *stats_json);
    if (err == nullptr) {
      err = TRITONBACKEND_ResponseSend(response, 0, nullptr);
    } else {
      LogIfError(TRITONBACKEND_ResponseDelete(response), "deleting a response");
    }
  }
  // A client that went away makes sends fail; the sequence is cancelled by the
  // serving loop's poll, so here it is only logged.
  LogIfError(err, "sending tokens");
}

void InstanceState::SendFinal(uint64_t seq_id, FinishReason reason, const SequenceStats& stats,
                              const std::string& error) {
  Sequence sequence;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sequences_.find(seq_id);
    if (it == sequences_.end()) return;
    sequence = it->second;
    sequences_.erase(it);
  }
  const uint64_t end_ns = NowNs();
  std::string stats_json = stats.ToJson();
  if (reason == FinishReason::kError) {
    // The message travels in the stats so the final response keeps its shape.
    nlohmann::json parsed = nlohmann::json::parse(stats_json, nullptr, false);
    if (parsed.is_discarded() || !parsed.is_object()) parsed = nlohmann::json::object();
    parsed["error"] = error;
    stats_json = parsed.dump();
  }

  // Metrics, trace activities and statistics before the final response, so that
  // a client that has seen the end of its stream also sees it counted.
  if (metrics_) metrics_->CountFinished(reason);
  ReportPhases(sequence, stats, end_ns);
  const uint64_t compute_start_ns =
      sequence.submit_ns + static_cast<uint64_t>(stats.queue_ms * 1e6);
  LogIfError(TRITONBACKEND_ModelInstanceReportStatistics(
                 instance_, sequence.request, reason != FinishReason::kError, sequence.submit_ns,
                 std::min(compute_start_ns, end_ns), end_ns, end_ns),
             "reporting statistics");

  TRITONBACKEND_Response* response = nullptr;
  TRITONSERVER_Error* err = TRITONBACKEND_ResponseNewFromFactory(&response, sequence.factory);
  if (err == nullptr) {
    err = AddTokens(response, {});
    if (err == nullptr) err = AddString(response, kFinishReason, FinishReasonName(reason));
    if (err == nullptr) err = AddString(response, kStats, stats_json);
    if (err == nullptr) {
      err = TRITONBACKEND_ResponseSend(response, TRITONSERVER_RESPONSE_COMPLETE_FINAL, nullptr);
    } else {
      LogIfError(TRITONBACKEND_ResponseDelete(response), "deleting a response");
    }
  }
  if (err != nullptr) {
    LogIfError(err, "sending the final response");
    // The request still needs its one final flag.
    LogIfError(TRITONBACKEND_ResponseFactorySendFlags(sequence.factory,
                                                      TRITONSERVER_RESPONSE_COMPLETE_FINAL),
               "sending the final flag");
  }
  LogIfError(TRITONBACKEND_ResponseFactoryDelete(sequence.factory), "deleting a response factory");
  LogIfError(TRITONBACKEND_RequestRelease(sequence.request, TRITONSERVER_REQUEST_RELEASE_ALL),
             "releasing a request");
}

// Triton's trace (when tracing is on for this request) gets the engine's
// phases as custom activities. The engine reports durations, not instants, so
// the instants are laid end to end from the submit time: queue, prefill,
// compress, then decode up to the final response. Every X_START has its X_END:
// in OpenTelemetry mode Triton keeps a stack of open spans per trace, and an
// unclosed one would take the REQUEST_END meant for the model's span (which then
// never ends and is never exported).
void InstanceState::ReportPhases(const Sequence& sequence, const SequenceStats& stats,
                                 uint64_t end_ns) {
  TRITONSERVER_InferenceTrace* trace = nullptr;
  TRITONSERVER_Error* err = TRITONBACKEND_RequestTrace(sequence.request, &trace);
  if (err != nullptr) {
    TRITONSERVER_ErrorDelete(err);
    return;
  }
  if (trace == nullptr) return;
  const auto ns = [](double ms) { return static_cast<uint64_t>(ms * 1e6); };
  uint64_t t = sequence.submit_ns;
  const std::pair<const char*, uint64_t> activities[] = {
      {"VLCACHE_QUEUE_START", t},
      {"VLCACHE_QUEUE_END", t += ns(stats.queue_ms)},
      {"VLCACHE_PREFILL_START", t},
      {"VLCACHE_PREFILL_END", t += ns(stats.prefill_ms)},
      {"VLCACHE_COMPRESS_START", t},
      {"VLCACHE_COMPRESS_END", t += ns(stats.compress_ms)},
      {"VLCACHE_DECODE_START", t},
      {"VLCACHE_DECODE_END", std::max(t, end_ns)},
  };
  for (const auto& [name, timestamp] : activities) {
    LogIfError(TRITONSERVER_InferenceTraceReportActivity(trace, std::min(timestamp, end_ns), name),
               "reporting a trace activity");
  }
}

void InstanceState::OnMetrics(const EngineMetrics& metrics) {
  if (metrics_) metrics_->Update(metrics);
}

}  // namespace triton
}  // namespace vlcache

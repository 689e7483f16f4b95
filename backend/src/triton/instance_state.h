// Per-instance state: owns the Engine and the ServingLoop that runs it, turns
// Triton requests into engine sequences (Execute only validates and enqueues)
// and sends each sequence's responses through its response factory.
//
// A request is held (not released) until its final response is sent, so that
// Triton's cancellation, per-request statistics and trace stay attached to it.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "triton/metrics.h"
#include "triton/model_state.h"
#include "triton/serving_loop.h"
#include "triton/triton_utils.h"

namespace vlcache {
namespace triton {

class InstanceState : public ResponseSink {
 public:
  static TRITONSERVER_Error* Create(ModelState* model_state, TRITONBACKEND_ModelInstance* instance,
                                    InstanceState** state);
  ~InstanceState() override;

  // Takes ownership of every request; never fails the batch for one request.
  void Execute(TRITONBACKEND_Request** requests, uint32_t count);

  void SendTokens(uint64_t seq_id, const std::vector<int32_t>& tokens) override;
  void SendFirstTokens(uint64_t seq_id, const std::vector<int32_t>& tokens,
                       const SequenceStats& stats) override;
  void SendFinal(uint64_t seq_id, FinishReason reason, const SequenceStats& stats,
                 const std::string& error) override;
  void OnMetrics(const EngineMetrics& metrics) override;

 private:
  struct Sequence {
    TRITONBACKEND_Request* request = nullptr;
    TRITONBACKEND_ResponseFactory* factory = nullptr;
    uint64_t submit_ns = 0;
  };

  InstanceState(ModelState* model_state, TRITONBACKEND_ModelInstance* instance)
      : model_state_(model_state), instance_(instance) {}

  // Ends a request the engine will not serve with an error response naming
  // the problem, and releases it.
  void Refuse(TRITONBACKEND_Request* request, TRITONBACKEND_ResponseFactory* factory,
              const std::string& message, uint64_t start_ns);
  // A non-final response with tokens and, when stats_json is given, `stats`.
  void SendTokenResponse(uint64_t seq_id, const std::vector<int32_t>& tokens,
                         const std::string* stats_json);
  void ReportPhases(const Sequence& sequence, const SequenceStats& stats, uint64_t end_ns);

  ModelState* model_state_;
  TRITONBACKEND_ModelInstance* instance_;
  std::string name_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<InstanceMetrics> metrics_;
  std::unique_ptr<ServingLoop> loop_;

  std::mutex mu_;
  std::unordered_map<uint64_t, Sequence> sequences_;
  std::atomic<uint64_t> next_seq_id_{1};
};

}  // namespace triton
}  // namespace vlcache

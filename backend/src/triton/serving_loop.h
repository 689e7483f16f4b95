// Runs an Engine for one model instance: one thread loops Engine::Step, one
// thread delivers what the engine produced to a ResponseSink. Triton's Execute
// only calls Submit, so it returns at once and requests from many clients meet
// in the engine's continuous batching.
//
// Why two threads: engine callbacks run inside Step, so sending responses there
// would stall every sequence's decoding behind network writes. Callbacks only
// queue events; the response thread sends them in the order they were made, so
// a sequence's token responses always precede its final one.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engine/engine.h"

namespace vlcache {
namespace triton {

// Receives a sequence's output on the response thread.
class ResponseSink {
 public:
  virtual ~ResponseSink() = default;
  virtual void SendTokens(uint64_t seq_id, const std::vector<int32_t>& tokens) = 0;
  // The sequence's first tokens, with the stats as known right after
  // compression (KV figures final), so a client that stops the stream early
  // still has them. By default they go out as plain tokens.
  virtual void SendFirstTokens(uint64_t seq_id, const std::vector<int32_t>& tokens,
                               const SequenceStats& stats) {
    (void)stats;
    SendTokens(seq_id, tokens);
  }
  // Exactly once per sequence that Submit accepted, after all its SendTokens.
  virtual void SendFinal(uint64_t seq_id, FinishReason reason, const SequenceStats& stats,
                         const std::string& error) = 0;
  // On the serving thread after every step (cheap: for gauges).
  virtual void OnMetrics(const EngineMetrics& metrics) { (void)metrics; }
};

struct ServingLoopOptions {
  int idle_wait_us = 2000;        // poll interval while live sequences wait
  int shutdown_drain_ms = 10000;  // at Stop, how long cancelled sequences may take
  int step_delay_us = 0;          // pause after each step that did work (tests only)
};

class ServingLoop {
 public:
  ServingLoop(Engine* engine, ResponseSink* sink, ServingLoopOptions options);
  ~ServingLoop();  // Stop()

  void Start();

  // Queues a sequence. is_cancelled is polled from the serving thread before
  // every step; once it returns true the engine cancels the sequence and its
  // final reason is kCancelled. An error means the engine refused the request
  // and the sink will hear nothing about seq_id.
  Status Submit(uint64_t seq_id, GenerationRequest request, std::function<bool()> is_cancelled);

  // Cancels every live sequence, lets the engine finish them (bounded by
  // shutdown_drain_ms; sequences still live after that get a kError final),
  // delivers all pending events and joins both threads. Idempotent.
  void Stop();

  size_t LiveSequences() const;

 private:
  struct Live {
    std::function<bool()> is_cancelled;
    bool cancel_sent = false;
  };
  struct Event {
    uint64_t seq_id = 0;
    bool final = false;
    bool first = false;  // token event that carries the post-compression stats
    std::vector<int32_t> tokens;
    FinishReason reason = FinishReason::kStop;
    SequenceStats stats;
    std::string error;
  };

  void ServeLoop();
  void ResponseLoop();
  void PushEvent(Event event);
  std::vector<uint64_t> CollectCancellations(bool cancel_all);

  Engine* engine_;
  ResponseSink* sink_;
  ServingLoopOptions options_;

  mutable std::mutex mu_;  // live_, wake_, stopping_
  std::condition_variable wake_cv_;
  std::unordered_map<uint64_t, Live> live_;
  bool wake_ = false;
  bool stopping_ = false;

  std::mutex events_mu_;
  std::condition_variable events_cv_;
  std::deque<Event> events_;
  bool serving_done_ = false;

  std::thread serving_thread_;
  std::thread response_thread_;
  bool started_ = false;
};

}  // namespace triton
}  // namespace vlcache

#include "triton/serving_loop.h"

#include <chrono>
#include <memory>

namespace vlcache {
namespace triton {

ServingLoop::ServingLoop(Engine* engine, ResponseSink* sink, ServingLoopOptions options)
    : engine_(engine), sink_(sink), options_(options) {}

ServingLoop::~ServingLoop() { Stop(); }

void ServingLoop::Start() {
  if (started_) return;
  started_ = true;
  serving_thread_ = std::thread([this] { ServeLoop(); });
  response_thread_ = std::thread([this] { ResponseLoop(); });
}

Status ServingLoop::Submit(uint64_t seq_id, GenerationRequest request,
                           std::function<bool()> is_cancelled) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return Status::Error("the model instance is shutting down");
    if (live_.count(seq_id)) return Status::Error("duplicate sequence id");
    // Registered before the engine sees it, because its callbacks may run on
    // the serving thread before Engine::Submit even returns here.
    live_[seq_id].is_cancelled = std::move(is_cancelled);
  }
  SequenceCallbacks callbacks;
  // Both callbacks run on the serving thread, one after the other, so the
  // stats need no lock on their way from on_compressed to the first tokens.
  auto compressed = std::make_shared<std::unique_ptr<SequenceStats>>();
  callbacks.on_compressed = [compressed](const SequenceStats& stats) {
    *compressed = std::make_unique<SequenceStats>(stats);
  };
  callbacks.on_tokens = [this, seq_id, compressed](const std::vector<int32_t>& tokens) {
    Event event;
    event.seq_id = seq_id;
    event.tokens = tokens;
    if (*compressed) {
      event.first = true;
      event.stats = std::move(**compressed);
      compressed->reset();
    }
    PushEvent(std::move(event));
  };
  callbacks.on_finish = [this, seq_id](FinishReason reason, const SequenceStats& stats,
                                       const std::string& error) {
    Event event;
    event.seq_id = seq_id;
    event.final = true;
    event.reason = reason;
    event.stats = stats;
    event.error = error;
    PushEvent(std::move(event));
    std::lock_guard<std::mutex> lock(mu_);
    live_.erase(seq_id);
  };
  // Not under mu_: the engine may hold its own lock while calling callbacks
  // that take mu_, so holding mu_ here could deadlock.
  Status status = engine_->Submit(seq_id, std::move(request), std::move(callbacks));
  std::lock_guard<std::mutex> lock(mu_);
  if (!status.ok()) {
    live_.erase(seq_id);
    return status;
  }
  wake_ = true;
  wake_cv_.notify_one();
  return Status::Ok();
}

size_t ServingLoop::LiveSequences() const {
  std::lock_guard<std::mutex> lock(mu_);
  return live_.size();
}

std::vector<uint64_t> ServingLoop::CollectCancellations(bool cancel_all) {
  std::vector<uint64_t> ids;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [id, live] : live_) {
    if (live.cancel_sent) continue;
    if (cancel_all || (live.is_cancelled && live.is_cancelled())) {
      live.cancel_sent = true;
      ids.push_back(id);
    }
  }
  return ids;
}

void ServingLoop::ServeLoop() {
  using Clock = std::chrono::steady_clock;
  Clock::time_point drain_deadline{};
  bool draining = false;
  while (true) {
    bool stopping = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping = stopping_;
      if (stopping && live_.empty()) break;
    }
    if (stopping && !draining) {
      draining = true;
      drain_deadline = Clock::now() + std::chrono::milliseconds(options_.shutdown_drain_ms);
    }
    if (draining && Clock::now() >= drain_deadline) break;

    for (uint64_t id : CollectCancellations(stopping)) engine_->Cancel(id);
    const bool worked = engine_->Step();
    sink_->OnMetrics(engine_->Metrics());
    if (worked && options_.step_delay_us > 0) {
      std::unique_lock<std::mutex> lock(mu_);
      wake_cv_.wait_for(lock, std::chrono::microseconds(options_.step_delay_us),
                        [this] { return stopping_; });
    }
    if (!worked) {
      std::unique_lock<std::mutex> lock(mu_);
      const auto woken = [this] { return wake_ || stopping_; };
      if (live_.empty()) {
        // Nothing to poll: sleep until Submit or Stop, so an idle instance costs no CPU.
        wake_cv_.wait(lock, woken);
      } else {
        // Live but idle sequences (e.g. waiting for pool space) still need
        // their cancellation polled.
        wake_cv_.wait_for(lock, std::chrono::microseconds(options_.idle_wait_us), woken);
      }
      wake_ = false;
    }
  }
  // Whatever the engine did not finish in time still owes its client a final.
  std::vector<uint64_t> stranded;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& entry : live_) stranded.push_back(entry.first);
    live_.clear();
  }
  for (uint64_t id : stranded) {
    Event event;
    event.seq_id = id;
    event.final = true;
    event.reason = FinishReason::kError;
    event.error = "the model instance shut down before the sequence finished";
    PushEvent(std::move(event));
  }
  std::lock_guard<std::mutex> lock(events_mu_);
  serving_done_ = true;
  events_cv_.notify_all();
}

void ServingLoop::PushEvent(Event event) {
  std::lock_guard<std::mutex> lock(events_mu_);
  events_.push_back(std::move(event));
  events_cv_.notify_one();
}

void ServingLoop::ResponseLoop() {
  while (true) {
    Event event;
    {
      std::unique_lock<std::mutex> lock(events_mu_);
      events_cv_.wait(lock, [this] { return !events_.empty() || serving_done_; });
      if (events_.empty()) break;  // serving_done_ and nothing left to send
      event = std::move(events_.front());
      events_.pop_front();
    }
    if (event.final) {
      sink_->SendFinal(event.seq_id, event.reason, event.stats, event.error);
    } else if (event.first) {
      sink_->SendFirstTokens(event.seq_id, event.tokens, event.stats);
    } else {
      sink_->SendTokens(event.seq_id, event.tokens);
    }
  }
}

void ServingLoop::Stop() {
  if (!started_) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !serving_thread_.joinable()) return;
    stopping_ = true;
    wake_cv_.notify_all();
  }
  if (serving_thread_.joinable()) serving_thread_.join();
  if (response_thread_.joinable()) response_thread_.join();
}

}  // namespace triton
}  // namespace vlcache

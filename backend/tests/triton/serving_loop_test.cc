// The serving loop against a fake Engine (test-only): one token per step per
// running sequence, max_batch sequences at a time, callbacks called inside Step
// while the fake holds its lock, as a real engine may.
#include "triton/serving_loop.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <set>
#include <thread>

#include <gtest/gtest.h>

namespace vlcache {
namespace triton {
namespace {

class FakeEngine : public Engine {
 public:
  explicit FakeEngine(int max_batch) : max_batch_(max_batch) {}

  const ModelInfo& Info() const override { return info_; }

  Status Submit(uint64_t seq_id, GenerationRequest request, SequenceCallbacks callbacks) override {
    if (request.keep_ratio > 1.0f) return Status::Error("kv_keep_ratio: out of range");
    std::lock_guard<std::mutex> lock(mu_);
    Seq seq;
    seq.max_tokens = request.sampling.max_tokens;
    seq.first = request.input_ids.empty() ? 0 : request.input_ids[0];
    seq.callbacks = std::move(callbacks);
    waiting_.push_back(seq_id);
    seqs_[seq_id] = std::move(seq);
    return Status::Ok();
  }

  void Cancel(uint64_t seq_id) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (seqs_.count(seq_id)) seqs_[seq_id].cancelled = true;
  }

  bool Step() override {
    std::lock_guard<std::mutex> lock(mu_);
    bool worked = false;
    while (!waiting_.empty() && static_cast<int>(running_.size()) < max_batch_) {
      running_.insert(waiting_.front());
      waiting_.erase(waiting_.begin());
    }
    for (auto it = seqs_.begin(); it != seqs_.end();) {
      Seq& seq = it->second;
      const bool running = running_.count(it->first) > 0;
      if (seq.cancelled) {
        SequenceStats stats;
        stats.completion_tokens = seq.produced;
        seq.callbacks.on_finish(FinishReason::kCancelled, stats, "");
        running_.erase(it->first);
        waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), it->first), waiting_.end());
        it = seqs_.erase(it);
        worked = true;
        continue;
      }
      if (running) {
        if (seq.produced == 0 && seq.callbacks.on_compressed) {
          SequenceStats stats;
          stats.kv_tokens_kept = 10 * static_cast<int64_t>(it->first);
          seq.callbacks.on_compressed(stats);
        }
        seq.callbacks.on_tokens({seq.first + seq.produced});
        ++seq.produced;
        worked = true;
        if (seq.produced == seq.max_tokens) {
          SequenceStats stats;
          stats.completion_tokens = seq.produced;
          seq.callbacks.on_finish(FinishReason::kLength, stats, "");
          running_.erase(it->first);
          it = seqs_.erase(it);
          continue;
        }
      }
      ++it;
    }
    steps_ += worked ? 1 : 0;
    return worked;
  }

  EngineMetrics Metrics() const override {
    std::lock_guard<std::mutex> lock(mu_);
    EngineMetrics m;
    m.kv_pool_capacity_bytes = 1000;
    m.kv_pool_free_bytes = 1000 - 100 * static_cast<int64_t>(running_.size());
    m.sequences_running = static_cast<int>(running_.size());
    m.sequences_waiting = static_cast<int>(waiting_.size());
    return m;
  }

 private:
  struct Seq {
    int max_tokens = 0;
    int produced = 0;
    int32_t first = 0;
    bool cancelled = false;
    SequenceCallbacks callbacks;
  };
  mutable std::mutex mu_;
  ModelInfo info_;
  int max_batch_;
  std::map<uint64_t, Seq> seqs_;
  std::vector<uint64_t> waiting_;
  std::set<uint64_t> running_;
  int steps_ = 0;
};

// Records what the loop delivers and lets a test wait for finals.
class RecordingSink : public ResponseSink {
 public:
  void SendTokens(uint64_t seq_id, const std::vector<int32_t>& tokens) override {
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_FALSE(finals_.count(seq_id)) << "tokens after the final for " << seq_id;
    auto& t = tokens_[seq_id];
    t.insert(t.end(), tokens.begin(), tokens.end());
    ++responses_[seq_id];
  }
  void SendFirstTokens(uint64_t seq_id, const std::vector<int32_t>& tokens,
                       const SequenceStats& stats) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      EXPECT_EQ(responses_[seq_id], 0) << "early stats after the first response of " << seq_id;
      first_kv_kept_[seq_id].push_back(stats.kv_tokens_kept);
    }
    SendTokens(seq_id, tokens);
  }
  void SendFinal(uint64_t seq_id, FinishReason reason, const SequenceStats& stats,
                 const std::string& error) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++final_count_[seq_id];
    finals_[seq_id] = reason;
    completion_[seq_id] = stats.completion_tokens;
    errors_[seq_id] = error;
    cv_.notify_all();
  }
  void OnMetrics(const EngineMetrics& metrics) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++metric_updates_;
    max_running_ = std::max(max_running_, metrics.sequences_running);
    last_free_ = metrics.kv_pool_free_bytes;
  }

  bool WaitFinals(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(20), [&] { return finals_.size() >= n; });
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, std::vector<int32_t>> tokens_;
  std::map<uint64_t, int> responses_;
  std::map<uint64_t, FinishReason> finals_;
  std::map<uint64_t, int> final_count_;
  std::map<uint64_t, int> completion_;
  std::map<uint64_t, std::string> errors_;
  std::map<uint64_t, std::vector<int64_t>> first_kv_kept_;  // stats given with the first tokens
  int metric_updates_ = 0;
  int max_running_ = 0;
  int64_t last_free_ = -1;
};

GenerationRequest Request(int32_t first, int max_tokens) {
  GenerationRequest r;
  r.input_ids = {first};
  r.sampling.max_tokens = max_tokens;
  return r;
}

TEST(ServingLoopTest, StreamsEverySequenceThenOneFinal) {
  FakeEngine engine(/*max_batch=*/2);
  RecordingSink sink;
  ServingLoop loop(&engine, &sink, ServingLoopOptions{});
  // Queued before the serving thread starts, so that it cannot finish one
  // sequence before the next arrives (the batching asserted below).
  for (uint64_t id = 1; id <= 5; ++id) {
    ASSERT_TRUE(loop.Submit(id, Request(100 * id, 3 + id), [] { return false; }).ok());
  }
  loop.Start();
  ASSERT_TRUE(sink.WaitFinals(5));
  loop.Stop();
  for (uint64_t id = 1; id <= 5; ++id) {
    std::vector<int32_t> want;
    for (uint64_t k = 0; k < 3 + id; ++k) want.push_back(static_cast<int32_t>(100 * id + k));
    EXPECT_EQ(sink.tokens_[id], want) << id;
    EXPECT_EQ(sink.responses_[id], static_cast<int>(3 + id));
    EXPECT_EQ(sink.final_count_[id], 1);
    EXPECT_EQ(sink.finals_[id], FinishReason::kLength);
    // The stats of on_compressed ride on the first response only.
    EXPECT_EQ(sink.first_kv_kept_[id], std::vector<int64_t>{10 * static_cast<int64_t>(id)});
  }
  EXPECT_EQ(sink.max_running_, 2);  // the engine batched two at a time
  EXPECT_EQ(sink.last_free_, 1000);
  EXPECT_EQ(loop.LiveSequences(), 0u);
}

TEST(ServingLoopTest, RefusedRequestIsReportedToTheCallerOnly) {
  FakeEngine engine(2);
  RecordingSink sink;
  ServingLoop loop(&engine, &sink, ServingLoopOptions{});
  loop.Start();
  GenerationRequest bad = Request(1, 4);
  bad.keep_ratio = 2.0f;
  Status status = loop.Submit(7, bad, [] { return false; });
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message.find("kv_keep_ratio"), std::string::npos);
  ASSERT_TRUE(loop.Submit(8, Request(1, 2), [] { return false; }).ok());
  ASSERT_TRUE(sink.WaitFinals(1));
  loop.Stop();
  EXPECT_EQ(sink.finals_.count(7), 0u);
  EXPECT_EQ(sink.tokens_.count(7), 0u);
  EXPECT_EQ(sink.finals_[8], FinishReason::kLength);
}

TEST(ServingLoopTest, PolledCancellationStopsTheSequence) {
  FakeEngine engine(2);
  RecordingSink sink;
  ServingLoop loop(&engine, &sink, ServingLoopOptions{});
  std::atomic<bool> cancelled{false};
  loop.Start();
  ASSERT_TRUE(loop.Submit(1, Request(0, 1000000), [&] { return cancelled.load(); }).ok());
  ASSERT_TRUE(loop.Submit(2, Request(0, 5), [] { return false; }).ok());
  ASSERT_TRUE(sink.WaitFinals(1));  // sequence 2 ends while 1 keeps going
  cancelled = true;
  ASSERT_TRUE(sink.WaitFinals(2));
  loop.Stop();
  EXPECT_EQ(sink.finals_[1], FinishReason::kCancelled);
  EXPECT_EQ(sink.final_count_[1], 1);
  EXPECT_LT(sink.completion_[1], 1000000);
  EXPECT_EQ(sink.finals_[2], FinishReason::kLength);
}

TEST(ServingLoopTest, StopCancelsLiveSequencesAndStillSendsTheirFinals) {
  FakeEngine engine(1);
  RecordingSink sink;
  ServingLoop loop(&engine, &sink, ServingLoopOptions{});
  loop.Start();
  ASSERT_TRUE(loop.Submit(1, Request(0, 1000000), [] { return false; }).ok());
  ASSERT_TRUE(loop.Submit(2, Request(0, 1000000), [] { return false; }).ok());  // waits
  loop.Stop();
  ASSERT_EQ(sink.finals_.size(), 2u);
  EXPECT_EQ(sink.finals_[1], FinishReason::kCancelled);
  EXPECT_EQ(sink.finals_[2], FinishReason::kCancelled);
  EXPECT_FALSE(loop.Submit(3, Request(0, 1), [] { return false; }).ok());
}

TEST(ServingLoopTest, StepDelayPacesStepsButNeverHoldsUpStop) {
  FakeEngine engine(1);
  RecordingSink sink;
  ServingLoopOptions options;
  options.step_delay_us = 600 * 1000 * 1000;  // 10 minutes: only Stop can cut it short
  ServingLoop loop(&engine, &sink, options);
  loop.Start();
  ASSERT_TRUE(loop.Submit(1, Request(0, 1000000), [] { return false; }).ok());
  // The first step runs at once, then the loop waits out the delay.
  for (int i = 0; i < 2000; ++i) {
    {
      std::lock_guard<std::mutex> lock(sink.mu_);
      if (sink.responses_[1] > 0) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  {
    std::lock_guard<std::mutex> lock(sink.mu_);
    ASSERT_EQ(sink.responses_[1], 1);  // one step so far, and still one: the delay holds
  }
  loop.Stop();  // returns (ctest's timeout would catch a 10-minute wait)
  ASSERT_EQ(sink.finals_.size(), 1u);
  EXPECT_EQ(sink.finals_[1], FinishReason::kCancelled);
}

TEST(ServingLoopTest, SubmitFromManyThreads) {
  FakeEngine engine(4);
  RecordingSink sink;
  ServingLoop loop(&engine, &sink, ServingLoopOptions{});
  loop.Start();
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        const uint64_t id = 1 + t * 10 + i;
        EXPECT_TRUE(loop.Submit(id, Request(0, 1 + i % 3), [] { return false; }).ok());
      }
    });
  }
  for (auto& c : clients) c.join();
  ASSERT_TRUE(sink.WaitFinals(40));
  loop.Stop();
  for (const auto& [id, count] : sink.final_count_) EXPECT_EQ(count, 1) << id;
}

}  // namespace
}  // namespace triton
}  // namespace vlcache

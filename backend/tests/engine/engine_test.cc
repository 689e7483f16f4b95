// The engine end to end on the checkpoints in testdata/: policies at ratio 1,
// VL-Cache's kept fraction, pool accounting, admission after compression,
// context-first compression, request validation and seeded sampling.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <fstream>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <thread>
#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "kvcache/policy.h"
#include "png_util.h"

namespace vlcache {
namespace {

const std::string kTrained = std::string(VLCACHE_TESTDATA_DIR) + "/tiny-llava-trained";
const std::string kRandom = std::string(VLCACHE_TESTDATA_DIR) + "/tiny-llava-random";
constexpr int kBlockTokens = 16;

struct Prompt {
  std::vector<int32_t> ids;
  std::vector<Image> images;
  std::vector<int32_t> hf_greedy;
};

Prompt LoadPrompt(const std::string& dir, int index) {
  std::ifstream in(dir + "/golden.json");
  const nlohmann::json g = nlohmann::json::parse(in);
  const nlohmann::json& p = g["prompts"][index];
  Prompt out;
  out.ids = p["input_ids"].get<std::vector<int32_t>>();
  out.hf_greedy = p["hf"]["greedy_16"].get<std::vector<int32_t>>();
  for (const auto& path : p["images"]) {
    Image img;
    const Status s = testing_util::ReadPng(dir + "/" + path.get<std::string>(), &img);
    EXPECT_TRUE(s.ok()) << s.message;
    out.images.push_back(std::move(img));
  }
  return out;
}

struct Result {
  std::vector<int32_t> tokens;
  int token_calls = 0;
  bool finished = false;
  FinishReason reason = FinishReason::kError;
  SequenceStats stats;
  std::string error;
};

SequenceCallbacks Collect(Result* r) {
  SequenceCallbacks cb;
  cb.on_tokens = [r](const std::vector<int32_t>& t) {
    ++r->token_calls;
    r->tokens.insert(r->tokens.end(), t.begin(), t.end());
  };
  cb.on_finish = [r](FinishReason reason, const SequenceStats& stats, const std::string& error) {
    EXPECT_FALSE(r->finished) << "on_finish called twice";
    r->finished = true;
    r->reason = reason;
    r->stats = stats;
    r->error = error;
  };
  return cb;
}

std::unique_ptr<Engine> MakeEngine(const std::string& dir, int64_t pool_bytes = 64ll << 20,
                                   int max_batch = 8) {
  EngineConfig c;
  c.model_dir = dir;
  c.kv_pool_bytes = pool_bytes;
  c.block_tokens = kBlockTokens;
  c.max_batch = max_batch;
  c.threads = 2;
  std::unique_ptr<Engine> e;
  const Status s = Engine::Create(c, &e);
  EXPECT_TRUE(s.ok()) << s.message;
  return e;
}

GenerationRequest Request(const Prompt& p, const std::string& policy, float ratio,
                          int max_tokens) {
  GenerationRequest r;
  r.input_ids = p.ids;
  r.images = p.images;
  r.policy = policy;
  r.keep_ratio = ratio;
  r.sampling.max_tokens = max_tokens;
  r.sampling.ignore_eos = true;
  return r;
}

// Steps until every result has finished (bounded, so a scheduling bug fails
// instead of hanging).
void RunUntilDone(Engine* e, const std::vector<Result*>& results, int* max_running = nullptr) {
  for (int step = 0; step < 10000; ++step) {
    bool done = true;
    for (Result* r : results) done = done && r->finished;
    if (done) return;
    e->Step();
    if (max_running) *max_running = std::max(*max_running, e->Metrics().sequences_running);
  }
  FAIL() << "sequences did not finish";
}

Result RunOne(Engine* e, GenerationRequest req, uint64_t id = 1) {
  Result r;
  const Status s = e->Submit(id, std::move(req), Collect(&r));
  EXPECT_TRUE(s.ok()) << s.message;
  RunUntilDone(e, {&r});
  return r;
}

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    long_prompt_ = new Prompt(LoadPrompt(kTrained, 2));
    short_prompt_ = new Prompt(LoadPrompt(kTrained, 0));
  }
  static void TearDownTestSuite() {
    delete long_prompt_;
    delete short_prompt_;
  }
  static Prompt* long_prompt_;   // 527 ids, 8 images
  static Prompt* short_prompt_;  // 77 ids, 1 image
};
Prompt* EngineTest::long_prompt_ = nullptr;
Prompt* EngineTest::short_prompt_ = nullptr;

TEST_F(EngineTest, FullPolicyReproducesTransformersGreedyTokens) {
  auto e = MakeEngine(kTrained);
  const Result r = RunOne(e.get(), Request(*long_prompt_, "full", 1.0f, 16));
  EXPECT_EQ(r.reason, FinishReason::kLength);
  EXPECT_EQ(r.tokens, long_prompt_->hf_greedy);
  EXPECT_EQ(r.token_calls, 16);
  EXPECT_EQ(r.stats.kv_tokens_kept, r.stats.kv_tokens_full);
  EXPECT_EQ(r.stats.prompt_tokens, 527);
  EXPECT_EQ(r.stats.image_tokens, 512);
}

// The optional hooks: on_compressed (stats with the final KV figures) and
// on_prompt_logits (what the first greedy token is the argmax of) each run
// once, before the first token.
TEST_F(EngineTest, CompressedAndPromptLogitsHooksComeBeforeTheFirstToken) {
  auto e = MakeEngine(kTrained);
  Result r;
  SequenceCallbacks cb = Collect(&r);
  std::vector<SequenceStats> compressed;
  std::vector<std::vector<float>> logits;
  cb.on_compressed = [&](const SequenceStats& st) {
    EXPECT_TRUE(r.tokens.empty());
    compressed.push_back(st);
  };
  cb.on_prompt_logits = [&](const std::vector<float>& l) {
    EXPECT_TRUE(r.tokens.empty());
    logits.push_back(l);
  };
  ASSERT_TRUE(e->Submit(1, Request(*long_prompt_, "vlcache", 0.25f, 4), std::move(cb)).ok());
  RunUntilDone(e.get(), {&r});
  ASSERT_EQ(r.reason, FinishReason::kLength) << r.error;
  ASSERT_EQ(compressed.size(), 1u);
  const SequenceStats& early = compressed[0];
  EXPECT_GT(early.kv_tokens_kept, 0);
  EXPECT_LT(early.kv_tokens_kept, early.kv_tokens_full);
  EXPECT_EQ(early.kv_tokens_kept, r.stats.kv_tokens_kept);
  EXPECT_EQ(early.kv_tokens_full, r.stats.kv_tokens_full);
  EXPECT_EQ(early.kv_bytes_kept, r.stats.kv_bytes_kept);
  EXPECT_EQ(early.kv_bytes_full, r.stats.kv_bytes_full);
  EXPECT_EQ(early.completion_tokens, 0);
  ASSERT_EQ(logits.size(), 1u);
  const ModelInfo& info = e->Info();
  std::vector<float> l = logits[0];
  ASSERT_EQ(static_cast<int>(l.size()), info.vocab_size);
  l[info.image_token_id] = -INFINITY;  // never generated
  ASSERT_FALSE(r.tokens.empty());
  EXPECT_EQ(std::max_element(l.begin(), l.end()) - l.begin(), r.tokens[0]);
}

TEST_F(EngineTest, EveryPolicyAtRatioOneGivesTheFullTokens) {
  auto e = MakeEngine(kTrained);
  const Result full = RunOne(e.get(), Request(*long_prompt_, "full", 1.0f, 8));
  ASSERT_EQ(full.tokens.size(), 8u);
  uint64_t id = 2;
  for (const std::string& policy : KnownPolicies()) {
    const Result r = RunOne(e.get(), Request(*long_prompt_, policy, 1.0f, 8), id++);
    EXPECT_EQ(r.tokens, full.tokens) << policy;
    EXPECT_EQ(r.stats.kv_tokens_kept, r.stats.kv_tokens_full) << policy;
    EXPECT_EQ(r.stats.policy, policy);
  }
}

TEST_F(EngineTest, VlcacheAtTenPercentKeepsTenPercent) {
  auto e = MakeEngine(kTrained);
  const ModelInfo& info = e->Info();
  const int L = info.num_layers, Hkv = info.num_kv_heads, m = 527;
  GenerationRequest req = Request(*long_prompt_, "vlcache", 0.1f, 8);
  req.budget_mode = "exact";
  req.return_kept_positions = true;
  const Result r = RunOne(e.get(), req);
  ASSERT_EQ(r.reason, FinishReason::kLength) << r.error;
  EXPECT_EQ(r.tokens.size(), 8u);
  const SequenceStats& st = r.stats;
  ASSERT_EQ(static_cast<int>(st.layers.size()), L);
  int budget_sum = 0;
  for (const LayerStats& l : st.layers) {
    budget_sum += l.budget;
    EXPECT_GE(l.sparsity, 0.0);  // vlcache measures every layer's sparsity
    EXPECT_LE(l.sparsity, 1.0);
  }
  // Exact mode: sum_l k[l] = round(alpha * L * m), within one token per layer.
  const int target = static_cast<int>(std::lround(0.1 * L * m));
  EXPECT_LE(std::abs(budget_sum - target), L) << budget_sum << " vs " << target;
  EXPECT_EQ(st.kv_tokens_full, static_cast<int64_t>(L) * Hkv * m);
  EXPECT_EQ(st.kv_tokens_kept, static_cast<int64_t>(Hkv) * budget_sum);
  const double fraction = static_cast<double>(st.kv_bytes_kept) / st.kv_bytes_full;
  EXPECT_NEAR(fraction, 0.1, 0.01);
  EXPECT_EQ(st.kv_bytes_full, st.kv_tokens_full * 2 * info.head_dim * 4);
  // Kept positions: per (layer, kv head), ascending, the layer's budget long.
  ASSERT_EQ(static_cast<int>(st.kept_positions.size()), L);
  for (int l = 0; l < L; ++l) {
    ASSERT_EQ(static_cast<int>(st.kept_positions[l].size()), Hkv);
    for (const auto& keep : st.kept_positions[l]) {
      EXPECT_EQ(static_cast<int>(keep.size()), st.layers[l].budget);
      EXPECT_TRUE(std::is_sorted(keep.begin(), keep.end()));
      EXPECT_EQ(keep.back(), m - 1);  // the recent window always holds the last token
    }
  }
  // The stats JSON carries the contract's fields.
  const nlohmann::json j = nlohmann::json::parse(st.ToJson());
  for (const char* key : {"prompt_tokens", "image_tokens", "completion_tokens", "policy",
                          "keep_ratio", "budget_mode", "kv_tokens_full", "kv_tokens_kept",
                          "kv_bytes_full", "kv_bytes_kept", "layers", "kept_positions",
                          "queue_ms", "prefill_ms", "compress_ms", "decode_ms"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["policy"], "vlcache");
  EXPECT_EQ(j["keep_ratio"].get<double>(), 0.1);
  EXPECT_EQ(j["kv_tokens_kept"].get<int64_t>(), st.kv_tokens_kept);
  EXPECT_EQ(j["layers"].size(), static_cast<size_t>(L));
}

TEST_F(EngineTest, PoolReturnsToCapacityAfterFinishAndCancel) {
  auto e = MakeEngine(kTrained, 16ll << 20);
  const int64_t capacity = e->Metrics().kv_pool_capacity_bytes;
  ASSERT_GT(capacity, 0);
  EXPECT_EQ(e->Metrics().kv_pool_free_bytes, capacity);

  Result done = RunOne(e.get(), Request(*short_prompt_, "vlcache", 0.5f, 4));
  EXPECT_EQ(done.reason, FinishReason::kLength);
  EXPECT_EQ(e->Metrics().kv_pool_free_bytes, capacity);

  // Cancel one running sequence and one still queued.
  Result running, queued;
  ASSERT_TRUE(e->Submit(10, Request(*long_prompt_, "full", 1.0f, 50), Collect(&running)).ok());
  e->Step();  // admits 10 (one prefill per step)
  ASSERT_TRUE(e->Submit(11, Request(*long_prompt_, "h2o", 0.2f, 50), Collect(&queued)).ok());
  EXPECT_EQ(e->Metrics().sequences_running, 1);
  EXPECT_EQ(e->Metrics().sequences_waiting, 1);
  EXPECT_LT(e->Metrics().kv_pool_free_bytes, capacity);
  e->Cancel(10);
  e->Cancel(11);
  e->Cancel(12345);  // unknown: ignored
  e->Step();
  ASSERT_TRUE(running.finished);
  ASSERT_TRUE(queued.finished);
  EXPECT_EQ(running.reason, FinishReason::kCancelled);
  EXPECT_EQ(queued.reason, FinishReason::kCancelled);
  EXPECT_TRUE(queued.tokens.empty());
  EXPECT_EQ(e->Metrics().kv_pool_free_bytes, capacity);
  EXPECT_EQ(e->Metrics().sequences_running, 0);
  EXPECT_EQ(e->Metrics().sequences_waiting, 0);
  EXPECT_FALSE(e->Step());  // nothing left to do
  // The id is free again after its sequence ended.
  Result again;
  EXPECT_TRUE(e->Submit(10, Request(*short_prompt_, "full", 1.0f, 2), Collect(&again)).ok());
  RunUntilDone(e.get(), {&again});
}

// A pool that holds one uncompressed 527-token sequence runs several
// 10%-compressed ones at once, because admission counts the bytes kept.
TEST_F(EngineTest, AdmissionCountsCompressedBytes) {
  const int max_tokens = 8;
  auto probe = MakeEngine(kTrained);
  const ModelInfo info = probe->Info();
  probe.reset();
  const int64_t block_bytes = 2ll * kBlockTokens * info.head_dim * 4;
  const int64_t blocks_full = static_cast<int64_t>(info.num_layers) * info.num_kv_heads *
                              ((527 + max_tokens - 1 + kBlockTokens - 1) / kBlockTokens);
  const int64_t pool = blocks_full * block_bytes;

  int max_running_full = 0, max_running_compressed = 0;
  std::vector<Result> full(3), compressed(4);
  {
    auto e = MakeEngine(kTrained, pool);
    std::vector<Result*> all;
    for (size_t i = 0; i < full.size(); ++i) {
      ASSERT_TRUE(e->Submit(100 + i, Request(*long_prompt_, "full", 1.0f, max_tokens),
                            Collect(&full[i])).ok());
      all.push_back(&full[i]);
    }
    RunUntilDone(e.get(), all, &max_running_full);
    EXPECT_EQ(e->Metrics().kv_pool_free_bytes, pool);
  }
  {
    auto e = MakeEngine(kTrained, pool);
    std::vector<Result*> all;
    for (size_t i = 0; i < compressed.size(); ++i) {
      ASSERT_TRUE(e->Submit(200 + i, Request(*long_prompt_, "vlcache", 0.1f, max_tokens),
                            Collect(&compressed[i])).ok());
      all.push_back(&compressed[i]);
    }
    RunUntilDone(e.get(), all, &max_running_compressed);
    EXPECT_EQ(e->Metrics().kv_pool_free_bytes, pool);
  }
  EXPECT_EQ(max_running_full, 1);
  EXPECT_GE(max_running_compressed, 3);
  for (const Result& r : full) {
    EXPECT_EQ(r.reason, FinishReason::kLength) << r.error;
    EXPECT_EQ(r.tokens, full[0].tokens);
  }
  for (const Result& r : compressed) {
    EXPECT_EQ(r.reason, FinishReason::kLength) << r.error;
    EXPECT_EQ(r.tokens, compressed[0].tokens);  // same prompt, batched or not
  }
}

// Several different sequences decoded in one batch give what each gives alone.
TEST_F(EngineTest, BatchedDecodeMatchesSequential) {
  auto e = MakeEngine(kRandom);
  std::vector<Prompt> prompts = {LoadPrompt(kRandom, 0), LoadPrompt(kRandom, 1),
                                 LoadPrompt(kRandom, 2)};
  std::vector<Result> alone;
  for (size_t i = 0; i < prompts.size(); ++i) {
    alone.push_back(RunOne(e.get(), Request(prompts[i], "snapkv", 0.3f, 12), 50 + i));
  }
  std::vector<Result> together(prompts.size());
  std::vector<Result*> all;
  int max_running = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(e->Submit(60 + i, Request(prompts[i], "snapkv", 0.3f, 12), Collect(&together[i])).ok());
    all.push_back(&together[i]);
  }
  RunUntilDone(e.get(), all, &max_running);
  EXPECT_EQ(max_running, 3);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(together[i].tokens, alone[i].tokens) << "prompt " << i;
    EXPECT_EQ(together[i].stats.kv_tokens_kept, alone[i].stats.kv_tokens_kept);
  }
}

TEST_F(EngineTest, CompressAfterAppendsTheRestOverTheCompressedCache) {
  auto e = MakeEngine(kTrained);
  const ModelInfo& info = e->Info();
  const int L = info.num_layers, Hkv = info.num_kv_heads, m = 527;
  // Right after the last image: the question arrives after compression.
  int split = 0;
  for (int i = 0; i < m; ++i) {
    if (long_prompt_->ids[i] == info.image_token_id) split = i + 1;
  }
  ASSERT_GT(split, 0);
  ASSERT_LT(split, m);

  // Nothing evicted: appending the question as a chunk must equal one prefill.
  GenerationRequest whole = Request(*long_prompt_, "full", 1.0f, 10);
  GenerationRequest chunked = whole;
  chunked.compress_after = split;
  const Result a = RunOne(e.get(), whole, 1);
  const Result b = RunOne(e.get(), chunked, 2);
  EXPECT_EQ(b.tokens, a.tokens);
  EXPECT_EQ(b.stats.kv_tokens_kept, b.stats.kv_tokens_full);

  // Compressed at 10% before the question.
  GenerationRequest context_first = Request(*long_prompt_, "vlcache", 0.1f, 10);
  context_first.compress_after = split;
  const Result c = RunOne(e.get(), context_first, 3);
  ASSERT_EQ(c.reason, FinishReason::kLength) << c.error;
  EXPECT_EQ(c.tokens.size(), 10u);
  int budget_sum = 0;
  for (const LayerStats& l : c.stats.layers) {
    budget_sum += l.budget;
    EXPECT_LE(l.budget, split);  // budgets count the compressed part only
  }
  EXPECT_LE(std::abs(budget_sum - static_cast<int>(std::lround(0.1 * L * split))), L);
  EXPECT_EQ(c.stats.prompt_tokens, m);
  EXPECT_EQ(c.stats.kv_tokens_full, static_cast<int64_t>(L) * Hkv * m);
  EXPECT_EQ(c.stats.kv_tokens_kept,
            static_cast<int64_t>(Hkv) * budget_sum + static_cast<int64_t>(L) * Hkv * (m - split));
  EXPECT_EQ(e->Metrics().kv_pool_free_bytes, e->Metrics().kv_pool_capacity_bytes);
}

TEST_F(EngineTest, StopTokensAndEos) {
  auto e = MakeEngine(kTrained);
  // The trained model answers prompt 2 with one token, then eos.
  GenerationRequest req = Request(*long_prompt_, "full", 1.0f, 16);
  req.sampling.ignore_eos = false;
  const Result eos = RunOne(e.get(), req, 1);
  EXPECT_EQ(eos.reason, FinishReason::kStop);
  ASSERT_EQ(eos.tokens.size(), 2u);
  EXPECT_EQ(eos.tokens.back(), e->Info().eos_token_id);
  EXPECT_EQ(eos.stats.completion_tokens, 2);

  // A stop id ends the sequence at its first occurrence (included in the output).
  auto r = MakeEngine(kRandom);
  const Prompt p = LoadPrompt(kRandom, 1);
  GenerationRequest free_run = Request(p, "full", 1.0f, 16);
  const Result ref = RunOne(r.get(), free_run, 1);
  ASSERT_EQ(ref.tokens, p.hf_greedy);
  GenerationRequest stop = free_run;
  stop.sampling.stop_token_ids = {p.hf_greedy[3]};
  const Result stopped = RunOne(r.get(), stop, 2);
  EXPECT_EQ(stopped.reason, FinishReason::kStop);
  const size_t first = std::find(p.hf_greedy.begin(), p.hf_greedy.end(), p.hf_greedy[3]) -
                       p.hf_greedy.begin();
  EXPECT_EQ(stopped.tokens, std::vector<int32_t>(p.hf_greedy.begin(), p.hf_greedy.begin() + first + 1));
}

TEST_F(EngineTest, SeededSamplingIsReproducible) {
  auto e = MakeEngine(kRandom);
  const Prompt p = LoadPrompt(kRandom, 0);
  auto sampled = [&](uint64_t seed, uint64_t id) {
    GenerationRequest req = Request(p, "vlcache", 0.5f, 16);
    req.sampling.temperature = 1.5f;
    req.sampling.top_p = 0.95f;
    req.sampling.top_k = 100;
    req.sampling.seed = seed;
    return RunOne(e.get(), req, id).tokens;
  };
  const std::vector<int32_t> a = sampled(7, 1), b = sampled(7, 2), c = sampled(8, 3);
  ASSERT_EQ(a.size(), 16u);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  // Sampling is not greedy decoding.
  GenerationRequest greedy = Request(p, "vlcache", 0.5f, 16);
  EXPECT_NE(RunOne(e.get(), greedy, 4).tokens, a);
  for (int32_t t : a) EXPECT_NE(t, e->Info().image_token_id);
}

// Submit and Cancel come from other threads while one thread runs Step.
TEST_F(EngineTest, SubmitAndCancelFromOtherThreads) {
  auto e = MakeEngine(kTrained);
  std::mutex mu;
  std::map<uint64_t, Result> results;
  std::atomic<int> finished{0};
  std::atomic<bool> stop{false};
  std::thread serving([&] {
    while (!stop.load()) {
      if (!e->Step()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  auto callbacks = [&](uint64_t id) {
    SequenceCallbacks cb;
    cb.on_tokens = [&, id](const std::vector<int32_t>& t) {
      std::lock_guard<std::mutex> lock(mu);
      results[id].tokens.insert(results[id].tokens.end(), t.begin(), t.end());
    };
    cb.on_finish = [&, id](FinishReason reason, const SequenceStats& stats, const std::string& error) {
      {
        std::lock_guard<std::mutex> lock(mu);
        EXPECT_FALSE(results[id].finished);
        results[id].finished = true;
        results[id].reason = reason;
        results[id].stats = stats;
        results[id].error = error;
      }
      ++finished;
    };
    return cb;
  };
  auto submitter = [&](uint64_t first) {
    for (uint64_t id = first; id < first + 3; ++id) {
      // Even ids ask for so many tokens that they are still running when cancelled.
      const int max_tokens = id % 2 == 0 ? 3000 : 6;
      const Status s = e->Submit(id, Request(*short_prompt_, "vlcache", 0.2f, max_tokens), callbacks(id));
      EXPECT_TRUE(s.ok()) << s.message;
      if (id % 2 == 0) e->Cancel(id);
    }
  };
  std::thread a(submitter, 10), b(submitter, 20);
  a.join();
  b.join();
  for (int i = 0; i < 60000 && finished.load() < 6; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  stop = true;
  serving.join();
  ASSERT_EQ(finished.load(), 6);
  std::vector<int32_t> reference;
  for (auto& [id, r] : results) {
    if (id % 2 == 0) {
      EXPECT_EQ(r.reason, FinishReason::kCancelled) << id;
      EXPECT_LT(r.tokens.size(), 3000u);
    } else {
      EXPECT_EQ(r.reason, FinishReason::kLength) << id << " " << r.error;
      EXPECT_EQ(r.tokens.size(), 6u);
      if (reference.empty()) reference = r.tokens;
      EXPECT_EQ(r.tokens, reference);
    }
  }
  const EngineMetrics m = e->Metrics();
  EXPECT_EQ(m.kv_pool_free_bytes, m.kv_pool_capacity_bytes);
  EXPECT_EQ(m.sequences_running + m.sequences_waiting, 0);
}

TEST_F(EngineTest, BadRequestsAreRefusedWithTheirReason) {
  auto e = MakeEngine(kTrained);
  const ModelInfo& info = e->Info();
  struct Bad {
    std::string expect;
    std::function<void(GenerationRequest*)> mutate;
  };
  const std::vector<Bad> cases = {
      {"input_ids", [](GenerationRequest* r) { r->input_ids.clear(); r->images.clear(); }},
      {"outside the vocabulary", [](GenerationRequest* r) { r->input_ids[1] = 100000; }},
      {"kv_keep_ratio", [](GenerationRequest* r) { r->keep_ratio = 1.5f; }},
      {"kv_keep_ratio", [](GenerationRequest* r) { r->keep_ratio = std::nanf(""); }},
      {"kv_policy", [](GenerationRequest* r) { r->policy = "lru"; }},
      {"kv_budget_mode", [](GenerationRequest* r) { r->budget_mode = "greedy"; }},
      {"images", [](GenerationRequest* r) { r->images.pop_back(); }},
      {"images", [](GenerationRequest* r) { r->images.push_back(r->images[0]); }},
      {"images", [](GenerationRequest* r) {
         r->images[0].height = r->images[0].width = 56;
         r->images[0].rgb.resize(56 * 56 * 3);
       }},
      {"images", [](GenerationRequest* r) { r->images[0].rgb.resize(10); }},
      {"context", [&](GenerationRequest* r) { r->input_ids.resize(info.max_context + 1, 30); }},
      {"max_tokens", [](GenerationRequest* r) { r->sampling.max_tokens = 0; }},
      {"top_p", [](GenerationRequest* r) { r->sampling.top_p = 0.f; }},
      {"top_k", [](GenerationRequest* r) { r->sampling.top_k = -1; }},
      {"temperature", [](GenerationRequest* r) { r->sampling.temperature = -1.f; }},
      {"compress_after", [](GenerationRequest* r) { r->compress_after = 10000; }},
      {"compress_after", [](GenerationRequest* r) { r->compress_after = -2; }},
  };
  bool called = false;
  SequenceCallbacks cb;
  cb.on_tokens = [&](const std::vector<int32_t>&) { called = true; };
  cb.on_finish = [&](FinishReason, const SequenceStats&, const std::string&) { called = true; };
  uint64_t id = 1;
  for (const Bad& b : cases) {
    GenerationRequest r = Request(*long_prompt_, "vlcache", 0.1f, 4);
    b.mutate(&r);
    const Status s = e->Submit(id++, r, cb);
    EXPECT_FALSE(s.ok()) << "expected a refusal naming " << b.expect;
    EXPECT_NE(s.message.find(b.expect), std::string::npos)
        << "'" << s.message << "' does not name " << b.expect;
  }
  // A live id cannot be reused.
  Result first;
  ASSERT_TRUE(e->Submit(999, Request(*short_prompt_, "full", 1.0f, 2), Collect(&first)).ok());
  const Status dup = e->Submit(999, Request(*short_prompt_, "full", 1.0f, 2), cb);
  EXPECT_NE(dup.message.find("seq_id"), std::string::npos) << dup.message;
  RunUntilDone(e.get(), {&first});
  EXPECT_FALSE(called);
  EXPECT_EQ(e->Metrics().sequences_waiting, 0);

  // A pool too small for even the compressed request.
  auto tiny = MakeEngine(kTrained, 64 * 1024);
  const Status s = tiny->Submit(1, Request(*long_prompt_, "full", 1.0f, 4), cb);
  EXPECT_NE(s.message.find("kv_pool_bytes"), std::string::npos) << s.message;

  // Engine configuration is checked too.
  EngineConfig c;
  c.model_dir = kTrained;
  c.default_policy = "nope";
  std::unique_ptr<Engine> none;
  EXPECT_NE(Engine::Create(c, &none).message.find("default_policy"), std::string::npos);
  c.default_policy = "vlcache";
  c.model_dir = "/nonexistent";
  EXPECT_FALSE(Engine::Create(c, &none).ok());
}

}  // namespace
}  // namespace vlcache

// vlcache-bench: what KV-cache compression buys in a server, on synthetic
// prompts (images of random pixels followed by random text ids). For every
// prompt length x batch size x policy x keep ratio it measures prefill,
// compression, decode per step and end-to-end time for a fixed number of
// generated tokens, the KV bytes held, and (per prompt length x ratio) how many
// sequences a fixed KV pool admits at once; each ratio is set against the full
// cache measured in the same run. It prints figures; nothing here asserts on
// timings.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "flags.h"

namespace vlcache {
namespace tools {
namespace {

using Clock = std::chrono::steady_clock;
using ordered_json = nlohmann::ordered_json;

double MsSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

struct Options {
  std::string model;
  std::string prompt_tokens = "256,1024";
  std::string batches = "1,4";
  std::string keep_ratios = "0.4,0.1";
  std::string policies = "vlcache";
  std::string budget_mode = "exact";
  int tokens = 32;
  int text_tokens = 16;
  int pool_mb = 256;
  int fit_pool_mb = 16;
  int fit_max = 48;
  int fit_tokens = 100;
  int fit_prompt_tokens = 0;
  int threads = 0;
  int repeats = 1;
  uint64_t seed = 0;
  std::string out;
};

// A prompt of `length` ids: <s>, as many whole images as fit before
// `text_tokens` random text ids, then the text (random ids above the special
// tokens).
GenerationRequest SyntheticPrompt(const ModelInfo& info, int length, int text_tokens,
                                  std::mt19937_64* rng) {
  GenerationRequest r;
  const int per_image = std::max(1, info.image_tokens_per_image);
  const int images = std::max(0, (length - 1 - text_tokens) / per_image);
  std::uniform_int_distribution<int> text_id(5, std::max(5, info.vocab_size - 1));
  std::uniform_int_distribution<int> pixel(0, 255);
  r.input_ids.push_back(1);
  for (int i = 0; i < images * per_image; ++i) r.input_ids.push_back(info.image_token_id);
  while (static_cast<int>(r.input_ids.size()) < length) {
    int id = text_id(*rng);
    if (id == info.image_token_id || id == info.eos_token_id) id = 5;
    r.input_ids.push_back(id);
  }
  for (int i = 0; i < images; ++i) {
    Image image;
    image.height = info.image_height;
    image.width = info.image_width;
    image.rgb.resize(static_cast<size_t>(image.height) * image.width * 3);
    for (uint8_t& v : image.rgb) v = static_cast<uint8_t>(pixel(*rng));
    r.images.push_back(std::move(image));
  }
  return r;
}

struct RunResult {
  int prompt_tokens = 0, image_tokens = 0, batch = 0;
  std::string policy;
  double keep_ratio = 1.0;
  double prefill_ms = 0, compress_ms = 0, decode_ms_per_step = 0, e2e_ms = 0;
  int64_t kv_bytes_full = 0, kv_bytes_kept = 0;  // per sequence, prompt only
  int64_t pool_used_peak = 0;                    // bytes of pool blocks held, whole batch
  int completion_tokens = 0;
  std::string error;
};

// Runs `batch` copies of one synthetic prompt to completion together.
RunResult RunBatch(Engine* engine, const Options& opt, int length, int batch,
                   const std::string& policy, double ratio, uint64_t* next_id) {
  RunResult res;
  res.prompt_tokens = length;
  res.batch = batch;
  res.policy = policy;
  res.keep_ratio = ratio;
  std::mt19937_64 rng(opt.seed + static_cast<uint64_t>(length));
  int unfinished = 0;
  std::vector<SequenceStats> stats;
  std::string error;
  const Clock::time_point start = Clock::now();
  for (int b = 0; b < batch; ++b) {
    GenerationRequest r = SyntheticPrompt(engine->Info(), length, opt.text_tokens, &rng);
    r.policy = policy;
    r.keep_ratio = static_cast<float>(ratio);
    r.budget_mode = opt.budget_mode;
    r.sampling.max_tokens = opt.tokens;
    r.sampling.ignore_eos = true;
    SequenceCallbacks cb;
    cb.on_finish = [&](FinishReason reason, const SequenceStats& s, const std::string& e) {
      if (reason == FinishReason::kError && error.empty()) error = e;
      stats.push_back(s);
      --unfinished;
    };
    Status s = engine->Submit((*next_id)++, std::move(r), std::move(cb));
    if (!s.ok()) {
      res.error = s.message;
      break;
    }
    ++unfinished;
  }
  while (unfinished > 0) {
    if (!engine->Step()) {
      res.error = "engine idle with unfinished sequences";
      return res;
    }
    const EngineMetrics m = engine->Metrics();
    res.pool_used_peak =
        std::max(res.pool_used_peak, m.kv_pool_capacity_bytes - m.kv_pool_free_bytes);
  }
  res.e2e_ms = MsSince(start);
  if (!error.empty() && res.error.empty()) res.error = error;
  if (stats.empty()) return res;
  for (const SequenceStats& s : stats) {
    res.prefill_ms += s.prefill_ms / stats.size();
    res.compress_ms += s.compress_ms / stats.size();
    // The first token comes from the prefill's logits; the rest are decode steps.
    const int steps = std::max(1, s.completion_tokens - 1);
    res.decode_ms_per_step += s.decode_ms / steps / stats.size();
    res.kv_bytes_full = s.kv_bytes_full;
    res.kv_bytes_kept = s.kv_bytes_kept;
    res.completion_tokens = s.completion_tokens;
    res.image_tokens = s.image_tokens;
  }
  return res;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The median of each time over `repeats` runs: a shared machine's hiccups
// land in one run, not in the figure.
RunResult RunRepeated(Engine* engine, const Options& opt, int length, int batch,
                      const std::string& policy, double ratio, uint64_t* next_id) {
  std::vector<RunResult> runs;
  for (int i = 0; i < std::max(1, opt.repeats); ++i) {
    runs.push_back(RunBatch(engine, opt, length, batch, policy, ratio, next_id));
    if (!runs.back().error.empty()) return runs.back();
  }
  RunResult res = runs.front();
  auto median_of = [&](double RunResult::*field) {
    std::vector<double> v;
    for (const RunResult& r : runs) v.push_back(r.*field);
    return Median(v);
  };
  res.prefill_ms = median_of(&RunResult::prefill_ms);
  res.compress_ms = median_of(&RunResult::compress_ms);
  res.decode_ms_per_step = median_of(&RunResult::decode_ms_per_step);
  res.e2e_ms = median_of(&RunResult::e2e_ms);
  return res;
}

struct FitResult {
  int prompt_tokens = 0;
  std::string policy;
  double keep_ratio = 1.0;
  int sequences = 0;
  bool capped = false;  // all fit_max sequences were admitted: the pool holds at least this
  std::string error;
};

// Submits fit_max sequences to an engine with a small fixed pool and counts
// how many run at once before admission stops for lack of blocks.
FitResult MeasureFit(Engine* engine, const Options& opt, int length, const std::string& policy,
                     double ratio, uint64_t* next_id) {
  FitResult res;
  res.prompt_tokens = length;
  res.policy = policy;
  res.keep_ratio = ratio;
  std::mt19937_64 rng(opt.seed + 7 * static_cast<uint64_t>(length));
  int unfinished = 0, finished_early = 0;
  std::vector<uint64_t> ids;
  for (int i = 0; i < opt.fit_max; ++i) {
    GenerationRequest r = SyntheticPrompt(engine->Info(), length, opt.text_tokens, &rng);
    r.policy = policy;
    r.keep_ratio = static_cast<float>(ratio);
    r.budget_mode = opt.budget_mode;
    r.sampling.max_tokens = opt.fit_tokens;
    r.sampling.ignore_eos = true;
    SequenceCallbacks cb;
    cb.on_finish = [&](FinishReason reason, const SequenceStats&, const std::string& e) {
      if (reason == FinishReason::kError && res.error.empty()) res.error = e;
      if (reason != FinishReason::kCancelled) ++finished_early;
      --unfinished;
    };
    const uint64_t id = (*next_id)++;
    Status s = engine->Submit(id, std::move(r), std::move(cb));
    if (!s.ok()) {
      res.error = s.message;
      break;
    }
    ids.push_back(id);
    ++unfinished;
  }
  int running = 0;
  while (true) {
    engine->Step();
    const EngineMetrics m = engine->Metrics();
    if (finished_early > 0) break;
    if (m.sequences_waiting == 0) {
      running = m.sequences_running;
      res.capped = true;
      break;
    }
    // One prefill is admitted per step; a step that admits none means the
    // head of the queue waits for blocks.
    if (m.sequences_running <= running) break;
    running = m.sequences_running;
  }
  res.sequences = running;
  if (finished_early > 0 && res.error.empty()) {
    res.error = "a sequence finished before the pool filled (raise --fit-tokens)";
  }
  for (uint64_t id : ids) engine->Cancel(id);
  while (unfinished > 0 && engine->Step()) {
  }
  return res;
}

std::string Fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

int Main(int argc, char** argv) {
  Options opt;
  FlagSet flags("vlcache-bench");
  flags.String("model", &opt.model, "checkpoint directory (Hugging Face layout)");
  flags.String("prompt-tokens", &opt.prompt_tokens,
               "prompt lengths, comma separated (whole images of random pixels, then "
               "--text-tokens random ids)");
  flags.String("batch", &opt.batches, "batch sizes, comma separated");
  flags.String("keep-ratios", &opt.keep_ratios,
               "keep ratios, comma separated; the full cache is always measured too");
  flags.String("policies", &opt.policies, "policies, comma separated");
  flags.String("budget-mode", &opt.budget_mode, "vlcache layer budgets: exact or paper");
  flags.Int("tokens", &opt.tokens, "tokens generated per sequence (eos ignored)");
  flags.Int("text-tokens", &opt.text_tokens, "random text ids after the images");
  flags.Int("pool-mb", &opt.pool_mb, "KV pool of the timing runs, MiB");
  flags.Int("fit-pool-mb", &opt.fit_pool_mb, "fixed KV pool of the capacity measurement, MiB");
  flags.Int("fit-max", &opt.fit_max, "sequences offered to the fixed pool (0 = skip)");
  flags.Int("fit-tokens", &opt.fit_tokens, "max_tokens of each capacity-measurement sequence");
  flags.Int("fit-prompt-tokens", &opt.fit_prompt_tokens,
            "prompt length of the capacity measurement (0 = the largest --prompt-tokens)");
  flags.Int("threads", &opt.threads, "compute threads, 0 = all cores");
  flags.Int("repeats", &opt.repeats, "runs per configuration; times are the median");
  flags.Uint64("seed", &opt.seed, "seed of the synthetic prompts");
  flags.String("out", &opt.out, "write the results as JSON here");
  bool help = false;
  Status s = flags.Parse(argc, argv, &help);
  if (help) {
    std::cout << flags.Usage();
    return 0;
  }
  std::vector<int> lengths, batches;
  std::vector<double> ratios;
  const std::vector<std::string> policies = SplitList(opt.policies);
  if (s.ok() && opt.model.empty()) s = Status::Error("--model is required");
  if (s.ok()) s = ParseIntList(opt.prompt_tokens, "--prompt-tokens", &lengths);
  if (s.ok()) s = ParseIntList(opt.batches, "--batch", &batches);
  if (s.ok()) s = ParseDoubleList(opt.keep_ratios, "--keep-ratios", &ratios);
  for (double r : ratios) {
    if (s.ok() && !(r > 0 && r <= 1)) s = Status::Error("--keep-ratios: each must be in (0, 1]");
  }
  for (int b : batches) {
    if (s.ok() && b < 1) s = Status::Error("--batch: each must be at least 1");
  }
  if (s.ok() && opt.tokens < 1) s = Status::Error("--tokens must be at least 1");
  if (s.ok() && opt.repeats < 1) s = Status::Error("--repeats must be at least 1");
  if (s.ok() && (opt.pool_mb < 1 || opt.fit_pool_mb < 1)) {
    s = Status::Error("--pool-mb and --fit-pool-mb must be at least 1");
  }
  if (!s.ok()) {
    std::cerr << "vlcache-bench: " << s.message << "\n" << flags.Usage();
    return 2;
  }

  EngineConfig config;
  config.model_dir = opt.model;
  config.kv_pool_bytes = static_cast<int64_t>(opt.pool_mb) << 20;
  config.max_batch = *std::max_element(batches.begin(), batches.end());
  config.threads = opt.threads;
  std::unique_ptr<Engine> engine;
  s = Engine::Create(config, &engine);
  if (!s.ok()) {
    std::cerr << "vlcache-bench: " << s.message << "\n";
    return 1;
  }
  const ModelInfo& info = engine->Info();
  for (int len : lengths) {
    if (len < 2 || len + opt.tokens > info.max_context) {
      std::cerr << "vlcache-bench: prompt length " << len << " + " << opt.tokens
                << " tokens does not fit the model's context of " << info.max_context << "\n";
      return 2;
    }
  }
  uint64_t next_id = 1;
  // Warm-up: first-touch allocations and thread start-up stay out of the figures.
  RunBatch(engine.get(), opt, std::min(lengths.front(), 128), 1, "full", 1.0, &next_id);

  ordered_json runs = ordered_json::array();
  std::printf("%7s %5s %-14s %6s | %10s %11s %12s %10s | %10s %7s | %8s %8s %8s\n", "prompt",
              "batch", "policy", "ratio", "prefill_ms", "compress_ms", "decode_ms/st", "e2e_ms",
              "kv_kept_KB", "kv_frac", "prefillx", "decodex", "e2ex");
  int failures = 0;
  for (int len : lengths) {
    for (int batch : batches) {
      const RunResult full = RunRepeated(engine.get(), opt, len, batch, "full", 1.0, &next_id);
      std::vector<RunResult> rows = {full};
      for (const std::string& policy : policies) {
        for (double ratio : ratios) {
          rows.push_back(RunRepeated(engine.get(), opt, len, batch, policy, ratio, &next_id));
        }
      }
      for (const RunResult& r : rows) {
        ordered_json j;
        j["prompt_tokens"] = r.prompt_tokens;
        j["image_tokens"] = r.image_tokens;
        j["batch"] = r.batch;
        j["policy"] = r.policy;
        j["keep_ratio"] = r.keep_ratio;
        if (!r.error.empty()) {
          ++failures;
          j["error"] = r.error;
          runs.push_back(j);
          std::printf("%7d %5d %-14s %6.3f | error: %s\n", r.prompt_tokens, r.batch,
                      r.policy.c_str(), r.keep_ratio, r.error.c_str());
          continue;
        }
        const double kv_frac =
            r.kv_bytes_full > 0 ? static_cast<double>(r.kv_bytes_kept) / r.kv_bytes_full : 0;
        const double prefill_x = full.prefill_ms > 0 ? r.prefill_ms / full.prefill_ms : 0;
        const double decode_x =
            r.decode_ms_per_step > 0 ? full.decode_ms_per_step / r.decode_ms_per_step : 0;
        const double e2e_x = r.e2e_ms > 0 ? full.e2e_ms / r.e2e_ms : 0;
        j["completion_tokens"] = r.completion_tokens;
        j["prefill_ms"] = r.prefill_ms;
        j["compress_ms"] = r.compress_ms;
        j["decode_ms_per_step"] = r.decode_ms_per_step;
        j["e2e_ms"] = r.e2e_ms;
        j["kv_bytes_full"] = r.kv_bytes_full;
        j["kv_bytes_kept"] = r.kv_bytes_kept;
        j["kv_fraction_kept"] = kv_frac;
        j["pool_used_bytes_peak"] = r.pool_used_peak;
        // Against the full cache of the same prompt length and batch.
        j["prefill_time_vs_full"] = prefill_x;
        j["decode_speedup_vs_full"] = decode_x;
        j["e2e_speedup_vs_full"] = e2e_x;
        runs.push_back(j);
        std::printf("%7d %5d %-14s %6.3f | %10s %11s %12s %10s | %10s %7s | %8s %8s %8s\n",
                    r.prompt_tokens, r.batch, r.policy.c_str(), r.keep_ratio,
                    Fixed(r.prefill_ms, 2).c_str(), Fixed(r.compress_ms, 3).c_str(),
                    Fixed(r.decode_ms_per_step, 3).c_str(), Fixed(r.e2e_ms, 1).c_str(),
                    Fixed(r.kv_bytes_kept / 1024.0, 1).c_str(), Fixed(kv_frac, 3).c_str(),
                    Fixed(prefill_x, 2).c_str(), Fixed(decode_x, 2).c_str(),
                    Fixed(e2e_x, 2).c_str());
        std::fflush(stdout);
      }
    }
  }

  ordered_json fits = ordered_json::array();
  if (opt.fit_max > 0) {
    const int fit_len = opt.fit_prompt_tokens > 0
                            ? opt.fit_prompt_tokens
                            : *std::max_element(lengths.begin(), lengths.end());
    EngineConfig fit_config = config;
    fit_config.kv_pool_bytes = static_cast<int64_t>(opt.fit_pool_mb) << 20;
    fit_config.max_batch = opt.fit_max;
    std::unique_ptr<Engine> fit_engine;
    s = Engine::Create(fit_config, &fit_engine);
    if (!s.ok()) {
      std::cerr << "vlcache-bench: " << s.message << "\n";
      return 1;
    }
    std::printf("\nsequences of %d prompt tokens (+%d reserved for decoding) running at once "
                "in a %d MiB KV pool (offered %d):\n",
                fit_len, opt.fit_tokens, opt.fit_pool_mb, opt.fit_max);
    std::printf("%-14s %6s %10s %8s\n", "policy", "ratio", "sequences", "vs_full");
    std::vector<std::pair<std::string, double>> fit_runs = {{"full", 1.0}};
    for (const std::string& policy : policies) {
      for (double ratio : ratios) fit_runs.emplace_back(policy, ratio);
    }
    int full_fit = 0;
    for (const auto& [policy, ratio] : fit_runs) {
      const FitResult f = MeasureFit(fit_engine.get(), opt, fit_len, policy, ratio, &next_id);
      if (policy == "full") full_fit = f.sequences;
      ordered_json j;
      j["prompt_tokens"] = f.prompt_tokens;
      j["policy"] = f.policy;
      j["keep_ratio"] = f.keep_ratio;
      j["pool_bytes"] = fit_config.kv_pool_bytes;
      j["reserved_decode_tokens"] = opt.fit_tokens;
      j["sequences"] = f.sequences;
      j["at_least"] = f.capped;
      j["vs_full"] = full_fit > 0 ? static_cast<double>(f.sequences) / full_fit : 0.0;
      if (!f.error.empty()) {
        ++failures;
        j["error"] = f.error;
      }
      fits.push_back(j);
      std::printf("%-14s %6.3f %9d%s %8s%s\n", f.policy.c_str(), f.keep_ratio, f.sequences,
                  f.capped ? "+" : " ",
                  Fixed(full_fit > 0 ? static_cast<double>(f.sequences) / full_fit : 0, 2)
                      .c_str(),
                  f.error.empty() ? "" : ("  error: " + f.error).c_str());
    }
  }

  if (!opt.out.empty()) {
    ordered_json doc;
    doc["model"] = opt.model;
    doc["settings"] = {{"prompt_tokens", lengths},
                       {"batch", batches},
                       {"keep_ratios", ratios},
                       {"policies", policies},
                       {"budget_mode", opt.budget_mode},
                       {"tokens", opt.tokens},
                       {"text_tokens", opt.text_tokens},
                       {"pool_mb", opt.pool_mb},
                       {"fit_pool_mb", opt.fit_pool_mb},
                       {"fit_max", opt.fit_max},
                       {"fit_tokens", opt.fit_tokens},
                       {"threads", opt.threads},
                       {"repeats", opt.repeats},
                       {"seed", opt.seed}};
    doc["runs"] = runs;
    doc["fit"] = fits;
    std::ofstream out(opt.out);
    out << doc.dump(2) << "\n";
    if (!out) {
      std::cerr << "vlcache-bench: cannot write " << opt.out << "\n";
      return 1;
    }
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace tools
}  // namespace vlcache

int main(int argc, char** argv) { return vlcache::tools::Main(argc, argv); }

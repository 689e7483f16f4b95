// vlcache-run: the engine from the command line. One prompt from flags, or
// many request lines from stdin (--jsonl, docs/contract.md) run together
// through the engine's continuous batching.
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "flags.h"
#include "image_file.h"
#include "jsonl.h"

namespace vlcache {
namespace tools {
namespace {

struct Options {
  std::string model;
  std::string policy = "vlcache";
  double keep_ratio = 0.1;
  std::string budget_mode = "exact";
  int max_tokens = 16;
  double temperature = 0.0;
  double top_p = 1.0;
  int top_k = 0;
  uint64_t seed = 0;
  int pool_mb = 256;
  int max_batch = 8;
  int threads = 0;
  int compress_after = 0;
  bool ignore_eos = false;
  bool kept_positions = false;
  std::string input_ids;
  std::vector<std::string> images;
  std::string dump_logits;
  bool jsonl = false;
};

// Raw little-endian fp32, the layout numpy.fromfile(..., "<f4") reads.
bool WriteFloats(const std::string& path, const std::vector<float>& values) {
  static_assert(sizeof(float) == 4, "fp32");
  std::vector<char> bytes(values.size() * 4);
  for (size_t i = 0; i < values.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &values[i], 4);
    for (int b = 0; b < 4; ++b) bytes[4 * i + b] = static_cast<char>((bits >> (8 * b)) & 0xFF);
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return static_cast<bool>(out);
}

// Steps the engine until every accepted sequence has finished. A Step that
// finds nothing to do while sequences are owed a finish would spin forever, so
// it is reported instead.
Status Drive(Engine* engine, const int* unfinished) {
  while (*unfinished > 0) {
    if (!engine->Step() && *unfinished > 0) {
      return Status::Error("engine has nothing to do but " + std::to_string(*unfinished) +
                           " sequence(s) never finished");
    }
  }
  return Status::Ok();
}

int RunOne(const Options& opt, Engine* engine) {
  std::vector<int> ids;
  Status s = ParseIntList(opt.input_ids, "--input-ids", &ids);
  if (!s.ok()) {
    std::cerr << "vlcache-run: " << s.message << "\n";
    return 2;
  }
  GenerationRequest request;
  request.input_ids.assign(ids.begin(), ids.end());
  for (const std::string& path : opt.images) {
    Image image;
    s = ReadImageFile(path, engine->Info().image_height, engine->Info().image_width, &image);
    if (!s.ok()) {
      std::cerr << "vlcache-run: " << s.message << "\n";
      return 2;
    }
    request.images.push_back(std::move(image));
  }
  SamplingParams& sp = request.sampling;
  sp.max_tokens = opt.max_tokens;
  sp.temperature = static_cast<float>(opt.temperature);
  sp.top_p = static_cast<float>(opt.top_p);
  sp.top_k = opt.top_k;
  sp.seed = opt.seed;
  sp.ignore_eos = opt.ignore_eos;
  request.compress_after = opt.compress_after;
  request.return_kept_positions = opt.kept_positions;

  std::vector<int32_t> output;
  int unfinished = 1;
  int rc = 0;
  SequenceCallbacks callbacks;
  callbacks.on_tokens = [&](const std::vector<int32_t>& tokens) {
    output.insert(output.end(), tokens.begin(), tokens.end());
  };
  std::string dump_error;
  if (!opt.dump_logits.empty()) {
    callbacks.on_prompt_logits = [&](const std::vector<float>& logits) {
      if (!WriteFloats(opt.dump_logits, logits)) {
        dump_error = "--dump-logits: cannot write " + opt.dump_logits;
      }
    };
  }
  callbacks.on_finish = [&](FinishReason reason, const SequenceStats& stats,
                            const std::string& error) {
    std::cout << ResultLine(nullptr, output, reason, stats, error) << std::endl;
    if (reason == FinishReason::kError) rc = 1;
    --unfinished;
  };
  s = engine->Submit(1, std::move(request), std::move(callbacks));
  if (!s.ok()) {
    std::cerr << "vlcache-run: request refused: " << s.message << "\n";
    return 1;
  }
  s = Drive(engine, &unfinished);
  if (!s.ok()) {
    std::cerr << "vlcache-run: " << s.message << "\n";
    return 1;
  }
  if (!dump_error.empty()) {
    std::cerr << "vlcache-run: " << dump_error << "\n";
    return 1;
  }
  return rc;
}

// Request lines are read on their own thread and submitted as they arrive, so
// a caller may keep the process open and feed it over time (the evaluation
// harness does); this thread steps the engine and writes each result when its
// sequence finishes. The process ends at end of input once every accepted
// sequence has finished.
class JsonlRunner {
 public:
  explicit JsonlRunner(Engine* engine) : engine_(engine) {}

  int Run() {
    std::thread reader([this] { ReadLines(); });
    int idle_after_eof = 0;
    while (true) {
      const bool worked = engine_->Step();
      std::unique_lock<std::mutex> lock(mu_);
      if (eof_ && unfinished_ == 0) break;
      if (worked) {
        idle_after_eof = 0;
        continue;
      }
      if (eof_) {
        // Every Submit has returned, so a second idle Step with sequences
        // still owed a finish would spin forever: report it instead.
        if (++idle_after_eof >= 2) {
          std::cerr << "vlcache-run: engine has nothing to do but " << unfinished_
                    << " sequence(s) never finished\n";
          lock.unlock();
          reader.join();
          return 1;
        }
        continue;
      }
      const uint64_t seen = submissions_;
      cv_.wait_for(lock, std::chrono::milliseconds(50),
                   [&] { return submissions_ != seen || eof_; });
    }
    reader.join();
    return 0;
  }

 private:
  struct Pending {
    nlohmann::json id;
    std::vector<int32_t> output;
  };

  void Write(const std::string& line) {
    std::lock_guard<std::mutex> lock(out_mu_);
    std::cout << line << std::endl;
  }

  void ReadLines() {
    std::string text;
    size_t line_no = 0;
    while (std::getline(std::cin, text)) {
      ++line_no;
      if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
      Submit(text, line_no);
    }
    std::lock_guard<std::mutex> lock(mu_);
    eof_ = true;
    cv_.notify_all();
  }

  void Submit(const std::string& text, size_t line_no) {
    RequestLine line;
    Status s = ParseRequestLine(text, &line);
    if (!s.ok()) {
      Write(ErrorLine(line.id, "line " + std::to_string(line_no) + ": " + s.message));
      return;
    }
    uint64_t seq;
    {
      std::lock_guard<std::mutex> lock(mu_);
      seq = next_seq_++;
      pending_[seq].id = line.id;
      ++unfinished_;  // before Submit: the sequence may finish before it returns
    }
    SequenceCallbacks callbacks;
    callbacks.on_tokens = [this, seq](const std::vector<int32_t>& tokens) {
      std::lock_guard<std::mutex> lock(mu_);
      auto& out = pending_[seq].output;
      out.insert(out.end(), tokens.begin(), tokens.end());
    };
    callbacks.on_finish = [this, seq](FinishReason reason, const SequenceStats& stats,
                                      const std::string& error) {
      Pending done;
      {
        std::lock_guard<std::mutex> lock(mu_);
        done = std::move(pending_[seq]);
        pending_.erase(seq);
      }
      Write(ResultLine(done.id, done.output, reason, stats, error));
      std::lock_guard<std::mutex> lock(mu_);
      --unfinished_;
    };
    s = engine_->Submit(seq, std::move(line.request), std::move(callbacks));
    std::lock_guard<std::mutex> lock(mu_);
    if (!s.ok()) {
      Write(ErrorLine(pending_[seq].id, s.message));
      pending_.erase(seq);
      --unfinished_;
      return;
    }
    ++submissions_;
    cv_.notify_all();
  }

  Engine* engine_;
  std::mutex out_mu_;  // one writer at a time on stdout
  std::mutex mu_;      // everything below
  std::condition_variable cv_;
  std::map<uint64_t, Pending> pending_;
  uint64_t next_seq_ = 1;
  uint64_t submissions_ = 0;
  int unfinished_ = 0;
  bool eof_ = false;
};

int Main(int argc, char** argv) {
  Options opt;
  FlagSet flags("vlcache-run");
  flags.String("model", &opt.model, "checkpoint directory (Hugging Face layout)");
  flags.String("policy", &opt.policy,
               "KV policy: full, vlcache, h2o, snapkv, streamingllm, pyramidkv, "
               "vlcache-scores, vlcache-budget (default of --jsonl lines too)");
  flags.Double("keep-ratio", &opt.keep_ratio, "fraction of the prompt's KV cache kept, (0, 1]");
  flags.String("budget-mode", &opt.budget_mode, "vlcache layer budgets: exact or paper");
  flags.Int("max-tokens", &opt.max_tokens, "tokens to generate at most");
  flags.Double("temperature", &opt.temperature, "sampling temperature, 0 = greedy");
  flags.Double("top-p", &opt.top_p, "nucleus sampling mass, (0, 1]");
  flags.Int("top-k", &opt.top_k, "top-k sampling, 0 = off");
  flags.Uint64("seed", &opt.seed, "sampling seed");
  flags.Int("pool-mb", &opt.pool_mb, "KV block pool size in MiB");
  flags.Int("max-batch", &opt.max_batch, "sequences decoded together");
  flags.Int("threads", &opt.threads, "compute threads, 0 = all cores");
  flags.Int("compress-after", &opt.compress_after,
            "context-first: compress after this many prompt tokens, 0 = whole prompt");
  flags.Bool("ignore-eos", &opt.ignore_eos, "always generate --max-tokens tokens");
  flags.Bool("kept-positions", &opt.kept_positions, "add the kept positions to the stats");
  flags.String("input-ids", &opt.input_ids,
               "prompt ids, comma separated, image token repeated per image feature");
  flags.Repeated("image", &opt.images,
                 "PNG, JPEG or raw HxWx3 RGB file at the model's input size (repeatable)");
  flags.String("dump-logits", &opt.dump_logits,
               "write the fp32 logits of the last prompt position here (raw little-endian)");
  flags.Bool("jsonl", &opt.jsonl, "read request lines from stdin, write result lines");
  bool help = false;
  Status s = flags.Parse(argc, argv, &help);
  if (help) {
    std::cout << flags.Usage();
    return 0;
  }
  if (s.ok() && opt.model.empty()) s = Status::Error("--model is required");
  if (s.ok() && !opt.jsonl && opt.input_ids.empty()) {
    s = Status::Error("give --input-ids (one prompt) or --jsonl (request lines on stdin)");
  }
  if (s.ok() && opt.jsonl && !opt.dump_logits.empty()) {
    s = Status::Error("--dump-logits is for one prompt, not --jsonl");
  }
  if (s.ok() && opt.pool_mb < 1) s = Status::Error("--pool-mb must be at least 1");
  if (!s.ok()) {
    std::cerr << "vlcache-run: " << s.message << "\n" << flags.Usage();
    return 2;
  }
  EngineConfig config;
  config.model_dir = opt.model;
  config.kv_pool_bytes = static_cast<int64_t>(opt.pool_mb) << 20;
  config.max_batch = opt.max_batch;
  config.default_policy = opt.policy;
  config.default_keep_ratio = static_cast<float>(opt.keep_ratio);
  config.default_budget_mode = opt.budget_mode;
  config.threads = opt.threads;
  std::unique_ptr<Engine> engine;
  s = Engine::Create(config, &engine);
  if (!s.ok()) {
    std::cerr << "vlcache-run: " << s.message << "\n";
    return 1;
  }
  if (opt.jsonl) return JsonlRunner(engine.get()).Run();
  return RunOne(opt, engine.get());
}

}  // namespace
}  // namespace tools
}  // namespace vlcache

int main(int argc, char** argv) { return vlcache::tools::Main(argc, argv); }

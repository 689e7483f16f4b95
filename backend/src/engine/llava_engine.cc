#include "engine/llava_engine.h"

#include <algorithm>
#include <cmath>

#include "model/status_macros.h"

namespace vlcache {
namespace engine {
namespace {

double MsSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

}  // namespace

Status LlavaEngine::Create(const EngineConfig& config, std::unique_ptr<Engine>* out) {
  if (config.device != "cpu") {
    return Status::Error("device: '" + config.device + "' is not available (this build has: cpu)");
  }
  if (config.kv_pool_bytes <= 0) return Status::Error("kv_pool_bytes: must be positive");
  if (config.block_tokens < 1) return Status::Error("block_tokens: must be at least 1");
  if (config.max_batch < 1) return Status::Error("max_batch: must be at least 1");
  if (config.max_prefills_per_step < 1) {
    return Status::Error("max_prefills_per_step: must be at least 1");
  }
  if (config.attention_chunk_rows < 1) {
    return Status::Error("attention_chunk_rows: must be at least 1");
  }
  if (!IsKnownPolicy(config.default_policy)) {
    return Status::Error("default_policy: unknown policy '" + config.default_policy + "'");
  }
  if (!(config.default_keep_ratio > 0.f && config.default_keep_ratio <= 1.f)) {
    return Status::Error("default_keep_ratio: must be in (0, 1]");
  }
  if (config.default_budget_mode != "exact" && config.default_budget_mode != "paper") {
    return Status::Error("default_budget_mode: must be exact or paper");
  }
  std::unique_ptr<LlavaEngine> e(new LlavaEngine(config));
  kernels::OpsOptions options;
  options.threads = config.threads;
  e->ops_ = kernels::CreateCpuOps(options);
  VLCACHE_RETURN_IF_ERROR(model::LlavaModel::Load(config.model_dir, e->ops_.get(), &e->model_));
  const model::LlavaConfig& c = e->model_->config();
  e->pool_ = std::make_unique<kvcache::BlockPool>(config.kv_pool_bytes, config.block_tokens,
                                                  c.text.head_dim);
  if (e->pool_->capacity_blocks() == 0) {
    return Status::Error("kv_pool_bytes: " + std::to_string(config.kv_pool_bytes) +
                         " is less than one block (" + std::to_string(e->pool_->BlockBytes()) +
                         " bytes)");
  }
  ModelInfo& info = e->info_;
  info.image_token_id = c.image_token_id;
  info.image_tokens_per_image = c.ImageTokens();
  info.image_height = info.image_width = c.vision.image_size;
  info.max_context = c.text.max_position_embeddings;
  info.eos_token_id = c.text.eos_token_id;
  info.vocab_size = c.text.vocab_size;
  info.num_layers = c.text.num_hidden_layers;
  info.num_kv_heads = c.text.num_key_value_heads;
  info.head_dim = c.text.head_dim;
  *out = std::move(e);
  return Status::Ok();
}

LlavaEngine::~LlavaEngine() = default;

int64_t LlavaEngine::KvBytesPerToken() const {
  return 2ll * info_.head_dim * static_cast<int64_t>(sizeof(float));
}

Status LlavaEngine::Validate(const GenerationRequest& r, Sequence* seq) const {
  const int m = static_cast<int>(r.input_ids.size());
  if (m == 0) return Status::Error("input_ids: empty prompt");
  int64_t image_tokens = 0;
  for (int32_t id : r.input_ids) {
    if (id < 0 || id >= info_.vocab_size) {
      return Status::Error("input_ids: token " + std::to_string(id) + " is outside the vocabulary (" +
                           std::to_string(info_.vocab_size) + ")");
    }
    image_tokens += id == info_.image_token_id;
  }
  const int64_t expected = static_cast<int64_t>(r.images.size()) * info_.image_tokens_per_image;
  if (image_tokens != expected) {
    return Status::Error("images: input_ids hold " + std::to_string(image_tokens) +
                         " image tokens (id " + std::to_string(info_.image_token_id) + ") but " +
                         std::to_string(r.images.size()) + " image(s) of " +
                         std::to_string(info_.image_tokens_per_image) + " features were given");
  }
  for (const Image& img : r.images) VLCACHE_RETURN_IF_ERROR(model_->CheckImage(img));
  VLCACHE_RETURN_IF_ERROR(ValidateSampling(r.sampling));
  const int64_t total = static_cast<int64_t>(m) + r.sampling.max_tokens;
  if (total > info_.max_context) {
    return Status::Error("input_ids: prompt of " + std::to_string(m) + " tokens + max_tokens " +
                         std::to_string(r.sampling.max_tokens) + " exceeds the context of " +
                         std::to_string(info_.max_context) + " tokens");
  }
  const int window = model_->config().text.sliding_window;
  if (window > 0 && total > window) {
    return Status::Error("input_ids: prompt + max_tokens (" + std::to_string(total) +
                         ") exceeds the model's sliding window of " + std::to_string(window) +
                         " tokens, which this engine does not implement");
  }
  seq->policy = r.policy.empty() ? config_.default_policy : r.policy;
  if (!IsKnownPolicy(seq->policy)) {
    std::string known;
    for (const std::string& p : KnownPolicies()) known += (known.empty() ? "" : ", ") + p;
    return Status::Error("kv_policy: unknown policy '" + seq->policy + "' (known: " + known + ")");
  }
  if (std::isnan(r.keep_ratio) || r.keep_ratio > 1.f) {
    return Status::Error("kv_keep_ratio: must be in (0, 1], got " + std::to_string(r.keep_ratio));
  }
  seq->keep_ratio = r.keep_ratio <= 0.f ? config_.default_keep_ratio : r.keep_ratio;
  seq->budget_mode = r.budget_mode.empty() ? config_.default_budget_mode : r.budget_mode;
  if (seq->budget_mode != "exact" && seq->budget_mode != "paper") {
    return Status::Error("kv_budget_mode: must be exact or paper, got '" + r.budget_mode + "'");
  }
  if (r.compress_after < 0) return Status::Error("compress_after: must be >= 0");
  if (r.compress_after > m) {
    return Status::Error("compress_after: " + std::to_string(r.compress_after) +
                         " exceeds the prompt length " + std::to_string(m));
  }
  seq->prompt_len = m;
  seq->part1_len = (r.compress_after > 0 && r.compress_after < m) ? r.compress_after : m;
  seq->keep_all = seq->policy == "full" || seq->keep_ratio >= 1.f;

  // Can it ever fit? Exact when nothing is evicted; otherwise a lower bound
  // (one kept token per (layer, kv head)), and TryAdmit reports a request whose
  // compressed cache still does not fit an empty pool.
  const int extra = (m - seq->part1_len) + r.sampling.max_tokens;
  const int per_layer = (seq->keep_all ? seq->part1_len : 1) + extra;
  const int64_t blocks = kvcache::SequenceCache::BlocksFor(
      std::vector<int>(info_.num_layers, per_layer), info_.num_kv_heads, config_.block_tokens);
  if (blocks > pool_->capacity_blocks()) {
    return Status::Error("kv cache: the request needs at least " +
                         std::to_string(blocks * pool_->BlockBytes()) +
                         " bytes of KV cache, the pool holds " +
                         std::to_string(pool_->CapacityBytes()) + " (kv_pool_bytes)");
  }
  return Status::Ok();
}

Status LlavaEngine::Submit(uint64_t seq_id, GenerationRequest request,
                           SequenceCallbacks callbacks) {
  auto seq = std::make_unique<Sequence>();
  VLCACHE_RETURN_IF_ERROR(Validate(request, seq.get()));
  seq->id = seq_id;
  seq->request = std::move(request);
  seq->callbacks = std::move(callbacks);
  seq->sampler = std::make_unique<Sampler>(seq->request.sampling, info_.image_token_id);
  seq->submitted = Clock::now();
  std::lock_guard<std::mutex> lock(mu_);
  if (!live_ids_.insert(seq_id).second) {
    return Status::Error("seq_id: " + std::to_string(seq_id) + " is already live");
  }
  incoming_.push_back(std::move(seq));
  ++waiting_count_;
  return Status::Ok();
}

void LlavaEngine::Cancel(uint64_t seq_id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (live_ids_.count(seq_id)) cancels_.insert(seq_id);
}

EngineMetrics LlavaEngine::Metrics() const {
  EngineMetrics m;
  m.kv_pool_capacity_bytes = pool_->CapacityBytes();
  m.kv_pool_free_bytes = pool_->FreeBytes();
  m.sequences_running = running_count_.load();
  m.sequences_waiting = waiting_count_.load();
  return m;
}

void LlavaEngine::Finish(std::unique_ptr<Sequence> seq, FinishReason reason,
                         const std::string& error) {
  if (seq->cache) seq->cache->Release();  // blocks go back before the callback runs
  {
    std::lock_guard<std::mutex> lock(mu_);
    live_ids_.erase(seq->id);
    cancels_.erase(seq->id);
  }
  if (seq->callbacks.on_finish) seq->callbacks.on_finish(reason, seq->stats, error);
}

bool LlavaEngine::HandleCancellations() {
  std::unordered_set<uint64_t> cancels;
  {
    std::lock_guard<std::mutex> lock(mu_);
    while (!incoming_.empty()) {
      waiting_.push_back(std::move(incoming_.front()));
      incoming_.pop_front();
    }
    cancels = cancels_;
  }
  if (cancels.empty()) return false;
  bool any = false;
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (cancels.count((*it)->id)) {
      std::unique_ptr<Sequence> seq = std::move(*it);
      it = waiting_.erase(it);
      --waiting_count_;
      Finish(std::move(seq), FinishReason::kCancelled, "");
      any = true;
    } else {
      ++it;
    }
  }
  for (auto it = running_.begin(); it != running_.end();) {
    if (cancels.count((*it)->id)) {
      std::unique_ptr<Sequence> seq = std::move(*it);
      it = running_.erase(it);
      --running_count_;
      Finish(std::move(seq), FinishReason::kCancelled, "");
      any = true;
    } else {
      ++it;
    }
  }
  return any;
}

Status LlavaEngine::Prepare(Sequence* seq) {
  const Clock::time_point start = Clock::now();
  const GenerationRequest& r = seq->request;
  const int m = seq->prompt_len, n1 = seq->part1_len;
  const int L = info_.num_layers, Hkv = info_.num_kv_heads;
  SequenceStats& st = seq->stats;
  st.queue_ms = std::chrono::duration<double, std::milli>(start - seq->submitted).count();
  st.prompt_tokens = m;
  st.policy = seq->policy;
  st.keep_ratio = seq->keep_ratio;
  st.budget_mode = seq->budget_mode;

  std::vector<float> features;
  model_->EncodeImages(r.images, &features);
  seq->embeddings.resize(static_cast<size_t>(m) * model_->hidden_size());
  model_->Embed(r.input_ids.data(), m, features.data(), seq->embeddings.data());
  int last_image = -1;
  for (int i = 0; i < n1; ++i) {
    if (r.input_ids[i] == info_.image_token_id) last_image = i;
  }
  for (int32_t id : r.input_ids) st.image_tokens += id == info_.image_token_id;

  model::PrefillOptions options;
  options.attention_chunk_rows = config_.attention_chunk_rows;
  if (!seq->keep_all) {
    options.scores = PlanScores(seq->policy, n1, last_image >= 0 ? last_image + 1 : -1);
  }
  PrefillStats measured;
  seq->logits.resize(info_.vocab_size);
  model_->Prefill(seq->embeddings.data(), n1, options, &scratch_, &measured, seq->logits.data());
  st.prefill_ms = MsSince(start);

  const Clock::time_point select_start = Clock::now();
  Selection& sel = seq->selection;
  if (seq->keep_all) {
    std::vector<int32_t> all(n1);
    for (int i = 0; i < n1; ++i) all[i] = i;
    sel.layer_budget.assign(L, n1);
    sel.keep.assign(L, std::vector<std::vector<int32_t>>(Hkv, all));
  } else {
    VLCACHE_RETURN_IF_ERROR(
        SelectKeep(seq->policy, seq->keep_ratio, seq->budget_mode, measured, &sel));
    if (static_cast<int>(sel.keep.size()) != L) {
      return Status::Error("policy " + seq->policy + ": selection has " +
                           std::to_string(sel.keep.size()) + " layers, the model " +
                           std::to_string(L));
    }
    for (int l = 0; l < L; ++l) {
      if (static_cast<int>(sel.keep[l].size()) != Hkv) {
        return Status::Error("policy " + seq->policy + ": layer " + std::to_string(l) +
                             " selection has the wrong number of kv heads");
      }
      for (const auto& keep : sel.keep[l]) {
        for (size_t i = 0; i < keep.size(); ++i) {
          if (keep[i] < 0 || keep[i] >= n1 || (i > 0 && keep[i] <= keep[i - 1])) {
            return Status::Error("policy " + seq->policy + ": layer " + std::to_string(l) +
                                 " keeps positions that are not ascending within the prompt");
          }
        }
      }
    }
  }
  st.layers.assign(L, LayerStats{});
  for (int l = 0; l < L; ++l) {
    int kept = 0;
    for (const auto& keep : sel.keep[l]) kept = std::max(kept, static_cast<int>(keep.size()));
    st.layers[l].budget = kept;
    if (!measured.sparsity.empty()) st.layers[l].sparsity = measured.sparsity[l];
  }
  st.compress_ms = MsSince(select_start);
  seq->prepared = true;
  return Status::Ok();
}

bool LlavaEngine::TryAdmit(Sequence* seq, Status* error) {
  const Clock::time_point start = Clock::now();
  const int L = info_.num_layers, Hkv = info_.num_kv_heads, d = info_.head_dim;
  const int n1 = seq->part1_len, part2 = seq->prompt_len - seq->part1_len;
  const int max_tokens = seq->request.sampling.max_tokens;
  std::vector<int> room(L);
  for (int l = 0; l < L; ++l) {
    int kept = 0;
    for (const auto& keep : seq->selection.keep[l]) kept = std::max(kept, static_cast<int>(keep.size()));
    // The last generated token is never fed back, hence max_tokens - 1.
    room[l] = kept + part2 + max_tokens - 1;
  }
  auto cache = std::make_unique<kvcache::SequenceCache>(pool_.get(), L, Hkv);
  if (!cache->Reserve(room)) {
    const int64_t need = kvcache::SequenceCache::BlocksFor(room, Hkv, config_.block_tokens);
    if (need > pool_->capacity_blocks()) {
      *error = Status::Error("kv cache: after compression the request needs " +
                             std::to_string(need * pool_->BlockBytes()) +
                             " bytes of KV cache, the pool holds " +
                             std::to_string(pool_->CapacityBytes()) + " (kv_pool_bytes)");
    }
    return false;
  }
  // Only the kept entries leave the scratch for the pool.
  SequenceStats& st = seq->stats;
  int64_t kept_entries = 0;
  for (int l = 0; l < L; ++l) {
    for (int h = 0; h < Hkv; ++h) {
      for (int32_t p : seq->selection.keep[l][h]) {
        cache->Append(l, h, scratch_.Key(l, p, h, d), scratch_.Value(l, p, h, d), p);
      }
      kept_entries += static_cast<int64_t>(seq->selection.keep[l][h].size());
    }
  }
  cache->set_next_position(n1);
  if (seq->request.return_kept_positions) st.kept_positions = seq->selection.keep;
  seq->selection = Selection{};
  st.compress_ms += MsSince(start);
  const int64_t full = static_cast<int64_t>(L) * Hkv * seq->prompt_len;
  st.kv_tokens_full = full;
  st.kv_tokens_kept = kept_entries + static_cast<int64_t>(L) * Hkv * part2;
  st.kv_bytes_full = full * KvBytesPerToken();
  st.kv_bytes_kept = st.kv_tokens_kept * KvBytesPerToken();
  seq->cache = std::move(cache);

  if (part2 > 0) {
    // Context-first: the rest of the prompt attends over the compressed cache.
    const Clock::time_point t = Clock::now();
    model::CachedForwardItem item;
    item.embeddings = seq->embeddings.data() + static_cast<int64_t>(n1) * model_->hidden_size();
    item.rows = part2;
    item.cache = seq->cache.get();
    item.logits = seq->logits.data();
    Status s = model_->ForwardCached(&item, 1);
    st.prefill_ms += MsSince(t);
    if (!s.ok()) {
      *error = s;
      return true;  // admitted, but failed: the caller finishes it
    }
  }
  seq->embeddings.clear();
  seq->embeddings.shrink_to_fit();
  return true;
}

bool LlavaEngine::EmitNextToken(Sequence* seq, FinishReason* reason) {
  const int32_t token = seq->sampler->Next(seq->logits.data(), info_.vocab_size);
  seq->last_token = token;
  ++seq->stats.completion_tokens;
  if (seq->callbacks.on_tokens) {
    new_tokens_.assign(1, token);
    seq->callbacks.on_tokens(new_tokens_);
  }
  const SamplingParams& sp = seq->request.sampling;
  const bool stop = (token == info_.eos_token_id && !sp.ignore_eos) ||
                    std::find(sp.stop_token_ids.begin(), sp.stop_token_ids.end(), token) !=
                        sp.stop_token_ids.end();
  if (stop) {
    *reason = FinishReason::kStop;
    return true;
  }
  if (seq->stats.completion_tokens >= sp.max_tokens) {
    *reason = FinishReason::kLength;
    return true;
  }
  return false;
}

void LlavaEngine::DecodeStep() {
  if (running_.empty()) return;
  const Clock::time_point start = Clock::now();
  const int B = static_cast<int>(running_.size());
  const int hidden = model_->hidden_size();
  if (step_embeddings_.size() < static_cast<size_t>(B) * hidden) {
    step_embeddings_.resize(static_cast<size_t>(B) * hidden);
  }
  step_items_.resize(B);
  for (int i = 0; i < B; ++i) {
    Sequence* seq = running_[i].get();
    float* e = step_embeddings_.data() + static_cast<int64_t>(i) * hidden;
    model_->Embed(&seq->last_token, 1, nullptr, e);
    step_items_[i].embeddings = e;
    step_items_[i].rows = 1;
    step_items_[i].cache = seq->cache.get();
    step_items_[i].logits = seq->logits.data();
  }
  const Status s = model_->ForwardCached(step_items_.data(), B);
  const double ms = MsSince(start);
  std::vector<std::unique_ptr<Sequence>>& still = still_running_;
  still.clear();
  for (auto& seq : running_) {
    seq->stats.decode_ms += ms;
    if (!s.ok()) {
      --running_count_;
      Finish(std::move(seq), FinishReason::kError, s.message);
      continue;
    }
    FinishReason reason;
    if (EmitNextToken(seq.get(), &reason)) {
      --running_count_;
      Finish(std::move(seq), reason, "");
    } else {
      still.push_back(std::move(seq));
    }
  }
  running_.swap(still);
  still.clear();
}

bool LlavaEngine::Step() {
  bool worked = HandleCancellations();
  int prefills = 0;
  while (!waiting_.empty() && static_cast<int>(running_.size()) < config_.max_batch) {
    Sequence* seq = waiting_.front().get();
    if (!seq->prepared) {
      if (prefills >= config_.max_prefills_per_step) break;
      ++prefills;
      worked = true;
      const Status s = Prepare(seq);
      if (!s.ok()) {
        std::unique_ptr<Sequence> failed = std::move(waiting_.front());
        waiting_.pop_front();
        --waiting_count_;
        Finish(std::move(failed), FinishReason::kError, s.message);
        continue;
      }
    }
    Status error;
    if (!TryAdmit(seq, &error)) {
      if (error.ok()) break;  // waits for blocks to come back
      std::unique_ptr<Sequence> failed = std::move(waiting_.front());
      waiting_.pop_front();
      --waiting_count_;
      Finish(std::move(failed), FinishReason::kError, error.message);
      continue;
    }
    worked = true;
    std::unique_ptr<Sequence> admitted = std::move(waiting_.front());
    waiting_.pop_front();
    --waiting_count_;
    if (!error.ok()) {
      Finish(std::move(admitted), FinishReason::kError, error.message);
      continue;
    }
    if (admitted->callbacks.on_compressed) admitted->callbacks.on_compressed(admitted->stats);
    if (admitted->callbacks.on_prompt_logits) {
      admitted->callbacks.on_prompt_logits(admitted->logits);
    }
    // The first token comes from the prefill's logits.
    FinishReason reason;
    if (EmitNextToken(admitted.get(), &reason)) {
      Finish(std::move(admitted), reason, "");
      continue;
    }
    running_.push_back(std::move(admitted));
    ++running_count_;
  }
  if (!running_.empty()) {
    DecodeStep();
    worked = true;
  }
  return worked;
}

}  // namespace engine
}  // namespace vlcache

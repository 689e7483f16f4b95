#include "model/llava_model.h"

#include <algorithm>
#include <cstring>

#include "model/status_macros.h"

namespace vlcache {
namespace model {
namespace {

template <typename T>
T* Grow(std::vector<T>* v, size_t n) {
  if (v->size() < n) v->resize(n);
  return v->data();
}

Status ActivationFor(const std::string& name, const std::string& field, kernels::Activation* act) {
  if (name == "gelu") *act = kernels::Activation::kGeluErf;
  else if (name == "gelu_pytorch_tanh" || name == "gelu_new" || name == "gelu_fast")
    *act = kernels::Activation::kGeluTanh;
  else if (name == "quick_gelu") *act = kernels::Activation::kQuickGelu;
  else if (name == "silu" || name == "swish") *act = kernels::Activation::kSilu;
  else if (name == "relu") *act = kernels::Activation::kRelu;
  else return Status::Error(field + ": activation '" + name + "' is not supported");
  return Status::Ok();
}

}  // namespace

void PrefillScratch::Resize(int num_layers, int length, int kv_width) {
  length_ = length;
  kv_width_ = kv_width;
  const size_t n = static_cast<size_t>(num_layers) * length * kv_width;
  if (k_.size() < n) {
    k_.resize(n);
    v_.resize(n);
  }
}

Status LlavaModel::Load(const std::string& dir, kernels::Ops* ops,
                        std::unique_ptr<LlavaModel>* out) {
  std::unique_ptr<LlavaModel> m(new LlavaModel(ops));
  VLCACHE_RETURN_IF_ERROR(LoadLlavaConfig(dir, &m->config_));
  VLCACHE_RETURN_IF_ERROR(
      ActivationFor(m->config_.vision.hidden_act, "vision_config.hidden_act", &m->vision_act_));
  VLCACHE_RETURN_IF_ERROR(ActivationFor(m->config_.projector_hidden_act,
                                        "config.json projector_hidden_act", &m->projector_act_));
  SafetensorsArchive archive;
  VLCACHE_RETURN_IF_ERROR(archive.OpenDirectory(dir));
  VLCACHE_RETURN_IF_ERROR(LoadLlavaWeights(archive, m->config_, &m->w_));
  *out = std::move(m);
  return Status::Ok();
}

Status LlavaModel::CheckImage(const Image& image) const {
  const int s = config_.vision.image_size;
  if (image.height != s || image.width != s) {
    return Status::Error("images: got " + std::to_string(image.height) + "x" +
                         std::to_string(image.width) + ", the model takes " + std::to_string(s) +
                         "x" + std::to_string(s));
  }
  if (image.rgb.size() != static_cast<size_t>(s) * s * 3) {
    return Status::Error("images: " + std::to_string(image.rgb.size()) +
                         " bytes of RGB data, expected height*width*3 = " +
                         std::to_string(static_cast<size_t>(s) * s * 3));
  }
  return Status::Ok();
}

void LlavaModel::VisionForward(const Image& image, float* out_features) {
  const VisionConfig& vc = config_.vision;
  const PreprocessConfig& pc = config_.preprocess;
  const int s = vc.image_size, p = vc.patch_size, side = s / p;
  const int patches = side * side, tokens = patches + 1;
  const int vh = vc.hidden_size, pp3 = 3 * p * p;

  // Patch matrix in the conv weight's (channel, ky, kx) order, normalised.
  float* patch = Grow(&vis_h_, static_cast<size_t>(patches) * pp3);
  for (int py = 0; py < side; ++py) {
    for (int px = 0; px < side; ++px) {
      float* row = patch + static_cast<int64_t>(py * side + px) * pp3;
      for (int c = 0; c < 3; ++c) {
        for (int ky = 0; ky < p; ++ky) {
          for (int kx = 0; kx < p; ++kx) {
            const int y = py * p + ky, x = px * p + kx;
            float v = image.rgb[(static_cast<size_t>(y) * s + x) * 3 + c];
            if (pc.do_rescale) v *= pc.rescale_factor;
            if (pc.do_normalize) v = (v - pc.mean[c]) / pc.std[c];
            row[c * p * p + ky * p + kx] = v;
          }
        }
      }
    }
  }
  float* x = Grow(&vis_x_, static_cast<size_t>(tokens) * vh);
  ops_->Linear(patch, patches, pp3, w_.patch_embedding.data(), nullptr, vh, x + vh);
  std::copy(w_.class_embedding.begin(), w_.class_embedding.end(), x);
  ops_->Add(x, w_.position_embedding.data(), static_cast<int64_t>(tokens) * vh);
  ops_->LayerNorm(x, tokens, vh, w_.pre_layernorm.w.data(), w_.pre_layernorm.b.data(),
                  vc.layer_norm_eps, x);

  float* h = Grow(&vis_h_, static_cast<size_t>(tokens) * std::max(vh, vc.intermediate_size));
  float* q = Grow(&vis_q_, static_cast<size_t>(tokens) * vh);
  float* k = Grow(&vis_k_, static_cast<size_t>(tokens) * vh);
  float* v = Grow(&vis_v_, static_cast<size_t>(tokens) * vh);
  float* attn = Grow(&vis_attn_, static_cast<size_t>(tokens) * vh);
  float* mlp = Grow(&vis_mlp_, static_cast<size_t>(tokens) * vc.intermediate_size);
  const int64_t n = static_cast<int64_t>(tokens) * vh;
  for (const VisionLayerWeights& L : w_.vision_layers) {
    ops_->LayerNorm(x, tokens, vh, L.ln1.w.data(), L.ln1.b.data(), vc.layer_norm_eps, h);
    ops_->Linear(h, tokens, vh, L.q.w.data(), L.q.bias(), vh, q);
    ops_->Linear(h, tokens, vh, L.k.w.data(), L.k.bias(), vh, k);
    ops_->Linear(h, tokens, vh, L.v.w.data(), L.v.bias(), vh, v);
    kernels::PrefillAttentionArgs a;
    a.q = q;
    a.k = k;
    a.v = v;
    a.out = attn;
    a.m = tokens;
    a.num_heads = a.num_kv_heads = vc.num_attention_heads;
    a.head_dim = vh / vc.num_attention_heads;
    a.causal = false;
    ops_->PrefillAttention(a);
    ops_->Linear(attn, tokens, vh, L.o.w.data(), L.o.bias(), vh, h);
    ops_->Add(x, h, n);
    ops_->LayerNorm(x, tokens, vh, L.ln2.w.data(), L.ln2.b.data(), vc.layer_norm_eps, h);
    ops_->Linear(h, tokens, vh, L.fc1.w.data(), L.fc1.bias(), vc.intermediate_size, mlp);
    ops_->Activate(vision_act_, mlp, static_cast<int64_t>(tokens) * vc.intermediate_size);
    ops_->Linear(mlp, tokens, vc.intermediate_size, L.fc2.w.data(), L.fc2.bias(), vh, h);
    ops_->Add(x, h, n);
  }
  // "default" drops the CLS token, "full" keeps it.
  const bool drop_cls = config_.vision_feature_select_strategy == "default";
  const float* feats = drop_cls ? x + vh : x;
  const int rows = drop_cls ? patches : tokens;
  const int th = config_.text.hidden_size;
  float* mid = Grow(&vis_mlp_, static_cast<size_t>(rows) * th);
  ops_->Linear(feats, rows, vh, w_.projector1.w.data(), w_.projector1.bias(), th, mid);
  ops_->Activate(projector_act_, mid, static_cast<int64_t>(rows) * th);
  ops_->Linear(mid, rows, th, w_.projector2.w.data(), w_.projector2.bias(), th, out_features);
}

void LlavaModel::EncodeImages(const std::vector<Image>& images, std::vector<float>* features) {
  const int64_t per = static_cast<int64_t>(config_.ImageTokens()) * config_.text.hidden_size;
  features->resize(static_cast<size_t>(per * images.size()));
  for (size_t i = 0; i < images.size(); ++i) VisionForward(images[i], features->data() + per * i);
}

void LlavaModel::Embed(const int32_t* ids, int n, const float* features, float* out) const {
  const int th = config_.text.hidden_size;
  int64_t next_feature = 0;
  for (int i = 0; i < n; ++i) {
    const float* src = ids[i] == config_.image_token_id
                           ? features + (next_feature++) * th
                           : w_.embed_tokens.data() + static_cast<int64_t>(ids[i]) * th;
    std::memcpy(out + static_cast<int64_t>(i) * th, src, sizeof(float) * th);
  }
}

void LlavaModel::Prefill(const float* embeddings, int m, const PrefillOptions& options,
                         PrefillScratch* scratch, PrefillStats* stats, float* last_logits) {
  const TextConfig& t = config_.text;
  const int th = t.hidden_size, H = t.num_attention_heads, Hkv = t.num_key_value_heads;
  const int d = t.head_dim, qw = H * d, kvw = Hkv * d, inter = t.intermediate_size;
  const int L = t.num_hidden_layers;
  scratch->Resize(L, m, kvw);
  float* x = Grow(&x_, static_cast<size_t>(m) * th);
  std::memcpy(x, embeddings, sizeof(float) * m * th);
  float* h = Grow(&h_, static_cast<size_t>(m) * std::max(th, qw));
  float* q = Grow(&q_, static_cast<size_t>(m) * qw);
  float* attn = Grow(&attn_, static_cast<size_t>(m) * qw);
  float* gate = Grow(&mlp_gate_, static_cast<size_t>(m) * inter);
  float* up = Grow(&mlp_up_, static_cast<size_t>(m) * inter);
  int32_t* pos = Grow(&positions_, static_cast<size_t>(m));
  for (int i = 0; i < m; ++i) pos[i] = i;

  const ScoreRequest& req = options.scores;
  const bool want_scores = req.score_rows_begin >= 0 && req.score_rows_begin < m;
  const bool want_sparsity = req.sparsity_rows_begin >= 0 && req.sparsity_rows_begin < m;
  stats->num_layers = L;
  stats->num_kv_heads = Hkv;
  stats->prompt_len = m;
  stats->scores.clear();
  stats->sparsity.clear();
  if (want_scores) stats->scores.assign(L, std::vector<std::vector<float>>(Hkv));
  if (want_sparsity) stats->sparsity.assign(L, 0.0);

  const int64_t n = static_cast<int64_t>(m) * th;
  for (int l = 0; l < L; ++l) {
    const DecoderLayerWeights& W = w_.layers[l];
    float* k = scratch->Keys(l);
    float* v = scratch->Values(l);
    ops_->RmsNorm(x, m, th, W.input_norm.w.data(), t.rms_norm_eps, h);
    ops_->Linear(h, m, th, W.q.w.data(), W.q.bias(), qw, q);
    ops_->Linear(h, m, th, W.k.w.data(), W.k.bias(), kvw, k);
    ops_->Linear(h, m, th, W.v.w.data(), W.v.bias(), kvw, v);
    ops_->Rope(q, m, H, d, qw, pos, t.rope_theta);
    ops_->Rope(k, m, Hkv, d, kvw, pos, t.rope_theta);

    kernels::PrefillAttentionArgs a;
    a.q = q;
    a.k = k;
    a.v = v;
    a.out = attn;
    a.m = m;
    a.num_heads = H;
    a.num_kv_heads = Hkv;
    a.head_dim = d;
    a.causal = true;
    a.chunk_rows = options.attention_chunk_rows;
    if (want_scores) {
      a.score_rows_begin = req.score_rows_begin;
      a.column_scores = Grow(&column_scores_, static_cast<size_t>(Hkv) * m);
      std::fill(a.column_scores, a.column_scores + static_cast<int64_t>(Hkv) * m, 0.f);
    }
    if (want_sparsity) {
      a.sparsity_rows_begin = req.sparsity_rows_begin;
      a.sparsity_threshold = kSparsityThreshold;
      a.sparse_counts = Grow(&sparse_counts_, static_cast<size_t>(H));
      std::fill(a.sparse_counts, a.sparse_counts + H, 0);
    }
    ops_->PrefillAttention(a);
    if (want_scores) {
      for (int kvh = 0; kvh < Hkv; ++kvh) {
        const float* src = a.column_scores + static_cast<int64_t>(kvh) * m;
        stats->scores[l][kvh].assign(src, src + m);
      }
    }
    if (want_sparsity) {
      // Causal entries of rows s..m-1: sum of (q + 1).
      const int64_t s = req.sparsity_rows_begin;
      const double entries = static_cast<double>(m - s) * (s + 1 + m) / 2.0;
      int64_t sparse = 0;
      for (int hh = 0; hh < H; ++hh) sparse += a.sparse_counts[hh];
      stats->sparsity[l] = static_cast<double>(sparse) / (entries * H);
    }

    ops_->Linear(attn, m, qw, W.o.w.data(), W.o.bias(), th, h);
    ops_->Add(x, h, n);
    ops_->RmsNorm(x, m, th, W.post_attention_norm.w.data(), t.rms_norm_eps, h);
    ops_->Linear(h, m, th, W.gate.w.data(), W.gate.bias(), inter, gate);
    ops_->Linear(h, m, th, W.up.w.data(), W.up.bias(), inter, up);
    ops_->SiluMul(gate, up, static_cast<int64_t>(m) * inter);
    ops_->Linear(gate, m, inter, W.down.w.data(), W.down.bias(), th, h);
    ops_->Add(x, h, n);
  }
  const float* last = x + static_cast<int64_t>(m - 1) * th;
  ops_->RmsNorm(last, 1, th, w_.final_norm.w.data(), t.rms_norm_eps, h);
  ops_->Linear(h, 1, th, w_.lm_head.w.data(), nullptr, t.vocab_size, last_logits);
}

Status LlavaModel::ForwardCached(const CachedForwardItem* items, int num_items) {
  const TextConfig& t = config_.text;
  const int th = t.hidden_size, H = t.num_attention_heads, Hkv = t.num_key_value_heads;
  const int d = t.head_dim, qw = H * d, kvw = Hkv * d, inter = t.intermediate_size;
  int rows = 0;
  for (int i = 0; i < num_items; ++i) rows += items[i].rows;
  if (rows == 0) return Status::Ok();
  float* x = Grow(&x_, static_cast<size_t>(rows) * th);
  float* h = Grow(&h_, static_cast<size_t>(rows) * std::max(th, qw));
  float* q = Grow(&q_, static_cast<size_t>(rows) * qw);
  float* k = Grow(&k_, static_cast<size_t>(rows) * kvw);
  float* v = Grow(&v_, static_cast<size_t>(rows) * kvw);
  float* attn = Grow(&attn_, static_cast<size_t>(rows) * qw);
  float* gate = Grow(&mlp_gate_, static_cast<size_t>(rows) * inter);
  float* up = Grow(&mlp_up_, static_cast<size_t>(rows) * inter);
  int32_t* pos = Grow(&positions_, static_cast<size_t>(rows));
  kernels::PagedKvView* views = Grow(&views_, static_cast<size_t>(num_items) * Hkv);
  kernels::PagedAttentionItem* att = Grow(&att_items_, static_cast<size_t>(num_items));
  {
    int r = 0;
    for (int i = 0; i < num_items; ++i) {
      std::memcpy(x + static_cast<int64_t>(r) * th, items[i].embeddings,
                  sizeof(float) * items[i].rows * th);
      for (int j = 0; j < items[i].rows; ++j) pos[r + j] = items[i].cache->next_position() + j;
      r += items[i].rows;
    }
  }
  const kernels::PagedPool pool = items[0].cache->pool()->View();
  const int64_t n = static_cast<int64_t>(rows) * th;
  for (int l = 0; l < t.num_hidden_layers; ++l) {
    const DecoderLayerWeights& W = w_.layers[l];
    ops_->RmsNorm(x, rows, th, W.input_norm.w.data(), t.rms_norm_eps, h);
    ops_->Linear(h, rows, th, W.q.w.data(), W.q.bias(), qw, q);
    ops_->Linear(h, rows, th, W.k.w.data(), W.k.bias(), kvw, k);
    ops_->Linear(h, rows, th, W.v.w.data(), W.v.bias(), kvw, v);
    ops_->Rope(q, rows, H, d, qw, pos, t.rope_theta);
    ops_->Rope(k, rows, Hkv, d, kvw, pos, t.rope_theta);
    int r = 0;
    for (int i = 0; i < num_items; ++i) {
      kvcache::SequenceCache* cache = items[i].cache;
      for (int j = 0; j < items[i].rows; ++j) {
        for (int kvh = 0; kvh < Hkv; ++kvh) {
          const int64_t off = static_cast<int64_t>(r + j) * kvw + kvh * d;
          if (!cache->Append(l, kvh, k + off, v + off, pos[r + j])) {
            return Status::Error("KV cache: no reserved room left in layer " + std::to_string(l));
          }
        }
      }
      for (int kvh = 0; kvh < Hkv; ++kvh) views[i * Hkv + kvh] = cache->View(l, kvh);
      att[i].q = q + static_cast<int64_t>(r) * qw;
      att[i].out = attn + static_cast<int64_t>(r) * qw;
      att[i].rows = items[i].rows;
      att[i].kv = views + i * Hkv;
      r += items[i].rows;
    }
    ops_->PagedAttention(pool, att, num_items, H, Hkv);
    ops_->Linear(attn, rows, qw, W.o.w.data(), W.o.bias(), th, h);
    ops_->Add(x, h, n);
    ops_->RmsNorm(x, rows, th, W.post_attention_norm.w.data(), t.rms_norm_eps, h);
    ops_->Linear(h, rows, th, W.gate.w.data(), W.gate.bias(), inter, gate);
    ops_->Linear(h, rows, th, W.up.w.data(), W.up.bias(), inter, up);
    ops_->SiluMul(gate, up, static_cast<int64_t>(rows) * inter);
    ops_->Linear(gate, rows, inter, W.down.w.data(), W.down.bias(), th, h);
    ops_->Add(x, h, n);
  }
  // Only the last row of each item needs logits.
  float* last = Grow(&last_rows_, static_cast<size_t>(num_items) * th);
  {
    int r = 0;
    for (int i = 0; i < num_items; ++i) {
      r += items[i].rows;
      std::memcpy(last + static_cast<int64_t>(i) * th, x + static_cast<int64_t>(r - 1) * th,
                  sizeof(float) * th);
      items[i].cache->set_next_position(items[i].cache->next_position() + items[i].rows);
    }
  }
  ops_->RmsNorm(last, num_items, th, w_.final_norm.w.data(), t.rms_norm_eps, last);
  float* logits = Grow(&logits_, static_cast<size_t>(num_items) * t.vocab_size);
  ops_->Linear(last, num_items, th, w_.lm_head.w.data(), nullptr, t.vocab_size, logits);
  for (int i = 0; i < num_items; ++i) {
    std::memcpy(items[i].logits, logits + static_cast<int64_t>(i) * t.vocab_size,
                sizeof(float) * t.vocab_size);
  }
  return Status::Ok();
}

}  // namespace model
}  // namespace vlcache

#include "model/llava_weights.h"

#include "model/status_macros.h"

namespace vlcache {
namespace model {
namespace {

// First prefix under which `probe` exists, or "" when none does.
std::string FindPrefix(const SafetensorsArchive& a, const std::vector<std::string>& prefixes,
                       const std::string& probe) {
  for (const std::string& p : prefixes) {
    if (a.Has(p + probe)) return p;
  }
  return "";
}

class Reader {
 public:
  explicit Reader(const SafetensorsArchive& a) : a_(a) {}

  Status Vec(const std::string& name, int64_t n, std::vector<float>* out) {
    return a_.ReadF32(name, {n}, out);
  }
  Status Mat(const std::string& name, int64_t rows, int64_t cols, std::vector<float>* out) {
    return a_.ReadF32(name, {rows, cols}, out);
  }
  Status Linear(const std::string& prefix, int in, int out, bool bias, LinearWeights* w) {
    w->in = in;
    w->out = out;
    VLCACHE_RETURN_IF_ERROR(Mat(prefix + ".weight", out, in, &w->w));
    if (bias) VLCACHE_RETURN_IF_ERROR(Vec(prefix + ".bias", out, &w->b));
    return Status::Ok();
  }
  Status Norm(const std::string& prefix, int dim, bool bias, NormWeights* n) {
    VLCACHE_RETURN_IF_ERROR(Vec(prefix + ".weight", dim, &n->w));
    if (bias) VLCACHE_RETURN_IF_ERROR(Vec(prefix + ".bias", dim, &n->b));
    return Status::Ok();
  }

 private:
  const SafetensorsArchive& a_;
};

}  // namespace

Status LoadLlavaWeights(const SafetensorsArchive& archive, const LlavaConfig& c,
                        LlavaWeights* w) {
  Reader r(archive);
  const std::string vp = FindPrefix(
      archive,
      {"vision_tower.vision_model.", "model.vision_tower.vision_model.", "vision_tower.",
       "model.vision_tower."},
      "embeddings.patch_embedding.weight");
  if (vp.empty()) {
    return Status::Error(
        "missing tensor vision_tower.vision_model.embeddings.patch_embedding.weight (no vision "
        "tower under any known name layout)");
  }
  const std::string lp = FindPrefix(
      archive, {"language_model.model.", "model.language_model.", "language_model.", "model."},
      "embed_tokens.weight");
  if (lp.empty()) {
    return Status::Error(
        "missing tensor language_model.model.embed_tokens.weight (no language model under any "
        "known name layout)");
  }
  const std::string pp =
      FindPrefix(archive, {"multi_modal_projector.", "model.multi_modal_projector."},
                 "linear_1.weight");
  if (pp.empty()) return Status::Error("missing tensor multi_modal_projector.linear_1.weight");

  const VisionConfig& v = c.vision;
  const int vh = v.hidden_size;
  const int p = v.patch_size;
  const int patches = c.PatchesPerSide() * c.PatchesPerSide();
  VLCACHE_RETURN_IF_ERROR(r.Vec(vp + "embeddings.class_embedding", vh, &w->class_embedding));
  VLCACHE_RETURN_IF_ERROR(archive.ReadF32(vp + "embeddings.patch_embedding.weight",
                                          {vh, v.num_channels, p, p}, &w->patch_embedding));
  VLCACHE_RETURN_IF_ERROR(
      r.Mat(vp + "embeddings.position_embedding.weight", patches + 1, vh, &w->position_embedding));
  VLCACHE_RETURN_IF_ERROR(r.Norm(vp + "pre_layrnorm", vh, true, &w->pre_layernorm));
  w->vision_layers.resize(c.VisionLayersToRun());
  for (int i = 0; i < c.VisionLayersToRun(); ++i) {
    const std::string lpfx = vp + "encoder.layers." + std::to_string(i) + ".";
    VisionLayerWeights& L = w->vision_layers[i];
    VLCACHE_RETURN_IF_ERROR(r.Norm(lpfx + "layer_norm1", vh, true, &L.ln1));
    VLCACHE_RETURN_IF_ERROR(r.Norm(lpfx + "layer_norm2", vh, true, &L.ln2));
    VLCACHE_RETURN_IF_ERROR(r.Linear(lpfx + "self_attn.q_proj", vh, vh, true, &L.q));
    VLCACHE_RETURN_IF_ERROR(r.Linear(lpfx + "self_attn.k_proj", vh, vh, true, &L.k));
    VLCACHE_RETURN_IF_ERROR(r.Linear(lpfx + "self_attn.v_proj", vh, vh, true, &L.v));
    VLCACHE_RETURN_IF_ERROR(r.Linear(lpfx + "self_attn.out_proj", vh, vh, true, &L.o));
    VLCACHE_RETURN_IF_ERROR(r.Linear(lpfx + "mlp.fc1", vh, v.intermediate_size, true, &L.fc1));
    VLCACHE_RETURN_IF_ERROR(r.Linear(lpfx + "mlp.fc2", v.intermediate_size, vh, true, &L.fc2));
  }

  const TextConfig& t = c.text;
  const int th = t.hidden_size;
  VLCACHE_RETURN_IF_ERROR(r.Linear(pp + "linear_1", vh, th, c.projector_bias, &w->projector1));
  VLCACHE_RETURN_IF_ERROR(r.Linear(pp + "linear_2", th, th, c.projector_bias, &w->projector2));

  const int qdim = t.num_attention_heads * t.head_dim;
  const int kvdim = t.num_key_value_heads * t.head_dim;
  VLCACHE_RETURN_IF_ERROR(r.Mat(lp + "embed_tokens.weight", t.vocab_size, th, &w->embed_tokens));
  w->layers.resize(t.num_hidden_layers);
  for (int i = 0; i < t.num_hidden_layers; ++i) {
    const std::string lpfx = lp + "layers." + std::to_string(i) + ".";
    DecoderLayerWeights& L = w->layers[i];
    VLCACHE_RETURN_IF_ERROR(r.Norm(lpfx + "input_layernorm", th, false, &L.input_norm));
    VLCACHE_RETURN_IF_ERROR(
        r.Norm(lpfx + "post_attention_layernorm", th, false, &L.post_attention_norm));
    VLCACHE_RETURN_IF_ERROR(r.Linear(lpfx + "self_attn.q_proj", th, qdim, t.attention_bias, &L.q));
    VLCACHE_RETURN_IF_ERROR(r.Linear(lpfx + "self_attn.k_proj", th, kvdim, t.attention_bias, &L.k));
    VLCACHE_RETURN_IF_ERROR(r.Linear(lpfx + "self_attn.v_proj", th, kvdim, t.attention_bias, &L.v));
    VLCACHE_RETURN_IF_ERROR(r.Linear(lpfx + "self_attn.o_proj", qdim, th, t.attention_bias, &L.o));
    VLCACHE_RETURN_IF_ERROR(r.Linear(lpfx + "mlp.gate_proj", th, t.intermediate_size, t.mlp_bias, &L.gate));
    VLCACHE_RETURN_IF_ERROR(r.Linear(lpfx + "mlp.up_proj", th, t.intermediate_size, t.mlp_bias, &L.up));
    VLCACHE_RETURN_IF_ERROR(r.Linear(lpfx + "mlp.down_proj", t.intermediate_size, th, t.mlp_bias, &L.down));
  }
  VLCACHE_RETURN_IF_ERROR(r.Norm(lp + "norm", th, false, &w->final_norm));
  w->lm_head.in = th;
  w->lm_head.out = t.vocab_size;
  const std::string head =
      archive.Has("language_model.lm_head.weight") ? "language_model.lm_head.weight"
                                                   : "lm_head.weight";
  if (archive.Has(head)) {
    VLCACHE_RETURN_IF_ERROR(r.Mat(head, t.vocab_size, th, &w->lm_head.w));
  } else if (t.tie_word_embeddings) {
    w->lm_head.w = w->embed_tokens;
  } else {
    return Status::Error("missing tensor language_model.lm_head.weight (and tie_word_embeddings is false)");
  }
  return Status::Ok();
}

}  // namespace model
}  // namespace vlcache

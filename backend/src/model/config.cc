#include "model/config.h"

#include "model/status_macros.h"

#include <fstream>
#include <nlohmann/json.hpp>

namespace vlcache {
namespace model {
namespace {

using nlohmann::json;

Status ReadJson(const std::string& path, json* out) {
  std::ifstream in(path);
  if (!in) return Status::Error("cannot open " + path);
  try {
    *out = json::parse(in);
  } catch (const std::exception& e) {
    return Status::Error(path + ": invalid JSON: " + e.what());
  }
  if (!out->is_object()) return Status::Error(path + ": not a JSON object");
  return Status::Ok();
}

// Reads j[key] into *v when present and not null; a present value of the
// wrong type is an error naming the field.
template <typename T>
Status Field(const json& j, const char* key, const std::string& where, T* v) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return Status::Ok();
  try {
    *v = it->get<T>();
  } catch (const std::exception&) {
    return Status::Error(where + key + ": unexpected type " + it->type_name());
  }
  return Status::Ok();
}

#define RETURN_IF_ERROR VLCACHE_RETURN_IF_ERROR

Status ParseRope(const json& t, TextConfig* text) {
  // transformers >= 5: rope_parameters {rope_type, rope_theta}; hub style:
  // rope_theta + rope_scaling. Only unscaled RoPE is implemented.
  auto params = t.find("rope_parameters");
  if (params != t.end() && params->is_object()) {
    std::string type = "default";
    RETURN_IF_ERROR(Field(*params, "rope_type", "text_config.rope_parameters.", &type));
    if (type != "default") {
      return Status::Error("text_config.rope_parameters.rope_type: '" + type +
                           "' is not supported (only default RoPE)");
    }
    RETURN_IF_ERROR(Field(*params, "rope_theta", "text_config.rope_parameters.", &text->rope_theta));
    return Status::Ok();
  }
  RETURN_IF_ERROR(Field(t, "rope_theta", "text_config.", &text->rope_theta));
  auto scaling = t.find("rope_scaling");
  if (scaling != t.end() && !scaling->is_null()) {
    std::string type;
    if (scaling->is_object()) {
      if (scaling->contains("rope_type")) type = (*scaling)["rope_type"].get<std::string>();
      else if (scaling->contains("type")) type = (*scaling)["type"].get<std::string>();
    }
    if (type != "default") {
      return Status::Error("text_config.rope_scaling: '" + scaling->dump() +
                           "' is not supported (only unscaled RoPE)");
    }
  }
  return Status::Ok();
}

Status ParseText(const json* t, TextConfig* text) {
  if (!t) return Status::Ok();  // LLaVA's default text model: Llama defaults
  const std::string w = "text_config.";
  RETURN_IF_ERROR(Field(*t, "model_type", w, &text->model_type));
  if (text->model_type == "mistral") {
    // MistralConfig's defaults differ from Llama's where fields are absent.
    text->intermediate_size = 14336;
    text->num_key_value_heads = 8;
    text->max_position_embeddings = 4096 * 32;
    text->sliding_window = 4096;
  } else if (text->model_type != "llama") {
    return Status::Error("text_config.model_type: '" + text->model_type +
                         "' is not supported (llama, mistral)");
  }
  RETURN_IF_ERROR(Field(*t, "vocab_size", w, &text->vocab_size));
  RETURN_IF_ERROR(Field(*t, "hidden_size", w, &text->hidden_size));
  RETURN_IF_ERROR(Field(*t, "intermediate_size", w, &text->intermediate_size));
  RETURN_IF_ERROR(Field(*t, "num_hidden_layers", w, &text->num_hidden_layers));
  RETURN_IF_ERROR(Field(*t, "num_attention_heads", w, &text->num_attention_heads));
  if (text->model_type == "llama") text->num_key_value_heads = text->num_attention_heads;
  RETURN_IF_ERROR(Field(*t, "num_key_value_heads", w, &text->num_key_value_heads));
  text->head_dim = text->num_attention_heads > 0 ? text->hidden_size / text->num_attention_heads : 0;
  RETURN_IF_ERROR(Field(*t, "head_dim", w, &text->head_dim));
  RETURN_IF_ERROR(Field(*t, "hidden_act", w, &text->hidden_act));
  RETURN_IF_ERROR(Field(*t, "max_position_embeddings", w, &text->max_position_embeddings));
  RETURN_IF_ERROR(Field(*t, "rms_norm_eps", w, &text->rms_norm_eps));
  RETURN_IF_ERROR(Field(*t, "attention_bias", w, &text->attention_bias));
  RETURN_IF_ERROR(Field(*t, "mlp_bias", w, &text->mlp_bias));
  RETURN_IF_ERROR(Field(*t, "bos_token_id", w, &text->bos_token_id));
  auto eos = t->find("eos_token_id");
  if (eos != t->end() && eos->is_array() && !eos->empty()) {
    text->eos_token_id = (*eos)[0].get<int>();
  } else {
    RETURN_IF_ERROR(Field(*t, "eos_token_id", w, &text->eos_token_id));
  }
  if (text->model_type == "mistral") {
    auto sw = t->find("sliding_window");
    if (sw != t->end()) text->sliding_window = sw->is_null() ? 0 : sw->get<int>();
  }
  RETURN_IF_ERROR(ParseRope(*t, text));
  if (text->hidden_act != "silu") {
    return Status::Error("text_config.hidden_act: '" + text->hidden_act + "' is not supported (silu)");
  }
  if (text->num_attention_heads <= 0 || text->num_key_value_heads <= 0 ||
      text->num_attention_heads % text->num_key_value_heads != 0) {
    return Status::Error("text_config.num_key_value_heads: must divide num_attention_heads");
  }
  if (text->head_dim <= 0 || text->head_dim % 2 != 0) {
    return Status::Error("text_config.head_dim: must be a positive even number");
  }
  return Status::Ok();
}

Status ParseVision(const json* v, VisionConfig* vision) {
  if (!v) return Status::Ok();  // LLaVA's default CLIP ViT-L/14-336
  // A present vision_config starts from CLIPVisionConfig's own defaults.
  *vision = VisionConfig{};
  vision->hidden_size = 768;
  vision->intermediate_size = 3072;
  vision->num_hidden_layers = 12;
  vision->num_attention_heads = 12;
  vision->image_size = 224;
  vision->patch_size = 32;
  const std::string w = "vision_config.";
  RETURN_IF_ERROR(Field(*v, "model_type", w, &vision->model_type));
  if (vision->model_type != "clip_vision_model") {
    return Status::Error("vision_config.model_type: '" + vision->model_type +
                         "' is not supported (clip_vision_model)");
  }
  RETURN_IF_ERROR(Field(*v, "hidden_size", w, &vision->hidden_size));
  RETURN_IF_ERROR(Field(*v, "intermediate_size", w, &vision->intermediate_size));
  RETURN_IF_ERROR(Field(*v, "num_hidden_layers", w, &vision->num_hidden_layers));
  RETURN_IF_ERROR(Field(*v, "num_attention_heads", w, &vision->num_attention_heads));
  RETURN_IF_ERROR(Field(*v, "num_channels", w, &vision->num_channels));
  RETURN_IF_ERROR(Field(*v, "image_size", w, &vision->image_size));
  RETURN_IF_ERROR(Field(*v, "patch_size", w, &vision->patch_size));
  RETURN_IF_ERROR(Field(*v, "hidden_act", w, &vision->hidden_act));
  RETURN_IF_ERROR(Field(*v, "layer_norm_eps", w, &vision->layer_norm_eps));
  if (vision->num_channels != 3) return Status::Error("vision_config.num_channels: must be 3");
  if (vision->patch_size <= 0 || vision->image_size % vision->patch_size != 0) {
    return Status::Error("vision_config.patch_size: must divide image_size");
  }
  if (vision->num_attention_heads <= 0 || vision->hidden_size % vision->num_attention_heads != 0) {
    return Status::Error("vision_config.num_attention_heads: must divide hidden_size");
  }
  return Status::Ok();
}

Status ParsePreprocess(const std::string& dir, const VisionConfig& vision, PreprocessConfig* p) {
  p->height = p->width = vision.image_size;
  std::ifstream probe(dir + "/preprocessor_config.json");
  if (!probe) return Status::Ok();  // CLIP defaults
  json j;
  RETURN_IF_ERROR(ReadJson(dir + "/preprocessor_config.json", &j));
  const std::string w = "preprocessor_config.";
  RETURN_IF_ERROR(Field(j, "do_rescale", w, &p->do_rescale));
  RETURN_IF_ERROR(Field(j, "do_normalize", w, &p->do_normalize));
  RETURN_IF_ERROR(Field(j, "rescale_factor", w, &p->rescale_factor));
  for (const char* key : {"image_mean", "image_std"}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_array() || it->size() != 3) {
      return Status::Error(w + key + ": expected 3 numbers");
    }
    float* dst = std::string(key) == "image_mean" ? p->mean : p->std;
    for (int c = 0; c < 3; ++c) dst[c] = (*it)[c].get<float>();
  }
  for (int c = 0; c < 3; ++c) {
    if (!(p->std[c] > 0)) return Status::Error(w + "image_std: must be positive");
  }
  // The engine takes images already at the model's input size: crop_size (or
  // size) must agree with the vision tower.
  auto crop = j.find("crop_size");
  auto size = j.find("size");
  const json* box = nullptr;
  if (crop != j.end() && crop->is_object()) box = &*crop;
  else if (size != j.end() && size->is_object() && size->contains("height")) box = &*size;
  if (box) {
    int h = p->height, wd = p->width;
    RETURN_IF_ERROR(Field(*box, "height", w + "crop_size.", &h));
    RETURN_IF_ERROR(Field(*box, "width", w + "crop_size.", &wd));
    if (h != vision.image_size || wd != vision.image_size) {
      return Status::Error(w + "crop_size: " + std::to_string(h) + "x" + std::to_string(wd) +
                           " does not match vision_config.image_size " +
                           std::to_string(vision.image_size));
    }
  }
  return Status::Ok();
}

}  // namespace

Status LoadLlavaConfig(const std::string& dir, LlavaConfig* out) {
  json j;
  RETURN_IF_ERROR(ReadJson(dir + "/config.json", &j));
  LlavaConfig c;
  auto arch = j.find("architectures");
  if (arch != j.end() && arch->is_array() && !arch->empty()) {
    c.architecture = (*arch)[0].get<std::string>();
  }
  if (c.architecture != "LlavaForConditionalGeneration") {
    return Status::Error("config.json architectures: '" + c.architecture +
                         "' is not supported (LlavaForConditionalGeneration)");
  }
  std::string model_type;
  RETURN_IF_ERROR(Field(j, "model_type", "config.json ", &model_type));
  if (model_type != "llava") {
    return Status::Error("config.json model_type: '" + model_type + "' is not supported (llava)");
  }
  auto text = j.find("text_config");
  auto vision = j.find("vision_config");
  RETURN_IF_ERROR(ParseText(text != j.end() && text->is_object() ? &*text : nullptr, &c.text));
  RETURN_IF_ERROR(
      ParseVision(vision != j.end() && vision->is_object() ? &*vision : nullptr, &c.vision));
  // Legacy checkpoints say image_token_index, transformers 5 image_token_id.
  RETURN_IF_ERROR(Field(j, "image_token_index", "config.json ", &c.image_token_id));
  RETURN_IF_ERROR(Field(j, "image_token_id", "config.json ", &c.image_token_id));
  auto layer = j.find("vision_feature_layer");
  if (layer != j.end() && layer->is_array()) {
    return Status::Error("config.json vision_feature_layer: a list of layers is not supported");
  }
  RETURN_IF_ERROR(Field(j, "vision_feature_layer", "config.json ", &c.vision_feature_layer));
  RETURN_IF_ERROR(Field(j, "vision_feature_select_strategy", "config.json ",
                        &c.vision_feature_select_strategy));
  RETURN_IF_ERROR(Field(j, "projector_hidden_act", "config.json ", &c.projector_hidden_act));
  RETURN_IF_ERROR(Field(j, "multimodal_projector_bias", "config.json ", &c.projector_bias));
  RETURN_IF_ERROR(Field(j, "torch_dtype", "config.json ", &c.dtype));
  RETURN_IF_ERROR(Field(j, "dtype", "config.json ", &c.dtype));
  // tie_word_embeddings may sit at the top level or in text_config.
  RETURN_IF_ERROR(Field(j, "tie_word_embeddings", "config.json ", &c.text.tie_word_embeddings));
  if (text != j.end() && text->is_object()) {
    RETURN_IF_ERROR(Field(*text, "tie_word_embeddings", "text_config.", &c.text.tie_word_embeddings));
  }
  if (c.vision_feature_select_strategy != "default" && c.vision_feature_select_strategy != "full") {
    return Status::Error("config.json vision_feature_select_strategy: '" +
                         c.vision_feature_select_strategy + "' is not supported (default, full)");
  }
  const int run = c.VisionLayersToRun();
  if (run < 0 || run > c.vision.num_hidden_layers) {
    return Status::Error("config.json vision_feature_layer: " +
                         std::to_string(c.vision_feature_layer) + " is out of range for " +
                         std::to_string(c.vision.num_hidden_layers) + " vision layers");
  }
  if (c.image_token_id < 0 || c.image_token_id >= c.text.vocab_size) {
    return Status::Error("config.json image_token_index: " + std::to_string(c.image_token_id) +
                         " is outside the vocabulary");
  }
  RETURN_IF_ERROR(ParsePreprocess(dir, c.vision, &c.preprocess));
  *out = c;
  return Status::Ok();
}

}  // namespace model
}  // namespace vlcache

// The parts of a Hugging Face LLaVA checkpoint's config.json and
// preprocessor_config.json that the engine runs on, with the defaults
// transformers applies when a field is absent.
#pragma once

#include <string>

#include "engine/engine.h"  // Status

namespace vlcache {
namespace model {

struct VisionConfig {
  std::string model_type = "clip_vision_model";
  int hidden_size = 1024;
  int intermediate_size = 4096;
  int num_hidden_layers = 24;
  int num_attention_heads = 16;
  int num_channels = 3;
  int image_size = 336;
  int patch_size = 14;
  std::string hidden_act = "quick_gelu";
  float layer_norm_eps = 1e-5f;
};

struct TextConfig {
  std::string model_type = "llama";
  int vocab_size = 32000;
  int hidden_size = 4096;
  int intermediate_size = 11008;
  int num_hidden_layers = 32;
  int num_attention_heads = 32;
  int num_key_value_heads = 32;
  int head_dim = 128;
  std::string hidden_act = "silu";
  int max_position_embeddings = 2048;
  float rms_norm_eps = 1e-6f;
  float rope_theta = 10000.f;
  bool attention_bias = false;
  bool mlp_bias = false;
  bool tie_word_embeddings = false;
  int sliding_window = 0;  // Mistral; 0 = none
  int bos_token_id = 1;
  int eos_token_id = 2;
};

struct PreprocessConfig {
  int height = 0, width = 0;  // expected input size (crop_size or size)
  float rescale_factor = 1.0f / 255.0f;
  bool do_rescale = true;
  bool do_normalize = true;
  float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
  float std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
};

struct LlavaConfig {
  std::string architecture = "LlavaForConditionalGeneration";
  VisionConfig vision;
  TextConfig text;
  PreprocessConfig preprocess;
  int image_token_id = 32000;
  int vision_feature_layer = -2;
  std::string vision_feature_select_strategy = "default";  // default | full
  std::string projector_hidden_act = "gelu";
  bool projector_bias = true;
  std::string dtype = "float32";  // of the checkpoint, informative

  int PatchesPerSide() const { return vision.image_size / vision.patch_size; }
  // Image features per image after the select strategy.
  int ImageTokens() const {
    const int p = PatchesPerSide() * PatchesPerSide();
    return vision_feature_select_strategy == "full" ? p + 1 : p;
  }
  // Vision layers to run: hidden_states[i] is the output of layer i (0 = the
  // embeddings after pre_layrnorm), negative indices count from the end.
  int VisionLayersToRun() const {
    return vision_feature_layer >= 0 ? vision_feature_layer
                                     : vision.num_hidden_layers + 1 + vision_feature_layer;
  }
};

// Reads config.json and (when present) preprocessor_config.json from dir.
// Refuses what the engine cannot run, naming the field.
Status LoadLlavaConfig(const std::string& dir, LlavaConfig* out);

}  // namespace model
}  // namespace vlcache

// LLaVA-1.5 weights in float32, read from a safetensors archive under either
// tensor-name layout (legacy llava-hf `vision_tower.vision_model.*`,
// `language_model.model.*`; transformers 5 `model.vision_tower.*`,
// `model.language_model.*`, `lm_head.*`).
#pragma once

#include <string>
#include <vector>

#include "model/config.h"
#include "model/safetensors.h"

namespace vlcache {
namespace model {

struct LinearWeights {
  std::vector<float> w;  // [out, in]
  std::vector<float> b;  // [out] or empty
  int in = 0, out = 0;
  const float* bias() const { return b.empty() ? nullptr : b.data(); }
};

struct NormWeights {
  std::vector<float> w, b;  // b empty for RMSNorm
};

struct VisionLayerWeights {
  NormWeights ln1, ln2;
  LinearWeights q, k, v, o, fc1, fc2;
};

struct DecoderLayerWeights {
  NormWeights input_norm, post_attention_norm;
  LinearWeights q, k, v, o, gate, up, down;
};

struct LlavaWeights {
  // Vision tower (only the layers up to vision_feature_layer are loaded).
  std::vector<float> class_embedding;     // [vh]
  std::vector<float> patch_embedding;     // [vh, 3 * p * p] (conv weight, flattened)
  std::vector<float> position_embedding;  // [patches + 1, vh]
  NormWeights pre_layernorm;
  std::vector<VisionLayerWeights> vision_layers;
  // Projector.
  LinearWeights projector1, projector2;
  // Language model.
  std::vector<float> embed_tokens;  // [vocab, hidden]
  std::vector<DecoderLayerWeights> layers;
  NormWeights final_norm;
  LinearWeights lm_head;  // a copy of embed_tokens when tied
};

// Finds the layout, checks every tensor's shape against the config, converts.
Status LoadLlavaWeights(const SafetensorsArchive& archive, const LlavaConfig& config,
                        LlavaWeights* out);

}  // namespace model
}  // namespace vlcache

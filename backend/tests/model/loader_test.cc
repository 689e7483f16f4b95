// Loader: both config styles and both tensor-name layouts load the same model,
// sharded files and every float dtype are read, and a checkpoint the engine
// cannot run is refused with a message naming the field or tensor.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/llava_model.h"
#include "model/safetensors.h"

namespace vlcache {
namespace {

using nlohmann::json;

const std::string kSource = std::string(VLCACHE_TESTDATA_DIR) + "/tiny-llava-random";

struct RawTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

void WriteSafetensors(const std::string& path, const std::vector<RawTensor>& tensors) {
  json header = json::object();
  uint64_t offset = 0;
  for (const RawTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  while (text.size() % 8) text += ' ';
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = text.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const RawTensor& t : tensors) {
    out.write(reinterpret_cast<const char*>(t.bytes.data()),
              static_cast<std::streamsize>(t.bytes.size()));
  }
}

std::vector<RawTensor> ReadSource() {
  model::SafetensorsArchive a;
  Status s = a.OpenFile(kSource + "/model.safetensors");
  EXPECT_TRUE(s.ok()) << s.message;
  std::vector<RawTensor> out;
  for (const auto& [name, ref] : a.tensors()) {
    out.push_back({name, ref.dtype, ref.shape,
                   std::vector<uint8_t>(ref.data, ref.data + ref.bytes)});
  }
  return out;
}

json ReadConfig() {
  std::ifstream in(kSource + "/config.json");
  return json::parse(in);
}

class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/vlcache_loader_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    std::ifstream pre(kSource + "/preprocessor_config.json");
    std::ofstream(dir_ + "/preprocessor_config.json") << pre.rdbuf();
  }
  void TearDown() override { std::system(("rm -rf '" + dir_ + "'").c_str()); }

  void WriteConfig(const json& config) { std::ofstream(dir_ + "/config.json") << config.dump(2); }

  Status Load(std::unique_ptr<model::LlavaModel>* m) {
    return model::LlavaModel::Load(dir_, ops_.get(), m);
  }

  // Last-position logits of a fixed prompt with one synthetic image.
  std::vector<float> Logits(model::LlavaModel* m) {
    Image img;
    img.height = img.width = m->config().vision.image_size;
    img.rgb.resize(static_cast<size_t>(img.height) * img.width * 3);
    for (size_t i = 0; i < img.rgb.size(); ++i) img.rgb[i] = static_cast<uint8_t>((i * 37) % 251);
    std::vector<int32_t> ids = {1, 30, 40};
    ids.insert(ids.end(), m->config().ImageTokens(), m->config().image_token_id);
    ids.insert(ids.end(), {50, 60, 70});
    std::vector<float> features, emb(ids.size() * m->hidden_size()), logits(m->vocab_size());
    m->EncodeImages({img}, &features);
    m->Embed(ids.data(), static_cast<int>(ids.size()), features.data(), emb.data());
    model::PrefillScratch scratch;
    PrefillStats stats;
    m->Prefill(emb.data(), static_cast<int>(ids.size()), {}, &scratch, &stats, logits.data());
    return logits;
  }

  std::string dir_;
  std::unique_ptr<kernels::Ops> ops_ = kernels::CreateCpuOps({1});
};

std::string Rename(const std::string& name) {
  auto replace = [](const std::string& s, const std::string& from, const std::string& to) {
    return s.rfind(from, 0) == 0 ? to + s.substr(from.size()) : s;
  };
  if (name == "language_model.lm_head.weight") return "lm_head.weight";
  std::string n = replace(name, "vision_tower.vision_model.", "model.vision_tower.");
  n = replace(n, "language_model.model.", "model.language_model.");
  return replace(n, "multi_modal_projector.", "model.multi_modal_projector.");
}

std::vector<uint8_t> F16BytesToF32(const std::vector<uint8_t>& bytes) {
  std::vector<uint8_t> out(bytes.size() * 2);
  for (size_t i = 0; i < bytes.size() / 2; ++i) {
    uint16_t h;
    std::memcpy(&h, bytes.data() + 2 * i, 2);
    // Exact half -> float for normal numbers and zero (the checkpoint has no
    // subnormals that matter here; ReadF32 is tested on those separately).
    const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    float f;
    if (exp == 0) {
      f = std::ldexp(static_cast<float>(mant), -24);
      if (sign) f = -f;
    } else {
      const uint32_t bits = sign | ((exp + 112) << 23) | (mant << 13);
      std::memcpy(&f, &bits, 4);
    }
    std::memcpy(out.data() + 4 * i, &f, 4);
  }
  return out;
}

TEST_F(LoaderTest, HubConfigNewLayoutShardedF32MatchesOriginal) {
  std::unique_ptr<model::LlavaModel> original;
  Status s = model::LlavaModel::Load(kSource, ops_.get(), &original);
  ASSERT_TRUE(s.ok()) << s.message;
  const std::vector<float> want = Logits(original.get());

  // Hub style: rope_theta without rope_parameters, torch_dtype, no dtype.
  json config = ReadConfig();
  config["text_config"].erase("rope_parameters");
  config["text_config"]["rope_theta"] = 10000.0;
  config.erase("dtype");
  config["torch_dtype"] = "float32";
  WriteConfig(config);
  std::vector<RawTensor> all = ReadSource();
  std::vector<RawTensor> shard[2];
  for (size_t i = 0; i < all.size(); ++i) {
    RawTensor t = all[i];
    t.name = Rename(t.name);
    t.dtype = "F32";
    t.bytes = F16BytesToF32(all[i].bytes);
    shard[i % 2].push_back(std::move(t));
  }
  WriteSafetensors(dir_ + "/model-00001-of-00002.safetensors", shard[0]);
  WriteSafetensors(dir_ + "/model-00002-of-00002.safetensors", shard[1]);
  std::unique_ptr<model::LlavaModel> converted;
  s = Load(&converted);
  ASSERT_TRUE(s.ok()) << s.message;
  const std::vector<float> got = Logits(converted.get());
  ASSERT_EQ(got.size(), want.size());
  double max_diff = 0;
  for (size_t i = 0; i < got.size(); ++i) max_diff = std::max(max_diff, double(std::fabs(got[i] - want[i])));
  EXPECT_LE(max_diff, 1e-6);
}

TEST_F(LoaderTest, ReadsF16SubnormalsAndBf16) {
  auto u16 = [](std::initializer_list<uint16_t> v) {
    std::vector<uint8_t> b(v.size() * 2);
    std::memcpy(b.data(), std::data(v), b.size());
    return b;
  };
  WriteSafetensors(dir_ + "/t.safetensors",
                   {{"half", "F16", {4}, u16({0x3C00, 0xB800, 0x0001, 0x7BFF})},
                    {"brain", "BF16", {2}, u16({0x3F80, 0xC020})},
                    {"ints", "I32", {1}, {1, 0, 0, 0}}});
  model::SafetensorsArchive a;
  Status s = a.OpenFile(dir_ + "/t.safetensors");
  ASSERT_TRUE(s.ok()) << s.message;
  std::vector<float> v;
  ASSERT_TRUE(a.ReadF32("half", {4}, &v).ok());
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[1], -0.5f);
  EXPECT_EQ(v[2], std::ldexp(1.0f, -24));
  EXPECT_EQ(v[3], 65504.0f);
  ASSERT_TRUE(a.ReadF32("brain", {2}, &v).ok());
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[1], -2.5f);
  s = a.ReadF32("ints", {1}, &v);
  EXPECT_NE(s.message.find("ints"), std::string::npos) << s.message;
  s = a.ReadF32("half", {2, 2}, &v);
  EXPECT_NE(s.message.find("shape"), std::string::npos) << s.message;
}

// Each broken checkpoint is refused with a message naming what is wrong.
TEST_F(LoaderTest, RefusesWhatItCannotRun) {
  const std::vector<RawTensor> tensors = ReadSource();
  struct Broken {
    std::string expect;  // substring of the error
    std::function<void(json*)> config;
    std::function<void(std::vector<RawTensor>*)> weights;
  };
  const std::string q0 = "language_model.model.layers.0.self_attn.q_proj.weight";
  const std::vector<Broken> cases = {
      {"architectures", [](json* c) { (*c)["architectures"] = {"Qwen2VLForConditionalGeneration"}; },
       nullptr},
      {"model_type", [](json* c) { (*c)["model_type"] = "qwen2_vl"; }, nullptr},
      {"text_config.model_type", [](json* c) { (*c)["text_config"]["model_type"] = "gpt2"; },
       nullptr},
      {"rope_type",
       [](json* c) { (*c)["text_config"]["rope_parameters"]["rope_type"] = "linear"; }, nullptr},
      {"rope_scaling",
       [](json* c) {
         (*c)["text_config"].erase("rope_parameters");
         (*c)["text_config"]["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
       },
       nullptr},
      {"vision_feature_layer", [](json* c) { (*c)["vision_feature_layer"] = -9; }, nullptr},
      {"vision_feature_select_strategy",
       [](json* c) { (*c)["vision_feature_select_strategy"] = "pooled"; }, nullptr},
      {"hidden_act", [](json* c) { (*c)["vision_config"]["hidden_act"] = "mish"; }, nullptr},
      {q0, nullptr,
       [&](std::vector<RawTensor>* t) {
         t->erase(std::remove_if(t->begin(), t->end(), [&](const RawTensor& r) { return r.name == q0; }),
                  t->end());
       }},
      {q0, nullptr,
       [&](std::vector<RawTensor>* t) {
         for (RawTensor& r : *t) {
           if (r.name == q0) r.shape = {128, 512};  // same bytes, wrong shape
         }
       }},
      {"num_key_value_heads", [](json* c) { (*c)["text_config"]["num_key_value_heads"] = 3; },
       nullptr},
  };
  for (const Broken& b : cases) {
    json config = ReadConfig();
    if (b.config) b.config(&config);
    WriteConfig(config);
    std::vector<RawTensor> t = tensors;
    if (b.weights) b.weights(&t);
    WriteSafetensors(dir_ + "/model.safetensors", t);
    std::unique_ptr<model::LlavaModel> m;
    const Status s = Load(&m);
    EXPECT_FALSE(s.ok()) << "expected a refusal naming " << b.expect;
    EXPECT_NE(s.message.find(b.expect), std::string::npos)
        << "message '" << s.message << "' does not name " << b.expect;
  }
}

TEST_F(LoaderTest, MissingConfigFieldsTakeTheModelTypeDefaults) {
  model::LlavaConfig c;
  json config = ReadConfig();
  config["text_config"] = {{"model_type", "mistral"}, {"hidden_size", 256},
                           {"num_attention_heads", 8}};
  config.erase("vision_config");
  WriteConfig(config);
  std::remove((dir_ + "/preprocessor_config.json").c_str());
  Status s = model::LoadLlavaConfig(dir_, &c);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(c.text.num_key_value_heads, 8);     // MistralConfig default
  EXPECT_EQ(c.text.intermediate_size, 14336);   // MistralConfig default
  EXPECT_EQ(c.text.head_dim, 32);               // hidden / heads
  EXPECT_EQ(c.text.sliding_window, 4096);
  EXPECT_EQ(c.vision.image_size, 336);          // LLaVA's default CLIP ViT-L/14-336
  EXPECT_EQ(c.vision.num_hidden_layers, 24);
  EXPECT_EQ(c.ImageTokens(), 576);
}

}  // namespace
}  // namespace vlcache

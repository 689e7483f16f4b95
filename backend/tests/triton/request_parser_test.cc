#include "triton/request_parser.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <map>

#include <gtest/gtest.h>

namespace vlcache {
namespace triton {
namespace {

// Tensors of a request, keyed by name, as a test builds them.
class MapSource : public InputSource {
 public:
  Status Get(const std::string& name, bool* present, InputTensor* tensor) override {
    auto it = tensors.find(name);
    *present = it != tensors.end();
    if (*present) *tensor = it->second;
    return Status::Ok();
  }

  template <typename T>
  MapSource& Put(const std::string& name, DataType type, std::vector<int64_t> shape,
                 const std::vector<T>& values) {
    InputTensor t;
    t.type = type;
    t.shape = std::move(shape);
    t.data.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
    tensors[name] = t;
    return *this;
  }
  MapSource& PutString(const std::string& name, const std::string& value) {
    InputTensor t;
    t.type = DataType::kBytes;
    t.shape = {1};
    t.data = EncodeBytesElement(value);
    tensors[name] = t;
    return *this;
  }

  std::map<std::string, InputTensor> tensors;
};

MapSource Minimal() {
  MapSource source;
  source.Put<int32_t>(kInputIds, DataType::kInt32, {3}, {1, 4, 5});
  return source;
}

TEST(RequestParserTest, DefaultsWhenOnlyInputIds) {
  MapSource source = Minimal();
  GenerationRequest request;
  ASSERT_TRUE(ParseGenerationRequest(source, &request).ok());
  EXPECT_EQ(request.input_ids, (std::vector<int32_t>{1, 4, 5}));
  EXPECT_TRUE(request.images.empty());
  EXPECT_EQ(request.sampling.max_tokens, 16);
  EXPECT_EQ(request.sampling.temperature, 0.0f);
  EXPECT_LE(request.keep_ratio, 0.0f);  // unset: the model's default applies
  EXPECT_TRUE(request.policy.empty());
  EXPECT_FALSE(request.sampling.ignore_eos);
  EXPECT_FALSE(request.return_kept_positions);
}

TEST(RequestParserTest, ReadsEveryInput) {
  MapSource source = Minimal();
  std::vector<uint8_t> pixels(2 * 2 * 3 * 3);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i);
  source.Put<uint8_t>(kImages, DataType::kUint8, {2, 2, 3, 3}, pixels)
      .Put<int32_t>(kMaxTokens, DataType::kInt32, {1}, {7})
      .Put<float>(kTemperature, DataType::kFp32, {1}, {0.5f})
      .Put<float>(kTopP, DataType::kFp32, {1}, {0.9f})
      .Put<int32_t>(kTopK, DataType::kInt32, {1}, {40})
      .Put<uint64_t>(kSeed, DataType::kUint64, {1}, {1234567890123ull})
      .Put<int32_t>(kStopTokenIds, DataType::kInt32, {2}, {9, 10})
      .Put<float>(kKvKeepRatio, DataType::kFp32, {1}, {0.25f})
      .PutString(kKvPolicy, "snapkv")
      .PutString(kKvBudgetMode, "paper")
      .Put<int32_t>(kCompressAfter, DataType::kInt32, {1}, {2})
      .Put<uint8_t>(kReturnKeptPositions, DataType::kBool, {1}, {1})
      .Put<uint8_t>(kIgnoreEos, DataType::kBool, {1}, {1});
  GenerationRequest request;
  Status status = ParseGenerationRequest(source, &request);
  ASSERT_TRUE(status.ok()) << status.message;
  ASSERT_EQ(request.images.size(), 2u);
  EXPECT_EQ(request.images[1].height, 2);
  EXPECT_EQ(request.images[1].width, 3);
  EXPECT_EQ(request.images[1].rgb.size(), 18u);
  EXPECT_EQ(request.images[1].rgb[0], 18);  // second image starts after the first's 18 bytes
  EXPECT_EQ(request.sampling.max_tokens, 7);
  EXPECT_FLOAT_EQ(request.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(request.sampling.top_p, 0.9f);
  EXPECT_EQ(request.sampling.top_k, 40);
  EXPECT_EQ(request.sampling.seed, 1234567890123ull);
  EXPECT_EQ(request.sampling.stop_token_ids, (std::vector<int32_t>{9, 10}));
  EXPECT_FLOAT_EQ(request.keep_ratio, 0.25f);
  EXPECT_EQ(request.policy, "snapkv");
  EXPECT_EQ(request.budget_mode, "paper");
  EXPECT_EQ(request.compress_after, 2);
  EXPECT_TRUE(request.return_kept_positions);
  EXPECT_TRUE(request.sampling.ignore_eos);
}

// Each bad request is refused with a message that starts with the input's name.
TEST(RequestParserTest, BadInputsNameTheProblem) {
  struct Case {
    const char* what;
    std::function<void(MapSource&)> edit;
    const char* message_start;
  };
  const std::vector<Case> cases = {
      {"missing input_ids", [](MapSource& s) { s.tensors.erase(kInputIds); },
       "input_ids: required"},
      {"input_ids as FP32",
       [](MapSource& s) { s.Put<float>(kInputIds, DataType::kFp32, {2}, {1, 2}); },
       "input_ids: expected data type INT32"},
      {"input_ids 2-D",
       [](MapSource& s) { s.Put<int32_t>(kInputIds, DataType::kInt32, {1, 2}, {1, 2}); },
       "input_ids: expected shape [-1]"},
      {"empty prompt", [](MapSource& s) { s.Put<int32_t>(kInputIds, DataType::kInt32, {0}, {}); },
       "input_ids: the prompt is empty"},
      {"ratio 0", [](MapSource& s) { s.Put<float>(kKvKeepRatio, DataType::kFp32, {1}, {0.0f}); },
       "kv_keep_ratio: must be in (0, 1]"},
      {"ratio 1.5",
       [](MapSource& s) { s.Put<float>(kKvKeepRatio, DataType::kFp32, {1}, {1.5f}); },
       "kv_keep_ratio: must be in (0, 1]"},
      {"ratio NaN",
       [](MapSource& s) { s.Put<float>(kKvKeepRatio, DataType::kFp32, {1}, {std::nanf("")}); },
       "kv_keep_ratio: must be in (0, 1]"},
      {"ratio as two values",
       [](MapSource& s) { s.Put<float>(kKvKeepRatio, DataType::kFp32, {2}, {0.1f, 0.2f}); },
       "kv_keep_ratio: expected shape [1]"},
      {"unknown policy", [](MapSource& s) { s.PutString(kKvPolicy, "lru"); },
       "kv_policy: unknown policy 'lru'"},
      {"unknown budget mode", [](MapSource& s) { s.PutString(kKvBudgetMode, "greedy"); },
       "kv_budget_mode: unknown mode"},
      {"images without channels",
       [](MapSource& s) { s.Put<uint8_t>(kImages, DataType::kUint8, {1, 2, 2}, {0, 0, 0, 0}); },
       "images: expected shape [-1,-1,-1,3]"},
      {"images as INT32",
       [](MapSource& s) { s.Put<int32_t>(kImages, DataType::kInt32, {1, 1, 1, 3}, {0, 0, 0}); },
       "images: expected data type UINT8"},
      {"max_tokens 0",
       [](MapSource& s) { s.Put<int32_t>(kMaxTokens, DataType::kInt32, {1}, {0}); },
       "max_tokens: must be at least 1"},
      {"top_p 0", [](MapSource& s) { s.Put<float>(kTopP, DataType::kFp32, {1}, {0.0f}); },
       "top_p: must be in (0, 1]"},
      {"negative temperature",
       [](MapSource& s) { s.Put<float>(kTemperature, DataType::kFp32, {1}, {-1.0f}); },
       "temperature: must be >= 0"},
      {"data shorter than shape",
       [](MapSource& s) { s.Put<int32_t>(kInputIds, DataType::kInt32, {3}, {1, 2}); },
       "input_ids: holds 8 bytes"},
      {"truncated string",
       [](MapSource& s) {
         s.PutString(kKvPolicy, "full");
         s.tensors[kKvPolicy].data.resize(6);
       },
       "kv_policy: string longer"},
  };
  for (const Case& c : cases) {
    MapSource source = Minimal();
    c.edit(source);
    GenerationRequest request;
    Status status = ParseGenerationRequest(source, &request);
    ASSERT_FALSE(status.ok()) << c.what;
    EXPECT_EQ(status.message.rfind(c.message_start, 0), 0u)
        << c.what << ": got '" << status.message << "'";
  }
}

TEST(RequestParserTest, BytesRoundTrip) {
  std::string data = EncodeBytesElement("vlcache") + EncodeBytesElement("") +
                     EncodeBytesElement(std::string(300, 'x'));
  std::vector<std::string> elements;
  ASSERT_TRUE(DecodeBytesTensor(data, &elements).ok());
  ASSERT_EQ(elements.size(), 3u);
  EXPECT_EQ(elements[0], "vlcache");
  EXPECT_EQ(elements[1], "");
  EXPECT_EQ(elements[2].size(), 300u);
  EXPECT_EQ(data.substr(0, 4), std::string("\x07\x00\x00\x00", 4));  // little-endian length
}

}  // namespace
}  // namespace triton
}  // namespace vlcache

// The tools' own pieces: flag parsing, base64, request/result lines, image files.
#include <gtest/gtest.h>
#include <png.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include <unistd.h>

#include <jpeglib.h>
#include <nlohmann/json.hpp>

#include "base64.h"
#include "flags.h"
#include "image_file.h"
#include "jsonl.h"

namespace vlcache {
namespace tools {
namespace {

std::vector<uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }

TEST(Base64, DecodesPaddedAndUnpadded) {
  std::vector<uint8_t> out;
  ASSERT_TRUE(Base64Decode("", &out).ok());
  EXPECT_TRUE(out.empty());
  ASSERT_TRUE(Base64Decode("Zg==", &out).ok());
  EXPECT_EQ(out, Bytes("f"));
  ASSERT_TRUE(Base64Decode("Zm8=", &out).ok());
  EXPECT_EQ(out, Bytes("fo"));
  ASSERT_TRUE(Base64Decode("Zm9v", &out).ok());
  EXPECT_EQ(out, Bytes("foo"));
  ASSERT_TRUE(Base64Decode("Zm9vYmE", &out).ok());
  EXPECT_EQ(out, Bytes("fooba"));
  ASSERT_TRUE(Base64Decode("AP8Q/+8=", &out).ok());
  EXPECT_EQ(out, (std::vector<uint8_t>{0x00, 0xff, 0x10, 0xff, 0xef}));
}

TEST(Base64, RejectsMalformedInput) {
  std::vector<uint8_t> out;
  EXPECT_FALSE(Base64Decode("Zm9v!", &out).ok());
  EXPECT_FALSE(Base64Decode("Z", &out).ok());
  EXPECT_FALSE(Base64Decode("Zm=v", &out).ok());
  EXPECT_FALSE(Base64Decode("Zm9=", &out).ok());  // non-zero trailing bits
  EXPECT_FALSE(Base64Decode("Zm9v\n", &out).ok());
  EXPECT_NE(Base64Decode("Zm$v", &out).message.find("offset 2"), std::string::npos);
}

TEST(Flags, ParsesEveryKind) {
  std::string model;
  std::vector<std::string> images;
  int n = 1;
  double ratio = 0.5;
  bool flag = false;
  uint64_t seed = 0;
  FlagSet flags("t");
  flags.String("model", &model, "");
  flags.Repeated("image", &images, "");
  flags.Int("n", &n, "");
  flags.Double("ratio", &ratio, "");
  flags.Bool("flag", &flag, "");
  flags.Uint64("seed", &seed, "");
  const char* argv[] = {"t", "--model", "/m", "--n=7", "--ratio", "0.25", "--flag",
                        "--image", "a.rgb", "--image=b.rgb", "--seed", "42"};
  bool help = true;
  ASSERT_TRUE(flags.Parse(12, const_cast<char**>(argv), &help).ok());
  EXPECT_FALSE(help);
  EXPECT_EQ(model, "/m");
  EXPECT_EQ(n, 7);
  EXPECT_DOUBLE_EQ(ratio, 0.25);
  EXPECT_TRUE(flag);
  EXPECT_EQ(seed, 42u);
  EXPECT_EQ(images, (std::vector<std::string>{"a.rgb", "b.rgb"}));
  EXPECT_NE(flags.Usage().find("--ratio VALUE"), std::string::npos);
}

TEST(Flags, ErrorsNameTheFlag) {
  int n = 1;
  FlagSet flags("t");
  flags.Int("n", &n, "");
  bool help = false;
  const char* bad_value[] = {"t", "--n", "x"};
  EXPECT_NE(flags.Parse(3, const_cast<char**>(bad_value), &help).message.find("--n"),
            std::string::npos);
  const char* unknown[] = {"t", "--m", "1"};
  EXPECT_NE(flags.Parse(3, const_cast<char**>(unknown), &help).message.find("unknown flag --m"),
            std::string::npos);
  const char* missing[] = {"t", "--n"};
  EXPECT_NE(flags.Parse(2, const_cast<char**>(missing), &help).message.find("needs a value"),
            std::string::npos);
  std::vector<int> ints;
  EXPECT_TRUE(ParseIntList("1, 2,3", "x", &ints).ok());
  EXPECT_EQ(ints, (std::vector<int>{1, 2, 3}));
  EXPECT_FALSE(ParseIntList("1,,3", "x", &ints).ok());
  std::vector<double> reals;
  EXPECT_TRUE(ParseDoubleList("0.4,0.1", "x", &reals).ok());
  EXPECT_EQ(reals, (std::vector<double>{0.4, 0.1}));
}

TEST(Jsonl, ParsesAFullRequestLine) {
  const std::string line =
      R"({"id": "s1", "input_ids": [1, 4, 4, 9], "images": [{"height": 1, "width": 2,)"
      R"( "rgb_b64": "AAECAwQF"}], "max_tokens": 5, "temperature": 0.5, "top_p": 0.9,)"
      R"( "top_k": 3, "seed": 11, "stop_token_ids": [7], "policy": "h2o", "keep_ratio": 0.2,)"
      R"( "budget_mode": "paper", "compress_after": 3, "return_kept_positions": true,)"
      R"( "answer": "ignored"})";
  RequestLine r;
  Status s = ParseRequestLine(line, &r);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(r.id, "s1");
  EXPECT_EQ(r.request.input_ids, (std::vector<int32_t>{1, 4, 4, 9}));
  ASSERT_EQ(r.request.images.size(), 1u);
  EXPECT_EQ(r.request.images[0].rgb, (std::vector<uint8_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(r.request.sampling.max_tokens, 5);
  EXPECT_FLOAT_EQ(r.request.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.request.sampling.top_p, 0.9f);
  EXPECT_EQ(r.request.sampling.top_k, 3);
  EXPECT_EQ(r.request.sampling.seed, 11u);
  EXPECT_EQ(r.request.sampling.stop_token_ids, (std::vector<int32_t>{7}));
  EXPECT_EQ(r.request.policy, "h2o");
  EXPECT_FLOAT_EQ(r.request.keep_ratio, 0.2f);
  EXPECT_EQ(r.request.budget_mode, "paper");
  EXPECT_EQ(r.request.compress_after, 3);
  EXPECT_TRUE(r.request.return_kept_positions);
}

TEST(Jsonl, AbsentFieldsKeepTheEngineDefaults) {
  RequestLine r;
  ASSERT_TRUE(ParseRequestLine(R"({"id": 3, "input_ids": [1]})", &r).ok());
  EXPECT_EQ(r.id, 3);
  const GenerationRequest defaults;
  EXPECT_EQ(r.request.policy, "");
  EXPECT_EQ(r.request.keep_ratio, defaults.keep_ratio);
  EXPECT_EQ(r.request.sampling.max_tokens, defaults.sampling.max_tokens);
}

TEST(Jsonl, BadLinesNameTheField) {
  RequestLine r;
  auto message = [&](const std::string& line) { return ParseRequestLine(line, &r).message; };
  EXPECT_NE(message("{").find("not JSON"), std::string::npos);
  EXPECT_NE(message("[1]").find("JSON object"), std::string::npos);
  EXPECT_NE(message(R"({"id": "a"})").find("input_ids: missing"), std::string::npos);
  EXPECT_EQ(r.id, "a");  // the error line can still carry the id
  EXPECT_NE(message(R"({"input_ids": [1, "x"]})").find("input_ids"), std::string::npos);
  EXPECT_NE(message(R"({"input_ids": [1], "max_tokens": "5"})").find("max_tokens"),
            std::string::npos);
  EXPECT_NE(message(R"({"input_ids": [1], "seed": -1})").find("seed"), std::string::npos);
  EXPECT_NE(message(R"({"input_ids": [1], "keep_ratio": 0})").find("keep_ratio"),
            std::string::npos);
  EXPECT_NE(message(R"({"input_ids": [1], "keep_ratio": -0.5})").find("keep_ratio"),
            std::string::npos);
  EXPECT_NE(message(R"({"input_ids": [1], "images": [{"height": 1, "width": 1,)"
                    R"( "rgb_b64": "AAAAAA=="}]})")
                .find("images[0]: rgb_b64 holds 4 bytes, height*width*3 is 3"),
            std::string::npos);
  EXPECT_NE(message(R"({"input_ids": [1], "images": [{"height": 1, "width": 1}]})")
                .find("images[0]: missing rgb_b64"),
            std::string::npos);
}

TEST(Jsonl, ResultAndErrorLines) {
  SequenceStats stats;
  stats.prompt_tokens = 4;
  stats.completion_tokens = 2;
  stats.policy = "vlcache";
  const auto result = nlohmann::json::parse(
      ResultLine("s1", {5, 2}, FinishReason::kStop, stats, ""));
  EXPECT_EQ(result["id"], "s1");
  EXPECT_EQ(result["output_ids"], nlohmann::json({5, 2}));
  EXPECT_EQ(result["finish_reason"], "stop");
  EXPECT_EQ(result["stats"]["prompt_tokens"], 4);
  EXPECT_FALSE(result.contains("error"));
  const auto failed = nlohmann::json::parse(
      ResultLine(7, {}, FinishReason::kError, stats, "kv cache: too big"));
  EXPECT_EQ(failed["error"], "kv cache: too big");
  EXPECT_EQ(failed["stats"]["error"], "kv cache: too big");
  const auto refused = nlohmann::json::parse(ErrorLine("x", "keep_ratio must be in (0, 1]"));
  EXPECT_EQ(refused, nlohmann::json({{"id", "x"}, {"error", "keep_ratio must be in (0, 1]"}}));
}


std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/vlcache_tools_test_" + std::to_string(::getpid()) +
         "_" + name;
}

void WriteFile(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// A solid-colour RGB JPEG at the highest quality.
std::vector<uint8_t> EncodeJpeg(int width, int height, const uint8_t rgb[3]) {
  jpeg_compress_struct cinfo;
  jpeg_error_mgr err;
  cinfo.err = jpeg_std_error(&err);
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = width;
  cinfo.image_height = height;
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, 100, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  std::vector<uint8_t> row(static_cast<size_t>(width) * 3);
  for (int x = 0; x < width; ++x) std::memcpy(&row[3 * x], rgb, 3);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW r = row.data();
    jpeg_write_scanlines(&cinfo, &r, 1);
  }
  jpeg_finish_compress(&cinfo);
  std::vector<uint8_t> out(buffer, buffer + size);
  jpeg_destroy_compress(&cinfo);
  std::free(buffer);
  return out;
}

TEST(ImageFile, PngWithAlphaBecomesRgb) {
  const int w = 5, h = 3;
  std::vector<uint8_t> rgba(static_cast<size_t>(w) * h * 4);
  for (size_t i = 0; i < rgba.size(); ++i) rgba[i] = static_cast<uint8_t>(i % 4 == 3 ? 255 : i * 7);
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  image.width = w;
  image.height = h;
  image.format = PNG_FORMAT_RGBA;
  const std::string path = TempPath("rgba.png");
  ASSERT_TRUE(png_image_write_to_file(&image, path.c_str(), 0, rgba.data(), 0, nullptr));
  Image got;
  Status s = ReadImageFile(path, h, w, &got);
  ASSERT_TRUE(s.ok()) << s.message;
  ASSERT_EQ(got.height, h);
  ASSERT_EQ(got.width, w);
  ASSERT_EQ(got.rgb.size(), static_cast<size_t>(w) * h * 3);
  for (int p = 0; p < w * h; ++p) {
    for (int c = 0; c < 3; ++c) EXPECT_EQ(got.rgb[3 * p + c], rgba[4 * p + c]) << p << "," << c;
  }
  s = ReadImageFile(path, w, h, &got);  // transposed size
  EXPECT_NE(s.message.find("5x3"), std::string::npos) << s.message;
  EXPECT_NE(s.message.find("3x5"), std::string::npos) << s.message;
  std::remove(path.c_str());
}

TEST(ImageFile, JpegDecodesAndChecksTheSize) {
  const uint8_t colour[3] = {200, 40, 90};
  const std::vector<uint8_t> jpeg = EncodeJpeg(16, 8, colour);
  const std::string path = TempPath("solid.jpg");
  WriteFile(path, jpeg);
  Image got;
  Status s = ReadImageFile(path, 8, 16, &got);
  ASSERT_TRUE(s.ok()) << s.message;
  ASSERT_EQ(got.rgb.size(), 16u * 8 * 3);
  for (size_t i = 0; i < got.rgb.size(); ++i) {
    EXPECT_NEAR(got.rgb[i], colour[i % 3], 4) << i;  // lossy, but not by much at quality 100
  }
  s = ReadImageFile(path, 16, 16, &got);
  EXPECT_NE(s.message.find("16x8"), std::string::npos) << s.message;

  // A truncated JPEG is an error, not an exit from inside libjpeg.
  WriteFile(path, std::vector<uint8_t>(jpeg.begin(), jpeg.begin() + 20));
  s = ReadImageFile(path, 8, 16, &got);
  EXPECT_NE(s.message.find("JPEG"), std::string::npos) << s.message;
  std::remove(path.c_str());
}

TEST(ImageFile, RawRgbMustHaveTheModelsSize) {
  const std::string path = TempPath("raw.rgb");
  std::vector<uint8_t> raw(4 * 2 * 3);
  for (size_t i = 0; i < raw.size(); ++i) raw[i] = static_cast<uint8_t>(i);
  WriteFile(path, raw);
  Image got;
  Status s = ReadImageFile(path, 2, 4, &got);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(got.rgb, raw);
  EXPECT_EQ(got.height, 2);
  EXPECT_EQ(got.width, 4);
  s = ReadImageFile(path, 4, 4, &got);
  EXPECT_NE(s.message.find("24 bytes"), std::string::npos) << s.message;
  EXPECT_FALSE(ReadImageFile(TempPath("missing.png"), 2, 4, &got).ok());
  std::remove(path.c_str());
}

}  // namespace
}  // namespace tools
}  // namespace vlcache

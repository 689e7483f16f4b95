#include "jsonl.h"

#include <limits>
#include <type_traits>

#include "base64.h"

namespace vlcache {
namespace tools {
namespace {

using nlohmann::json;

// Reads an optional field of the given JSON kind into *out; a wrong type is an
// error naming the field.
template <typename T>
Status Optional(const json& obj, const char* name, T* out) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return Status::Ok();
  bool fits = false;
  if constexpr (std::is_same_v<T, bool>) {
    fits = it->is_boolean();
  } else if constexpr (std::is_same_v<T, std::string>) {
    fits = it->is_string();
  } else if constexpr (std::is_integral_v<T>) {
    if (it->is_number_unsigned()) {
      fits = it->get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max());
    } else if (it->is_number_integer()) {
      const int64_t v = it->get<int64_t>();
      fits = v >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
             (v < 0 || static_cast<uint64_t>(v) <=
                           static_cast<uint64_t>(std::numeric_limits<T>::max()));
    }
  } else {
    fits = it->is_number();
  }
  if (!fits) {
    return Status::Error(std::string(name) + ": wrong type or out of range (" + it->dump() + ")");
  }
  *out = it->get<T>();
  return Status::Ok();
}

Status IdList(const json& obj, const char* name, bool required, std::vector<int32_t>* out) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) {
    return required ? Status::Error(std::string(name) + ": missing") : Status::Ok();
  }
  if (!it->is_array()) return Status::Error(std::string(name) + ": must be an array of ints");
  out->clear();
  for (const json& v : *it) {
    if (!v.is_number_integer()) {
      return Status::Error(std::string(name) + ": must be an array of ints");
    }
    const int64_t x = v.get<int64_t>();
    if (x < INT32_MIN || x > INT32_MAX) {
      return Status::Error(std::string(name) + ": value out of range");
    }
    out->push_back(static_cast<int32_t>(x));
  }
  return Status::Ok();
}

Status Images(const json& obj, std::vector<Image>* out) {
  auto it = obj.find("images");
  if (it == obj.end() || it->is_null()) return Status::Ok();
  if (!it->is_array()) return Status::Error("images: must be an array");
  for (size_t i = 0; i < it->size(); ++i) {
    const json& img = (*it)[i];
    const std::string where = "images[" + std::to_string(i) + "]";
    if (!img.is_object()) return Status::Error(where + ": must be an object");
    Image image;
    std::string b64;
    for (const char* field : {"height", "width", "rgb_b64"}) {
      if (!img.contains(field)) return Status::Error(where + ": missing " + field);
    }
    Status s = Optional(img, "height", &image.height);
    if (s.ok()) s = Optional(img, "width", &image.width);
    if (s.ok()) s = Optional(img, "rgb_b64", &b64);
    if (!s.ok()) return Status::Error(where + "." + s.message);
    if (image.height < 1 || image.width < 1) {
      return Status::Error(where + ": height and width must be positive");
    }
    s = Base64Decode(b64, &image.rgb);
    if (!s.ok()) return Status::Error(where + ".rgb_b64: " + s.message);
    const size_t want = static_cast<size_t>(image.height) * image.width * 3;
    if (image.rgb.size() != want) {
      return Status::Error(where + ": rgb_b64 holds " + std::to_string(image.rgb.size()) +
                           " bytes, height*width*3 is " + std::to_string(want));
    }
    out->push_back(std::move(image));
  }
  return Status::Ok();
}

}  // namespace

Status ParseRequestLine(const std::string& text, RequestLine* line) {
  line->id = nullptr;
  json obj;
  try {
    obj = json::parse(text);
  } catch (const json::parse_error& e) {
    return Status::Error(std::string("request line is not JSON: ") + e.what());
  }
  if (!obj.is_object()) return Status::Error("request line must be a JSON object");
  if (obj.contains("id")) line->id = obj["id"];
  GenerationRequest& r = line->request;
  SamplingParams& sp = r.sampling;
  double keep_ratio = r.keep_ratio, temperature = sp.temperature, top_p = sp.top_p;
  Status s = IdList(obj, "input_ids", true, &r.input_ids);
  if (s.ok()) s = Images(obj, &r.images);
  if (s.ok()) s = Optional(obj, "max_tokens", &sp.max_tokens);
  if (s.ok()) s = Optional(obj, "temperature", &temperature);
  if (s.ok()) s = Optional(obj, "top_p", &top_p);
  if (s.ok()) s = Optional(obj, "top_k", &sp.top_k);
  if (s.ok()) s = Optional(obj, "seed", &sp.seed);
  if (s.ok()) s = IdList(obj, "stop_token_ids", false, &sp.stop_token_ids);
  if (s.ok()) s = Optional(obj, "ignore_eos", &sp.ignore_eos);
  if (s.ok()) s = Optional(obj, "policy", &r.policy);
  if (s.ok()) s = Optional(obj, "keep_ratio", &keep_ratio);
  if (s.ok()) s = Optional(obj, "budget_mode", &r.budget_mode);
  if (s.ok()) s = Optional(obj, "compress_after", &r.compress_after);
  if (s.ok()) s = Optional(obj, "return_kept_positions", &r.return_kept_positions);
  if (!s.ok()) return s;
  sp.temperature = static_cast<float>(temperature);
  sp.top_p = static_cast<float>(top_p);
  // An explicit ratio outside (0, 1] must reach the engine's validation rather
  // than silently meaning "default", which is what the engine reads from <= 0.
  if (obj.contains("keep_ratio") && !obj["keep_ratio"].is_null() &&
      !(keep_ratio > 0.0 && keep_ratio <= 1.0)) {
    return Status::Error("keep_ratio must be in (0, 1], got " + obj["keep_ratio"].dump());
  }
  r.keep_ratio = static_cast<float>(keep_ratio);
  return Status::Ok();
}

std::string ResultLine(const nlohmann::json& id, const std::vector<int32_t>& output_ids,
                       FinishReason reason, const SequenceStats& stats,
                       const std::string& error) {
  nlohmann::ordered_json out;
  out["id"] = id;
  out["output_ids"] = output_ids;
  out["finish_reason"] = FinishReasonName(reason);
  if (reason == FinishReason::kError) out["error"] = error;
  out["stats"] = nlohmann::ordered_json::parse(stats.ToJson());
  // docs/contract.md: a failed sequence's stats carry the message too.
  if (reason == FinishReason::kError && !out["stats"].contains("error")) {
    out["stats"]["error"] = error;
  }
  return out.dump();
}

std::string ErrorLine(const nlohmann::json& id, const std::string& error) {
  nlohmann::ordered_json out;
  out["id"] = id;
  out["error"] = error;
  return out.dump();
}

}  // namespace tools
}  // namespace vlcache

#include "triton/request_parser.h"

#include <cmath>
#include <cstring>

#define PARSE_RETURN_IF_ERROR(expr)    \
  do {                                 \
    ::vlcache::Status _status = (expr); \
    if (!_status.ok()) return _status;  \
  } while (0)

namespace vlcache {
namespace triton {
namespace {

const TensorSpec& SpecOf(const std::string& name) {
  for (const TensorSpec& spec : ContractInputs()) {
    if (name == spec.name) return spec;
  }
  // Only contract names are looked up; reaching here is a programming error.
  static const TensorSpec none{"", DataType::kOther, {}, false};
  return none;
}

// Fetches `name` and checks its type and shape against the contract.
Status Fetch(InputSource& source, const std::string& name, bool* present, InputTensor* tensor) {
  Status status = source.Get(name, present, tensor);
  if (!status.ok()) return Status::Error(name + ": " + status.message);
  const TensorSpec& spec = SpecOf(name);
  if (!*present) {
    if (spec.required) return Status::Error(name + ": required input is missing");
    return Status::Ok();
  }
  if (tensor->type != spec.type) {
    return Status::Error(name + ": expected data type " + DataTypeName(spec.type) + ", got " +
                         (tensor->type_name.empty() ? DataTypeName(tensor->type)
                                                    : tensor->type_name));
  }
  if (!ShapeMatches(spec.dims, tensor->shape)) {
    return Status::Error(name + ": expected shape " + ShapeString(spec.dims) + ", got " +
                         ShapeString(tensor->shape));
  }
  if (spec.type != DataType::kBytes) {
    size_t count = 1;
    for (int64_t d : tensor->shape) count *= static_cast<size_t>(d);
    if (tensor->data.size() != count * DataTypeSize(spec.type)) {
      return Status::Error(name + ": holds " + std::to_string(tensor->data.size()) +
                           " bytes, its shape " + ShapeString(tensor->shape) + " needs " +
                           std::to_string(count * DataTypeSize(spec.type)));
    }
  }
  return Status::Ok();
}

template <typename T>
std::vector<T> Elements(const InputTensor& tensor) {
  std::vector<T> values(tensor.data.size() / sizeof(T));
  if (!values.empty()) std::memcpy(values.data(), tensor.data.data(), values.size() * sizeof(T));
  return values;
}

// Reads an optional one-element tensor into *value; leaves it alone if absent.
template <typename T>
Status Scalar(InputSource& source, const char* name, T* value, bool* present = nullptr) {
  InputTensor tensor;
  bool here = false;
  Status status = Fetch(source, name, &here, &tensor);
  if (!status.ok()) return status;
  if (present) *present = here;
  if (here) *value = Elements<T>(tensor)[0];
  return Status::Ok();
}

Status OneString(InputSource& source, const char* name, std::string* value) {
  InputTensor tensor;
  bool present = false;
  Status status = Fetch(source, name, &present, &tensor);
  if (!status.ok() || !present) return status;
  std::vector<std::string> elements;
  status = DecodeBytesTensor(tensor.data, &elements);
  if (!status.ok()) return Status::Error(std::string(name) + ": " + status.message);
  if (elements.size() != 1) {
    return Status::Error(std::string(name) + ": expected 1 string, got " +
                         std::to_string(elements.size()));
  }
  *value = elements[0];
  return Status::Ok();
}

std::string Join(const std::vector<std::string>& items) {
  std::string s;
  for (const std::string& item : items) s += (s.empty() ? "" : ", ") + item;
  return s;
}

bool Contains(const std::vector<std::string>& items, const std::string& item) {
  for (const std::string& i : items) {
    if (i == item) return true;
  }
  return false;
}

}  // namespace

Status DecodeBytesTensor(const std::string& data, std::vector<std::string>* elements) {
  elements->clear();
  size_t offset = 0;
  while (offset < data.size()) {
    if (data.size() - offset < 4) return Status::Error("truncated string length");
    uint32_t length = 0;
    for (int i = 3; i >= 0; --i) {
      length = (length << 8) | static_cast<uint8_t>(data[offset + i]);
    }
    offset += 4;
    if (data.size() - offset < length) return Status::Error("string longer than its tensor");
    elements->push_back(data.substr(offset, length));
    offset += length;
  }
  return Status::Ok();
}

std::string EncodeBytesElement(const std::string& element) {
  std::string out(4, '\0');
  uint32_t length = static_cast<uint32_t>(element.size());
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  return out + element;
}

Status ParseGenerationRequest(InputSource& source, GenerationRequest* request) {
  *request = GenerationRequest{};

  InputTensor ids;
  bool present = false;
  PARSE_RETURN_IF_ERROR(Fetch(source, kInputIds, &present, &ids));
  request->input_ids = Elements<int32_t>(ids);
  if (request->input_ids.empty()) return Status::Error("input_ids: the prompt is empty");

  InputTensor images;
  PARSE_RETURN_IF_ERROR(Fetch(source, kImages, &present, &images));
  if (present) {
    const int64_t count = images.shape[0], height = images.shape[1], width = images.shape[2];
    if (count > 0 && (height == 0 || width == 0)) {
      return Status::Error("images: height and width must be positive, got shape " +
                           ShapeString(images.shape));
    }
    const size_t image_bytes = static_cast<size_t>(height * width * 3);
    for (int64_t i = 0; i < count; ++i) {
      Image image;
      image.height = static_cast<int>(height);
      image.width = static_cast<int>(width);
      image.rgb.assign(images.data.begin() + i * image_bytes,
                       images.data.begin() + (i + 1) * image_bytes);
      request->images.push_back(std::move(image));
    }
  }

  SamplingParams& sampling = request->sampling;
  PARSE_RETURN_IF_ERROR(Scalar(source, kMaxTokens, &sampling.max_tokens));
  if (sampling.max_tokens < 1) {
    return Status::Error("max_tokens: must be at least 1, got " +
                         std::to_string(sampling.max_tokens));
  }
  PARSE_RETURN_IF_ERROR(Scalar(source, kTemperature, &sampling.temperature));
  if (!std::isfinite(sampling.temperature) || sampling.temperature < 0) {
    return Status::Error("temperature: must be >= 0, got " + std::to_string(sampling.temperature));
  }
  PARSE_RETURN_IF_ERROR(Scalar(source, kTopP, &sampling.top_p));
  if (!(sampling.top_p > 0 && sampling.top_p <= 1)) {
    return Status::Error("top_p: must be in (0, 1], got " + std::to_string(sampling.top_p));
  }
  PARSE_RETURN_IF_ERROR(Scalar(source, kTopK, &sampling.top_k));
  if (sampling.top_k < 0) {
    return Status::Error("top_k: must be >= 0, got " + std::to_string(sampling.top_k));
  }
  PARSE_RETURN_IF_ERROR(Scalar(source, kSeed, &sampling.seed));
  InputTensor stops;
  PARSE_RETURN_IF_ERROR(Fetch(source, kStopTokenIds, &present, &stops));
  if (present) sampling.stop_token_ids = Elements<int32_t>(stops);

  bool ratio_present = false;
  float ratio = 0;
  PARSE_RETURN_IF_ERROR(Scalar(source, kKvKeepRatio, &ratio, &ratio_present));
  if (ratio_present) {
    // NaN fails both comparisons and lands here too.
    if (!(ratio > 0.0f && ratio <= 1.0f)) {
      return Status::Error("kv_keep_ratio: must be in (0, 1], got " + std::to_string(ratio));
    }
    request->keep_ratio = ratio;
  }
  PARSE_RETURN_IF_ERROR(OneString(source, kKvPolicy, &request->policy));
  if (!request->policy.empty() && !Contains(KnownPolicies(), request->policy)) {
    return Status::Error("kv_policy: unknown policy '" + request->policy + "' (known: " +
                         Join(KnownPolicies()) + ")");
  }
  PARSE_RETURN_IF_ERROR(OneString(source, kKvBudgetMode, &request->budget_mode));
  if (!request->budget_mode.empty() && !Contains(KnownBudgetModes(), request->budget_mode)) {
    return Status::Error("kv_budget_mode: unknown mode '" + request->budget_mode + "' (known: " +
                         Join(KnownBudgetModes()) + ")");
  }
  PARSE_RETURN_IF_ERROR(Scalar(source, kCompressAfter, &request->compress_after));
  if (request->compress_after < 0) {
    return Status::Error("compress_after: must be >= 0, got " +
                         std::to_string(request->compress_after));
  }
  uint8_t kept = 0;
  PARSE_RETURN_IF_ERROR(Scalar(source, kReturnKeptPositions, &kept));
  request->return_kept_positions = kept != 0;
  uint8_t ignore_eos = 0;
  PARSE_RETURN_IF_ERROR(Scalar(source, kIgnoreEos, &ignore_eos));
  sampling.ignore_eos = ignore_eos != 0;
  return Status::Ok();
}

}  // namespace triton
}  // namespace vlcache

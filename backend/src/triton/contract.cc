#include "triton/contract.h"

namespace vlcache {
namespace triton {

const char* DataTypeName(DataType type) {
  switch (type) {
    case DataType::kBool: return "BOOL";
    case DataType::kUint8: return "UINT8";
    case DataType::kInt32: return "INT32";
    case DataType::kUint64: return "UINT64";
    case DataType::kFp32: return "FP32";
    case DataType::kBytes: return "BYTES";
    case DataType::kOther: break;
  }
  return "OTHER";
}

DataType DataTypeFromName(const std::string& name) {
  std::string bare = name.rfind("TYPE_", 0) == 0 ? name.substr(5) : name;
  // config.pbtxt spells BYTES as TYPE_STRING.
  if (bare == "STRING") bare = "BYTES";
  for (DataType t : {DataType::kBool, DataType::kUint8, DataType::kInt32, DataType::kUint64,
                     DataType::kFp32, DataType::kBytes}) {
    if (bare == DataTypeName(t)) return t;
  }
  return DataType::kOther;
}

size_t DataTypeSize(DataType type) {
  switch (type) {
    case DataType::kBool: return 1;
    case DataType::kUint8: return 1;
    case DataType::kInt32: return 4;
    case DataType::kUint64: return 8;
    case DataType::kFp32: return 4;
    case DataType::kBytes: return 0;
    case DataType::kOther: break;
  }
  return 0;
}

const std::vector<TensorSpec>& ContractInputs() {
  static const std::vector<TensorSpec> inputs = {
      {kInputIds, DataType::kInt32, {-1}, true},
      {kImages, DataType::kUint8, {-1, -1, -1, 3}, false},
      {kMaxTokens, DataType::kInt32, {1}, false},
      {kTemperature, DataType::kFp32, {1}, false},
      {kTopP, DataType::kFp32, {1}, false},
      {kTopK, DataType::kInt32, {1}, false},
      {kSeed, DataType::kUint64, {1}, false},
      {kStopTokenIds, DataType::kInt32, {-1}, false},
      {kKvKeepRatio, DataType::kFp32, {1}, false},
      {kKvPolicy, DataType::kBytes, {1}, false},
      {kKvBudgetMode, DataType::kBytes, {1}, false},
      {kCompressAfter, DataType::kInt32, {1}, false},
      {kReturnKeptPositions, DataType::kBool, {1}, false},
      {kIgnoreEos, DataType::kBool, {1}, false},
  };
  return inputs;
}

const std::vector<TensorSpec>& ContractOutputs() {
  static const std::vector<TensorSpec> outputs = {
      {kOutputIds, DataType::kInt32, {-1}, true},
      {kFinishReason, DataType::kBytes, {1}, true},
      {kStats, DataType::kBytes, {1}, true},
  };
  return outputs;
}

const std::vector<std::string>& KnownPolicies() {
  static const std::vector<std::string> policies = {
      "full", "vlcache", "h2o", "snapkv", "streamingllm", "pyramidkv",
      "vlcache-scores", "vlcache-budget"};
  return policies;
}

const std::vector<std::string>& KnownBudgetModes() {
  static const std::vector<std::string> modes = {"exact", "paper"};
  return modes;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

bool ShapeMatches(const std::vector<int64_t>& dims, const std::vector<int64_t>& shape) {
  if (dims.size() != shape.size()) return false;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (shape[i] < 0) return false;
    if (dims[i] != -1 && dims[i] != shape[i]) return false;
  }
  return true;
}

}  // namespace triton
}  // namespace vlcache

// The Triton model contract of docs/contract.md as data: the tensors a
// request may carry and the ones every response carries. Both the one-time
// check of config.pbtxt and the per-request parsing read these tables, so the
// contract is written down once in code.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace vlcache {
namespace triton {

// The tensor element types the contract uses (Triton's names without TYPE_).
enum class DataType { kBool, kUint8, kInt32, kUint64, kFp32, kBytes, kOther };

const char* DataTypeName(DataType type);  // "INT32", ...
// Parses "INT32" or "TYPE_INT32"; anything else is kOther.
DataType DataTypeFromName(const std::string& name);
// Bytes per element; 0 for BYTES (variable length) and kOther.
size_t DataTypeSize(DataType type);

struct TensorSpec {
  const char* name;
  DataType type;
  std::vector<int64_t> dims;  // -1 = any length
  bool required;              // inputs only
};

const std::vector<TensorSpec>& ContractInputs();
const std::vector<TensorSpec>& ContractOutputs();

// Policies and budget modes a request may name.
const std::vector<std::string>& KnownPolicies();
const std::vector<std::string>& KnownBudgetModes();

// Tensor names used in code.
inline constexpr char kInputIds[] = "input_ids";
inline constexpr char kImages[] = "images";
inline constexpr char kMaxTokens[] = "max_tokens";
inline constexpr char kTemperature[] = "temperature";
inline constexpr char kTopP[] = "top_p";
inline constexpr char kTopK[] = "top_k";
inline constexpr char kSeed[] = "seed";
inline constexpr char kStopTokenIds[] = "stop_token_ids";
inline constexpr char kKvKeepRatio[] = "kv_keep_ratio";
inline constexpr char kKvPolicy[] = "kv_policy";
inline constexpr char kKvBudgetMode[] = "kv_budget_mode";
inline constexpr char kCompressAfter[] = "compress_after";
inline constexpr char kReturnKeptPositions[] = "return_kept_positions";
inline constexpr char kIgnoreEos[] = "ignore_eos";
inline constexpr char kOutputIds[] = "output_ids";
inline constexpr char kFinishReason[] = "finish_reason";
inline constexpr char kStats[] = "stats";

// "[a,b,c]" for error messages.
std::string ShapeString(const std::vector<int64_t>& shape);
// Whether shape matches dims, where -1 in dims matches any extent.
bool ShapeMatches(const std::vector<int64_t>& dims, const std::vector<int64_t>& shape);

}  // namespace triton
}  // namespace vlcache

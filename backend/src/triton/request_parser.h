// Turns the input tensors of one Triton request into a GenerationRequest,
// checking each tensor's type, shape and value range against the contract.
// Knows nothing of Triton's C API: the caller supplies the tensors through
// InputSource, so the rules are unit-tested without a server.
#pragma once

#include <string>
#include <vector>

#include "engine/engine.h"
#include "triton/contract.h"

namespace vlcache {
namespace triton {

// One input tensor, its bytes gathered into one contiguous buffer.
struct InputTensor {
  DataType type = DataType::kOther;
  std::string type_name;  // as the server named it, for error messages
  std::vector<int64_t> shape;
  std::string data;
};

class InputSource {
 public:
  virtual ~InputSource() = default;
  // Sets *present = false when the request does not carry `name`. An error is
  // for a tensor that is there but cannot be read.
  virtual Status Get(const std::string& name, bool* present, InputTensor* tensor) = 0;
};

// Every error message starts with the name of the offending input.
Status ParseGenerationRequest(InputSource& source, GenerationRequest* request);

// BYTES tensors hold each element as a 4-byte little-endian length and the bytes.
Status DecodeBytesTensor(const std::string& data, std::vector<std::string>* elements);
std::string EncodeBytesElement(const std::string& element);

}  // namespace triton
}  // namespace vlcache

// Reader for the safetensors format: memory-maps one or several files, parses
// their JSON headers, and converts tensors (F32, F16, BF16) to float32 on demand.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"  // Status

namespace vlcache {
namespace model {

struct TensorRef {
  std::string dtype;           // F32 | F16 | BF16 (others are refused on read)
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  int64_t bytes = 0;
  std::string file;
  int64_t Elements() const;
};

class SafetensorsArchive {
 public:
  SafetensorsArchive() = default;
  ~SafetensorsArchive();
  SafetensorsArchive(const SafetensorsArchive&) = delete;
  SafetensorsArchive& operator=(const SafetensorsArchive&) = delete;

  // Maps every *.safetensors file of dir (a sharded checkpoint is several).
  Status OpenDirectory(const std::string& dir);
  Status OpenFile(const std::string& path);

  bool Has(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorRef* Find(const std::string& name) const;
  // Converts the tensor to float32; an error names the tensor when it is
  // missing, has an unsupported dtype, or its shape differs from `shape`.
  Status ReadF32(const std::string& name, const std::vector<int64_t>& shape,
                 std::vector<float>* out) const;
  const std::map<std::string, TensorRef>& tensors() const { return tensors_; }

 private:
  struct Mapping {
    void* addr = nullptr;
    size_t size = 0;
  };
  std::vector<Mapping> mappings_;
  std::map<std::string, TensorRef> tensors_;
};

std::string ShapeString(const std::vector<int64_t>& shape);

}  // namespace model
}  // namespace vlcache

#include "model/safetensors.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

namespace vlcache {
namespace model {
namespace {

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalise into a float32 normal
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float Bf16ToFloat(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

int DtypeSize(const std::string& dtype) {
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" ||
      dtype == "F8_E5M2")
    return 1;
  return 0;
}

}  // namespace

int64_t TensorRef::Elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

SafetensorsArchive::~SafetensorsArchive() {
  for (const Mapping& m : mappings_) munmap(m.addr, m.size);
}

Status SafetensorsArchive::OpenDirectory(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (!d) return Status::Error("cannot open model directory " + dir);
  std::vector<std::string> files;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    const std::string ext = ".safetensors";
    if (name.size() > ext.size() && name.compare(name.size() - ext.size(), ext.size(), ext) == 0) {
      files.push_back(dir + "/" + name);
    }
  }
  closedir(d);
  if (files.empty()) return Status::Error("no *.safetensors file in " + dir);
  std::sort(files.begin(), files.end());
  for (const std::string& f : files) {
    Status s = OpenFile(f);
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

Status SafetensorsArchive::OpenFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return Status::Error("cannot open " + path);
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size < 8) {
    close(fd);
    return Status::Error(path + ": not a safetensors file (too short)");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  void* addr = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (addr == MAP_FAILED) return Status::Error("cannot map " + path);
  mappings_.push_back({addr, size});
  const uint8_t* base = static_cast<const uint8_t*>(addr);
  uint64_t header_len;
  std::memcpy(&header_len, base, 8);
  if (header_len > size - 8) return Status::Error(path + ": header length exceeds the file");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(base + 8, base + 8 + header_len);
  } catch (const std::exception& e) {
    return Status::Error(path + ": invalid header: " + e.what());
  }
  const uint8_t* data = base + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const auto& v = it.value();
    TensorRef t;
    try {
      t.dtype = v.at("dtype").get<std::string>();
      t.shape = v.at("shape").get<std::vector<int64_t>>();
      const auto offs = v.at("data_offsets").get<std::vector<uint64_t>>();
      if (offs.size() != 2 || offs[0] > offs[1] || offs[1] > data_size) {
        return Status::Error(path + ": tensor " + it.key() + " has data offsets outside the file");
      }
      t.data = data + offs[0];
      t.bytes = static_cast<int64_t>(offs[1] - offs[0]);
    } catch (const std::exception& e) {
      return Status::Error(path + ": tensor " + it.key() + ": bad header entry: " + e.what());
    }
    const int es = DtypeSize(t.dtype);
    if (es != 0 && t.Elements() * es != t.bytes) {
      return Status::Error(path + ": tensor " + it.key() + ": " + std::to_string(t.bytes) +
                           " bytes do not match shape " + ShapeString(t.shape));
    }
    t.file = path;
    tensors_[it.key()] = std::move(t);
  }
  return Status::Ok();
}

const TensorRef* SafetensorsArchive::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

Status SafetensorsArchive::ReadF32(const std::string& name, const std::vector<int64_t>& shape,
                                   std::vector<float>* out) const {
  const TensorRef* t = Find(name);
  if (!t) return Status::Error("missing tensor " + name);
  if (t->shape != shape) {
    return Status::Error("tensor " + name + " has shape " + ShapeString(t->shape) +
                         ", expected " + ShapeString(shape));
  }
  const int64_t n = t->Elements();
  out->resize(static_cast<size_t>(n));
  float* dst = out->data();
  if (t->dtype == "F32") {
    std::memcpy(dst, t->data, static_cast<size_t>(n) * 4);
  } else if (t->dtype == "F16" || t->dtype == "BF16") {
    const bool half = t->dtype == "F16";
    for (int64_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, t->data + 2 * i, 2);
      dst[i] = half ? HalfToFloat(h) : Bf16ToFloat(h);
    }
  } else {
    return Status::Error("tensor " + name + " has dtype " + t->dtype +
                         ", supported: F32, F16, BF16");
  }
  return Status::Ok();
}

}  // namespace model
}  // namespace vlcache

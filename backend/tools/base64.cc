#include "base64.h"

namespace vlcache {
namespace tools {
namespace {

int Sextet(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

}  // namespace

Status Base64Decode(const std::string& text, std::vector<uint8_t>* out) {
  out->clear();
  size_t len = text.size();
  size_t padding = 0;
  while (len > 0 && text[len - 1] == '=' && padding < 2) {
    --len;
    ++padding;
  }
  if (padding > 0 && (len + padding) % 4 != 0) {
    return Status::Error("base64: padding does not complete a 4-character group");
  }
  if (len % 4 == 1) return Status::Error("base64: truncated input (length " +
                                         std::to_string(text.size()) + ")");
  out->reserve(len / 4 * 3 + 2);
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < len; ++i) {
    const int v = Sextet(text[i]);
    if (v < 0) {
      return Status::Error("base64: invalid character at offset " + std::to_string(i));
    }
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out->push_back(static_cast<uint8_t>((acc >> bits) & 0xff));
    }
  }
  // Leftover bits of the last group must be zero in canonical base64.
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) {
    return Status::Error("base64: non-zero trailing bits");
  }
  return Status::Ok();
}

}  // namespace tools
}  // namespace vlcache

// Standard base64 (RFC 4648 section 4) decoding for the images of request lines.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/engine.h"  // Status

namespace vlcache {
namespace tools {

// Accepts padded or unpadded input; whitespace and any other character outside
// the alphabet are errors, as is padding anywhere but the end.
Status Base64Decode(const std::string& text, std::vector<uint8_t>* out);

}  // namespace tools
}  // namespace vlcache

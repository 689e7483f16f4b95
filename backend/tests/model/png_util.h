// Test helper: reads an 8-bit PNG into an engine Image (RGB, row-major).
#pragma once

#include <string>

#include "engine/engine.h"

namespace vlcache {
namespace testing_util {

Status ReadPng(const std::string& path, Image* out);

}  // namespace testing_util
}  // namespace vlcache

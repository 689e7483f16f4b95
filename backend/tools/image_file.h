// Reads an --image file for vlcache-run: PNG or JPEG (decoded here, for the
// command line only; the gateway decodes for the server) or raw H x W x 3 RGB.
// The engine takes images already at the model's input size, so a file of
// another size is refused rather than resized.
#pragma once

#include <string>

#include "engine/engine.h"  // Image, Status

namespace vlcache {
namespace tools {

// PNG and JPEG are recognised by their leading bytes; any other file is read
// as raw RGB of height x width x 3 bytes. Grey, palette and alpha PNGs become
// RGB (alpha dropped); grey JPEGs become RGB.
Status ReadImageFile(const std::string& path, int height, int width, Image* image);

}  // namespace tools
}  // namespace vlcache

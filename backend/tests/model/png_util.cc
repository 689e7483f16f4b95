#include "png_util.h"

#include <png.h>

#include <cstring>

namespace vlcache {
namespace testing_util {

Status ReadPng(const std::string& path, Image* out) {
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&image, path.c_str())) {
    return Status::Error(path + ": " + image.message);
  }
  image.format = PNG_FORMAT_RGB;
  out->height = static_cast<int>(image.height);
  out->width = static_cast<int>(image.width);
  out->rgb.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, out->rgb.data(), 0, nullptr)) {
    png_image_free(&image);
    return Status::Error(path + ": " + image.message);
  }
  return Status::Ok();
}

}  // namespace testing_util
}  // namespace vlcache

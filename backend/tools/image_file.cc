#include "image_file.h"

#include <png.h>
// jpeglib.h needs size_t and FILE declared first.
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include <jpeglib.h>

namespace vlcache {
namespace tools {
namespace {

Status DecodePng(const std::string& path, const std::vector<uint8_t>& bytes, Image* out) {
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size())) {
    return Status::Error("--image " + path + ": not a readable PNG: " + image.message);
  }
  image.format = PNG_FORMAT_RGB;
  out->height = static_cast<int>(image.height);
  out->width = static_cast<int>(image.width);
  out->rgb.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, out->rgb.data(), 0, nullptr)) {
    png_image_free(&image);
    return Status::Error("--image " + path + ": not a readable PNG: " + image.message);
  }
  return Status::Ok();
}

// libjpeg reports fatal errors through error_exit, which by default exits the
// process; this one jumps back to DecodeJpeg with the message instead.
struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void JpegErrorExit(j_common_ptr cinfo) {
  JpegError* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

Status DecodeJpeg(const std::string& path, const std::vector<uint8_t>& bytes, Image* out) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  err.message[0] = '\0';
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = JpegErrorExit;
  // Nothing with a destructor may live between setjmp and a longjmp to it.
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return Status::Error("--image " + path + ": not a readable JPEG: " + err.message);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, bytes.data(), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  cinfo.out_color_space = JCS_RGB;  // grey and YCbCr convert; CMYK is refused
  jpeg_start_decompress(&cinfo);
  out->height = static_cast<int>(cinfo.output_height);
  out->width = static_cast<int>(cinfo.output_width);
  const size_t row_bytes = static_cast<size_t>(cinfo.output_width) * 3;
  out->rgb.resize(row_bytes * cinfo.output_height);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out->rgb.data() + row_bytes * cinfo.output_scanline;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return Status::Ok();
}

std::string Size(int height, int width) {
  return std::to_string(width) + "x" + std::to_string(height);
}

}  // namespace

Status ReadImageFile(const std::string& path, int height, int width, Image* image) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::Error("--image: cannot open " + path);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  const bool png = bytes.size() >= 8 && std::memcmp(bytes.data(), kPng, 8) == 0;
  const bool jpeg = bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF;
  if (!png && !jpeg) {
    const size_t want = static_cast<size_t>(height) * width * 3;
    if (bytes.size() != want) {
      return Status::Error("--image " + path + ": not PNG or JPEG, and as raw RGB it has " +
                           std::to_string(bytes.size()) + " bytes where the model's " +
                           Size(height, width) + "x3 takes " + std::to_string(want));
    }
    image->height = height;
    image->width = width;
    image->rgb = std::move(bytes);
    return Status::Ok();
  }
  Image decoded;
  Status s = png ? DecodePng(path, bytes, &decoded) : DecodeJpeg(path, bytes, &decoded);
  if (!s.ok()) return s;
  if (decoded.height != height || decoded.width != width) {
    return Status::Error("--image " + path + ": the image is " +
                         Size(decoded.height, decoded.width) + " but the model takes " +
                         Size(height, width) + " (width x height); resize it first");
  }
  *image = std::move(decoded);
  return Status::Ok();
}

}  // namespace tools
}  // namespace vlcache

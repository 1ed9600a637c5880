#pragma once
// Decoding image files into 8-bit RGB: JPEG (baseline and progressive), PNG (8 and 16 bit, palette,
// grayscale, alpha), BMP and GIF (first frame). Grayscale is replicated to R, G and B, and alpha
// is dropped (not composited), as PIL's Image.convert("RGB") does. EXIF orientation is ignored,
// as torchvision's image loader does.
//
// PNG, BMP and GIF decode to exactly the pixels PIL reads. JPEG decoders differ slightly between
// libraries (IDCT and chroma upsampling): stb_image's pixels may differ from libjpeg-turbo's
// (PIL's) by a few levels.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace rmt {

// An 8-bit RGB image: rows top to bottom, pixels left to right, channels interleaved (R, G, B).
struct Image {
  int64_t width = 0;
  int64_t height = 0;
  std::vector<uint8_t> pixels;  // height * width * 3

  Image() = default;
  // A black image of that size.
  Image(int64_t width, int64_t height);

  bool empty() const { return width == 0 || height == 0; }
  uint8_t* data() { return pixels.data(); }
  const uint8_t* data() const { return pixels.data(); }
  // Channel c (0 = R, 1 = G, 2 = B) of the pixel at column x, row y.
  uint8_t& at(int64_t x, int64_t y, int c) { return pixels[(y * width + x) * 3 + c]; }
  uint8_t at(int64_t x, int64_t y, int c) const { return pixels[(y * width + x) * 3 + c]; }
};

// Reads and decodes an image file. The format is detected from the content, not the name.
// Throws std::runtime_error "<path>: <problem>" when the file cannot be read, is not an image in
// one of the supported formats, or is truncated or corrupt.
Image decode_image(const std::string& path);

// The same for an encoded image held in memory; `name` stands for the file in error messages.
Image decode_image_from_memory(const void* data, size_t size, const std::string& name);

// Whether a file name has one of the extensions decode_image handles, in any case:
// .jpg .jpeg .jpe .jfif .png .bmp .dib .gif.
bool has_image_extension(const std::string& path);

}  // namespace rmt

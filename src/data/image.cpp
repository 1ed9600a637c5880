#include "rmt/data/image.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

// stb_image from Debian's libstb-dev, compiled into this file only: every function static (no
// symbol clashes with another copy of stb), only the formats rmt reads (no TGA, which has no
// signature and would "decode" arbitrary bytes), memory input only.
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STBI_NO_STDIO
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wtype-limits"
#endif
#include <stb/stb_image.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

namespace rmt {
namespace {

// PIL refuses images above twice its MAX_IMAGE_PIXELS (decompression bombs); so does rmt.
constexpr int64_t kMaxPixels = 2 * int64_t(89478485);

enum class Format { Unknown, Jpeg, Png, Bmp, Gif };

const char* format_name(Format f) {
  switch (f) {
    case Format::Jpeg: return "JPEG";
    case Format::Png: return "PNG";
    case Format::Bmp: return "BMP";
    case Format::Gif: return "GIF";
    default: return "unknown";
  }
}

Format detect_format(const uint8_t* p, size_t n) {
  if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return Format::Jpeg;
  if (n >= 8 && std::memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0) return Format::Png;
  if (n >= 2 && p[0] == 'B' && p[1] == 'M') return Format::Bmp;
  if (n >= 6 && (std::memcmp(p, "GIF87a", 6) == 0 || std::memcmp(p, "GIF89a", 6) == 0)) {
    return Format::Gif;
  }
  return Format::Unknown;
}

// "89 50 4e 47": the first bytes in hexadecimal.
std::string describe_start(const uint8_t* p, size_t n) {
  return fmt::format("{:02x}", fmt::join(p, p + std::min<size_t>(n, 8), " "));
}

uint32_t le32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
uint16_t le16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }

// stb_image fills what is missing at the end of a JPEG or an uncompressed BMP with zeros or gray
// instead of failing; PIL raises "image file is truncated". These checks find the same files.
void check_complete(Format format, const uint8_t* p, size_t n, const std::string& name) {
  if (format == Format::Jpeg) {
    // The end-of-image marker FF D9. Anything may follow it (motion photos append a video), and
    // FF D9 cannot occur inside entropy-coded data (FF is stuffed as FF 00 there).
    for (size_t i = n; i >= 2; --i) {
      if (p[i - 2] == 0xFF && p[i - 1] == 0xD9) return;
    }
    throw std::runtime_error(
        fmt::format("{}: truncated JPEG: no end-of-image marker (FF D9)", name));
  }
  if (format == Format::Bmp && n >= 34) {
    const uint32_t offset = le32(p + 10);
    const uint32_t header = le32(p + 14);
    if (header < 40) return;  // OS/2 headers: left to stb_image
    const int64_t width = static_cast<int32_t>(le32(p + 18));
    const int64_t height = std::abs(static_cast<int64_t>(static_cast<int32_t>(le32(p + 22))));
    const int64_t bits = le16(p + 28);
    const uint32_t compression = le32(p + 30);
    if (compression != 0 && compression != 3 && compression != 6) return;  // RLE: variable size
    const int64_t stride = (width * bits + 31) / 32 * 4;
    const int64_t needed = static_cast<int64_t>(offset) + stride * height;
    if (width > 0 && needed > static_cast<int64_t>(n)) {
      throw std::runtime_error(fmt::format(
          "{}: truncated BMP: expected {} bytes of header and pixels, found {}", name, needed, n));
    }
  }
}

}  // namespace

Image::Image(int64_t width_, int64_t height_)
    : width(width_), height(height_), pixels(static_cast<size_t>(width_ * height_ * 3), 0) {
  if (width_ < 0 || height_ < 0) {
    throw std::invalid_argument(
        fmt::format("rmt::Image: expected a non-negative size, found {}x{}", width_, height_));
  }
}

Image decode_image_from_memory(const void* data, size_t size, const std::string& name) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  if (size == 0) throw std::runtime_error(fmt::format("{}: empty file, expected an image", name));
  if (size > static_cast<size_t>(std::numeric_limits<int>::max())) {
    throw std::runtime_error(
        fmt::format("{}: file too large ({} bytes), expected at most 2 GiB", name, size));
  }
  const Format format = detect_format(bytes, size);
  if (format == Format::Unknown) {
    throw std::runtime_error(fmt::format("{}: not a JPEG, PNG, BMP or GIF image (starts with {})",
                                         name, describe_start(bytes, size)));
  }
  const int len = static_cast<int>(size);
  int w = 0, h = 0, channels = 0;
  if (!stbi_info_from_memory(bytes, len, &w, &h, &channels)) {
    // stb_image tried every format; its last message is about the last one it tried.
    const std::string reason = stbi_failure_reason();
    throw std::runtime_error(
        fmt::format("{}: corrupt {} image ({})", name, format_name(format),
                    reason == "unknown image type" ? "unreadable header" : reason));
  }
  if (w <= 0 || h <= 0 || int64_t(w) * h > kMaxPixels) {
    throw std::runtime_error(fmt::format("{}: {} image of {}x{} pixels, expected 1 to {} pixels",
                                         name, format_name(format), w, h, kMaxPixels));
  }
  check_complete(format, bytes, size, name);

  std::unique_ptr<stbi_uc, void (*)(void*)> decoded(
      stbi_load_from_memory(bytes, len, &w, &h, &channels, 3), stbi_image_free);
  if (!decoded) {
    throw std::runtime_error(fmt::format("{}: corrupt {} image ({})", name, format_name(format),
                                         stbi_failure_reason()));
  }
  Image image;
  image.width = w;
  image.height = h;
  image.pixels.assign(decoded.get(), decoded.get() + size_t(w) * size_t(h) * 3);
  return image;
}

Image decode_image(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    throw std::runtime_error(fmt::format("{}: cannot open ({})", path, std::strerror(err)));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat info {};
  if (::fstat(fd, &info) == 0 && S_ISDIR(info.st_mode)) {
    throw std::runtime_error(fmt::format("{}: is a directory, expected an image file", path));
  }
  std::vector<uint8_t> bytes;
  if (::fstat(fd, &info) == 0 && S_ISREG(info.st_mode)) {
    if (info.st_size > std::numeric_limits<int>::max()) {
      throw std::runtime_error(fmt::format(
          "{}: file too large ({} bytes), expected an image of at most 2 GiB", path, info.st_size));
    }
    bytes.reserve(size_t(info.st_size));
  }
  uint8_t buffer[1 << 16];
  for (;;) {
    const ssize_t got = ::read(fd, buffer, sizeof buffer);
    if (got < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      throw std::runtime_error(fmt::format("{}: read error after {} bytes ({})", path,
                                           bytes.size(), std::strerror(err)));
    }
    if (got == 0) break;
    bytes.insert(bytes.end(), buffer, buffer + got);
  }
  return decode_image_from_memory(bytes.data(), bytes.size(), path);
}

bool has_image_extension(const std::string& path) {
  const auto slash = path.find_last_of("/\\");
  const auto dot = path.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return false;
  std::string ext = path.substr(dot + 1);
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  static const char* known[] = {"jpg", "jpeg", "jpe", "jfif", "png", "bmp", "dib", "gif"};
  return std::any_of(std::begin(known), std::end(known), [&](const char* k) { return ext == k; });
}

}  // namespace rmt

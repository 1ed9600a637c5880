#include "rmt/data/preprocess.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include <ATen/ops/empty.h>
#include <fmt/format.h>

namespace rmt {
namespace {

// PIL's 8-bit resampling: 32-bit accumulators, 8 bits of result, 2 bits of headroom for the
// filter's negative lobes.
constexpr int kPrecisionBits = 32 - 8 - 2;

// Keys' cubic convolution kernel with a = -0.5, support 2. The operations are grouped as PIL
// groups them, so that the double results (and thus the rounded coefficients) agree.
double cubic(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// The taps of one axis: for output i, `count[i]` input samples from `first[i]`, with weights
// weights[i * taps .. i * taps + count[i]).
struct Taps {
  int taps = 0;
  std::vector<int> first, count;
  std::vector<int32_t> weights;
};

Taps compute_taps(int in_size, int out_size) {
  constexpr double filter_support = 2.0;
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = scale < 1.0 ? 1.0 : scale;  // widen the kernel when shrinking
  const double support = filter_support * filter_scale;
  Taps t;
  t.taps = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.weights.assign(static_cast<size_t>(out_size) * t.taps, 0);
  std::vector<double> w(t.taps);
  const double inv_scale = 1.0 / filter_scale;
  for (int i = 0; i < out_size; ++i) {
    const double center = (i + 0.5) * scale;
    // C casts truncate toward zero, as PIL's do.
    int lo = static_cast<int>(center - support + 0.5);
    if (lo < 0) lo = 0;
    int hi = static_cast<int>(center + support + 0.5);
    if (hi > in_size) hi = in_size;
    const int n = hi - lo;
    double sum = 0.0;
    for (int k = 0; k < n; ++k) {
      w[k] = cubic((k + lo - center + 0.5) * inv_scale);
      sum += w[k];
    }
    for (int k = 0; k < n; ++k) {
      double v = sum != 0.0 ? w[k] / sum : w[k];
      t.weights[size_t(i) * t.taps + k] =
          static_cast<int32_t>(v < 0 ? -0.5 + v * (1 << kPrecisionBits)
                                     : 0.5 + v * (1 << kPrecisionBits));
    }
    t.first[i] = lo;
    t.count[i] = n;
  }
  return t;
}

inline uint8_t clip8(int32_t v) {
  v >>= kPrecisionBits;  // arithmetic shift: floor
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

// Resamples rows [row0, row0 + rows) of `in` horizontally to out.width.
void horizontal_pass(const Image& in, Image& out, int64_t row0, const Taps& t) {
  const int64_t w_out = out.width;
  for (int64_t y = 0; y < out.height; ++y) {
    const uint8_t* src = in.data() + (row0 + y) * in.width * 3;
    uint8_t* dst = out.data() + y * w_out * 3;
    for (int64_t x = 0; x < w_out; ++x) {
      const int32_t* k = t.weights.data() + x * t.taps;
      const uint8_t* p = src + int64_t(t.first[x]) * 3;
      int32_t r = 1 << (kPrecisionBits - 1), g = r, b = r;
      for (int j = 0; j < t.count[x]; ++j) {
        r += p[j * 3 + 0] * k[j];
        g += p[j * 3 + 1] * k[j];
        b += p[j * 3 + 2] * k[j];
      }
      dst[x * 3 + 0] = clip8(r);
      dst[x * 3 + 1] = clip8(g);
      dst[x * 3 + 2] = clip8(b);
    }
  }
}

// Resamples `in` vertically to out.height; `shift` is subtracted from the taps' first rows.
void vertical_pass(const Image& in, Image& out, int shift, const Taps& t) {
  const int64_t n = out.width * 3;
  std::vector<int32_t> acc(static_cast<size_t>(n));
  for (int64_t y = 0; y < out.height; ++y) {
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    const int32_t* k = t.weights.data() + y * t.taps;
    for (int j = 0; j < t.count[y]; ++j) {
      const uint8_t* src = in.data() + (int64_t(t.first[y]) - shift + j) * n;
      const int32_t kj = k[j];
      for (int64_t i = 0; i < n; ++i) acc[i] += src[i] * kj;
    }
    uint8_t* dst = out.data() + y * n;
    for (int64_t i = 0; i < n; ++i) dst[i] = clip8(acc[i]);
  }
}

void check_image(const Image& image, const char* what) {
  if (image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.width * image.height * 3)) {
    throw std::invalid_argument(
        fmt::format("{}: expected an RGB image with width * height * 3 bytes, found {}x{} with {} "
                    "bytes",
                    what, image.width, image.height, image.pixels.size()));
  }
}

}  // namespace

Image resize_bicubic(const Image& image, int64_t width, int64_t height, PillowPassOrder order) {
  check_image(image, "resize_bicubic");
  constexpr int64_t kMaxSide = 1 << 24;
  if (width < 1 || height < 1 || width > kMaxSide || height > kMaxSide) {
    throw std::invalid_argument(fmt::format(
        "resize_bicubic: expected an output size of 1 to 2^24 pixels per side, found {}x{}", width,
        height));
  }
  const bool horizontal = width != image.width;
  const bool vertical = height != image.height;
  if (!horizontal && !vertical) return image;

  const bool horizontal_first =
      order == PillowPassOrder::HorizontalFirst ||
      !(image.height - height > 0 && image.height - height > (image.width - width) * 2);

  if (horizontal_first) {
    Taps vt;
    int64_t row0 = 0, rows = image.height;
    if (vertical) {
      vt = compute_taps(static_cast<int>(image.height), static_cast<int>(height));
      // Only the rows the vertical pass reads are resampled horizontally.
      row0 = vt.first.front();
      rows = vt.first.back() + vt.count.back() - row0;
    }
    Image temp;
    const Image* source = &image;
    if (horizontal) {
      const Taps ht = compute_taps(static_cast<int>(image.width), static_cast<int>(width));
      temp = Image(width, rows);
      horizontal_pass(image, temp, row0, ht);
      source = &temp;
    }
    if (!vertical) return temp;
    Image out(width, height);
    vertical_pass(*source, out, horizontal ? static_cast<int>(row0) : 0, vt);
    return out;
  }
  // Vertical first (both passes are needed here: the height shrinks and the width changes).
  const Taps vt = compute_taps(static_cast<int>(image.height), static_cast<int>(height));
  Image temp(image.width, height);
  vertical_pass(image, temp, 0, vt);
  if (!horizontal) return temp;
  const Taps ht = compute_taps(static_cast<int>(image.width), static_cast<int>(width));
  Image out(width, height);
  horizontal_pass(temp, out, 0, ht);
  return out;
}

std::pair<int64_t, int64_t> shorter_side_size(int64_t width, int64_t height, int64_t size) {
  if (width <= 0 || height <= 0 || size <= 0) {
    throw std::invalid_argument(fmt::format(
        "shorter_side_size: expected positive sizes, found image {}x{} and size {}", width, height,
        size));
  }
  const bool portrait = width <= height;
  const int64_t shorter = portrait ? width : height;
  const int64_t longer = portrait ? height : width;
  // Python's int(size * long / short): true division in double, truncated.
  const auto new_long = static_cast<int64_t>(static_cast<double>(size * longer) /
                                             static_cast<double>(shorter));
  return portrait ? std::make_pair(size, new_long) : std::make_pair(new_long, size);
}

Image resize_shorter_side(const Image& image, int64_t size, PillowPassOrder order) {
  check_image(image, "resize_shorter_side");
  const auto [w, h] = shorter_side_size(image.width, image.height, size);
  return resize_bicubic(image, w, h, order);
}

Image center_crop(const Image& image, int64_t width, int64_t height) {
  check_image(image, "center_crop");
  if (width <= 0 || height <= 0) {
    throw std::invalid_argument(
        fmt::format("center_crop: expected a positive crop size, found {}x{}", width, height));
  }
  // Padding (torchvision pads left/top with the floor of half the missing pixels).
  const int64_t pad_left = width > image.width ? (width - image.width) / 2 : 0;
  const int64_t pad_top = height > image.height ? (height - image.height) / 2 : 0;
  const int64_t padded_w = std::max(width, image.width);
  const int64_t padded_h = std::max(height, image.height);
  // Python's round() of (padded - crop) / 2.0: halves go to the even neighbour.
  auto round_half = [](int64_t d) {
    const int64_t half = d / 2;
    return (d % 2 == 0 || half % 2 == 0) ? half : half + 1;
  };
  const int64_t left = round_half(padded_w - width) - pad_left;  // in the original image
  const int64_t top = round_half(padded_h - height) - pad_top;
  Image out(width, height);
  for (int64_t y = 0; y < height; ++y) {
    const int64_t sy = y + top;
    if (sy < 0 || sy >= image.height) continue;
    for (int64_t x = 0; x < width; ++x) {
      const int64_t sx = x + left;
      if (sx < 0 || sx >= image.width) continue;
      for (int c = 0; c < 3; ++c) out.at(x, y, c) = image.at(sx, sy, c);
    }
  }
  return out;
}

int64_t PreprocessOptions::resize_size() const {
  return static_cast<int64_t>(std::floor(static_cast<double>(input_size) / crop_pct));
}

void PreprocessOptions::validate() const {
  if (input_size < 1 || input_size > 16384) {
    throw std::invalid_argument(
        fmt::format("preprocess: input_size: expected 1 to 16384, found {}", input_size));
  }
  if (!(crop_pct > 0.0 && crop_pct <= 10.0)) {
    throw std::invalid_argument(
        fmt::format("preprocess: crop_pct: expected a number in (0, 10], found {}", crop_pct));
  }
  if (resize_size() < 1) {
    throw std::invalid_argument(fmt::format(
        "preprocess: input_size / crop_pct must be at least 1, found {} / {}", input_size, crop_pct));
  }
  for (int c = 0; c < 3; ++c) {
    if (!(stddev[c] != 0.0f) || !std::isfinite(stddev[c]) || !std::isfinite(mean[c])) {
      throw std::invalid_argument(fmt::format(
          "preprocess: expected finite mean and non-zero std, found channel {}: mean {}, std {}", c,
          mean[c], stddev[c]));
    }
  }
}

at::Tensor to_normalized_tensor(const Image& image, const std::array<float, 3>& mean,
                                const std::array<float, 3>& stddev) {
  check_image(image, "to_normalized_tensor");
  auto out = at::empty({3, image.height, image.width}, at::TensorOptions().dtype(at::kFloat));
  float* dst = out.data_ptr<float>();
  const int64_t plane = image.height * image.width;
  const uint8_t* src = image.data();
  for (int c = 0; c < 3; ++c) {
    const float m = mean[c], s = stddev[c];
    float* d = dst + c * plane;
    for (int64_t i = 0; i < plane; ++i) {
      // torchvision: img.float().div(255), then tensor.sub_(mean).div_(std), all in float32.
      const float x = static_cast<float>(src[i * 3 + c]) / 255.0f;
      d[i] = (x - m) / s;
    }
  }
  return out;
}

at::Tensor preprocess(const Image& image, const PreprocessOptions& options) {
  options.validate();
  const Image resized = resize_shorter_side(image, options.resize_size(), options.pass_order);
  const Image cropped = center_crop(resized, options.input_size, options.input_size);
  return to_normalized_tensor(cropped, options.mean, options.stddev);
}

at::Tensor load_image(const std::string& path, const PreprocessOptions& options) {
  return preprocess(decode_image(path), options);
}

}  // namespace rmt

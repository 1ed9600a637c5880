#pragma once
// The evaluation transform of the authors' ImageNet models, as timm/torchvision compute it on PIL
// images, bit for bit:
//
//   Resize(floor(input_size / crop_pct), bicubic)  shorter side to that size, longer side to
//                                                  int(size * long / short)
//   CenterCrop(input_size)                         top = int(round((h - input_size) / 2.0))
//   ToTensor()                                     float32 in [0, 1]: value / 255
//   Normalize(mean, std)                           (x - mean) / std, in float32
//
// with the defaults input_size 224, crop_pct 0.9 (resize to 248), ImageNet mean and std.
//
// The resize is PIL's Image.resize(size, Image.BICUBIC) on 8-bit RGB (what torchvision's Resize
// runs on a PIL image): two separable passes with a Keys cubic (a = -0.5) whose support grows with
// the downscaling factor (antialiasing), coefficients in 22-bit fixed point, results rounded and
// clipped to 8 bits after each pass. PIL 13 changed which pass runs first for images whose height
// shrinks much more than their width (see PillowPassOrder); that is the only difference between
// Pillow versions, and it only concerns images taller than about twice their width.

#include <array>
#include <cstdint>
#include <string>
#include <utility>

#include <ATen/core/Tensor.h>

#include "rmt/data/image.h"

namespace rmt {

// Which pass PIL's resize runs first when both the width and the height change.
enum class PillowPassOrder {
  // Pillow >= 13: vertical first when the height shrinks by more than twice as many pixels as the
  // width does, horizontal first otherwise.
  Pillow13,
  // Pillow <= 12 (what the authors ran): always horizontal first.
  HorizontalFirst,
};

// PIL's Image.resize((width, height), Image.BICUBIC) of an 8-bit RGB image (antialiased).
Image resize_bicubic(const Image& image, int64_t width, int64_t height,
                     PillowPassOrder order = PillowPassOrder::Pillow13);

// torchvision's Resize(size) with an int size: the size after resizing the shorter side to `size`
// (the longer side becomes int(size * long / short)), as {width, height}.
std::pair<int64_t, int64_t> shorter_side_size(int64_t width, int64_t height, int64_t size);

// torchvision's Resize(size, InterpolationMode.BICUBIC) on a PIL image.
Image resize_shorter_side(const Image& image, int64_t size,
                          PillowPassOrder order = PillowPassOrder::Pillow13);

// torchvision's CenterCrop((height, width)): pads with black first where the image is smaller.
Image center_crop(const Image& image, int64_t width, int64_t height);

struct PreprocessOptions {
  int64_t input_size = 224;  // the side of the square crop the model sees
  double crop_pct = 0.9;     // the shorter side is resized to floor(input_size / crop_pct)
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
  std::array<float, 3> stddev{0.229f, 0.224f, 0.225f};
  PillowPassOrder pass_order = PillowPassOrder::Pillow13;

  // floor(input_size / crop_pct): 248 for the defaults.
  int64_t resize_size() const;
  // Throws std::invalid_argument naming the field, what was expected and what was found.
  void validate() const;
};

// ToTensor + Normalize: a (3, height, width) float32 CPU tensor.
at::Tensor to_normalized_tensor(const Image& image, const std::array<float, 3>& mean,
                                const std::array<float, 3>& stddev);

// The whole transform: (3, input_size, input_size) float32 on the CPU.
at::Tensor preprocess(const Image& image, const PreprocessOptions& options = {});

// decode_image + preprocess. Throws std::runtime_error "<path>: <problem>".
at::Tensor load_image(const std::string& path, const PreprocessOptions& options = {});

}  // namespace rmt

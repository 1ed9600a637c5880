#pragma once
// A Conv2d's padding option: numbers, kValid or kSame. LibTorch holds it in a c10::variant before
// 2.2 (Debian 12's libtorch-dev is 1.13) and in a std::variant since (pytorch/pytorch#109723);
// these read it under either.

#include <c10/util/Exception.h>
#include <torch/nn/options/conv.h>
#include <torch/version.h>

namespace rmt::nn::detail {

#if TORCH_VERSION_MAJOR < 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR < 2)
namespace padding_variant = c10;
#else
namespace padding_variant = std;
#endif

// The padding's numbers, or nullptr when it is kValid or kSame.
inline const torch::ExpandingArray<2>* padding_numbers(
    const torch::nn::detail::ConvNdOptions<2>& options) {
  return padding_variant::get_if<torch::ExpandingArray<2>>(&options.padding());
}

// Whether the padding is kValid (none).
inline bool padding_is_valid(const torch::nn::detail::ConvNdOptions<2>& options) {
  return padding_variant::holds_alternative<torch::enumtype::kValid>(options.padding());
}

// The padding's numbers, for the modules here that always give numbers.
inline const torch::ExpandingArray<2>& numeric_padding(
    const torch::nn::detail::ConvNdOptions<2>& options) {
  const auto* numbers = padding_numbers(options);
  TORCH_CHECK(numbers != nullptr, "Conv2d: expected a numeric padding, found kValid or kSame");
  return *numbers;
}

}  // namespace rmt::nn::detail

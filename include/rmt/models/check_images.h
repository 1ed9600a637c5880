#pragma once
// The input check every model runs first (the classifier and the dense backbone alike).

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace torch::nn {
class Module;
}

namespace rmt {

// Checks an image batch against a model: 4-D (B, C, H, W), C == expected_channels, floating point,
// same dtype and device as the model's parameters. Throws c10::Error saying what was expected.
void check_images(const at::Tensor& images, int64_t expected_channels,
                  const torch::nn::Module& model);

}  // namespace rmt

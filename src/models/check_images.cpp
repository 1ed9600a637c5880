#include "rmt/models/check_images.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/nn/module.h>

#include "runtime/tensor_text.h"

namespace rmt {
namespace {

// The first of model.parameters(), found without building that list (every parameter of the
// model with its dotted name, at every forward): depth first, the module's own parameters before
// its children's, as parameters() orders them.
// Undefined when the model has none.
at::Tensor first_parameter(const torch::nn::Module& module) {
  const auto own = module.named_parameters(/*recurse=*/false);
  if (!own.is_empty()) return own.begin()->value();
  for (const auto& child : module.children()) {
    auto found = first_parameter(*child);
    if (found.defined()) return found;
  }
  return {};
}

}  // namespace

void check_images(const at::Tensor& images, int64_t expected_channels,
                  const torch::nn::Module& model) {
  TORCH_CHECK(images.defined(), "RMT: the input tensor is undefined");
  TORCH_CHECK(images.dim() == 4,
              fmt::format("RMT: expected a 4-D image batch (B, {}, H, W), found a {}-D tensor of "
                          "shape {}",
                          expected_channels, images.dim(), text::shape(images.sizes())));
  TORCH_CHECK(images.size(1) == expected_channels,
              fmt::format("RMT: expected {0} input channels (B, {0}, H, W), found {1} in shape {2}",
                          expected_channels, images.size(1), text::shape(images.sizes())));
  TORCH_CHECK(images.size(0) > 0 && images.size(2) > 0 && images.size(3) > 0,
              fmt::format("RMT: expected a non-empty batch with positive height and width, found "
                          "shape {}",
                          text::shape(images.sizes())));
  TORCH_CHECK(at::isFloatingType(images.scalar_type()),
              fmt::format("RMT: expected floating-point images, found dtype {}",
                          c10::toString(images.scalar_type())));
  const auto weight = first_parameter(model);
  if (!weight.defined()) return;
  TORCH_CHECK(images.device() == weight.device(),
              fmt::format("RMT: the images are on {} but the model is on {}: move one of them",
                          images.device().str(), weight.device().str()));
  TORCH_CHECK(images.scalar_type() == weight.scalar_type(),
              fmt::format("RMT: the images are {} but the model is {}: cast the images (or the "
                          "model) so both match",
                          c10::toString(images.scalar_type()),
                          c10::toString(weight.scalar_type())));
}

}  // namespace rmt

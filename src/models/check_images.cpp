#include "rmt/models/check_images.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

namespace rmt {

void check_images(const at::Tensor& images, int64_t expected_channels,
                  const torch::nn::Module& model) {
  TORCH_CHECK(images.defined(), "RMT: the input tensor is undefined");
  TORCH_CHECK(images.dim() == 4, "RMT: expected a 4-D image batch (B, ", expected_channels,
              ", H, W), found a ", images.dim(), "-D tensor of shape ", images.sizes());
  TORCH_CHECK(images.size(1) == expected_channels, "RMT: expected ", expected_channels,
              " input channels (B, ", expected_channels, ", H, W), found ", images.size(1),
              " in shape ", images.sizes());
  TORCH_CHECK(images.size(0) > 0 && images.size(2) > 0 && images.size(3) > 0,
              "RMT: expected a non-empty batch with positive height and width, found shape ",
              images.sizes());
  TORCH_CHECK(at::isFloatingType(images.scalar_type()),
              "RMT: expected floating-point images, found dtype ", images.scalar_type());
  const auto params = model.parameters();
  if (params.empty()) return;
  const auto& weight = params.front();
  TORCH_CHECK(images.device() == weight.device(), "RMT: the images are on ", images.device(),
              " but the model is on ", weight.device(), ": move one of them");
  TORCH_CHECK(images.scalar_type() == weight.scalar_type(), "RMT: the images are ",
              images.scalar_type(), " but the model is ", weight.scalar_type(),
              ": cast the images (or the model) so both match");
}

}  // namespace rmt

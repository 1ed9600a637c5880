#include "rmt/nn/relpos.h"

#include <ATen/ATen.h>

#include "rmt/ops.h"

namespace rmt::nn {

RelPos2dImpl::RelPos2dImpl(const RelPos2dOptions& options_) : options(options_) {
  const int64_t head_dim = options.embed_dim() / options.num_heads();
  // Computed in float32 with the same ops as the authors, so a model built here without a
  // checkpoint has bit-identical buffers (checkpoints carry them anyway).
  auto exponent = at::linspace(0, 1, head_dim / 2, at::kFloat);
  auto half = 1.0 / at::pow(10000.0, exponent);
  angle = register_buffer("angle", half.unsqueeze(-1).repeat({1, 2}).flatten());
  auto heads = at::arange(options.num_heads(), at::kFloat);
  auto exponent_decay = -options.initial_value() -
                        options.heads_range() * heads / static_cast<double>(options.num_heads());
  decay = register_buffer("decay", at::log(1 - at::pow(2.0, exponent_decay)));
}

std::pair<torch::Tensor, torch::Tensor> RelPos2dImpl::sin_cos(int64_t height, int64_t width) const {
  auto index = at::arange(height * width, angle.options());
  auto phase = index.unsqueeze(1) * angle.unsqueeze(0);  // (HW, head_dim)
  return {at::sin(phase).reshape({height, width, -1}), at::cos(phase).reshape({height, width, -1})};
}

torch::Tensor RelPos2dImpl::mask_1d(int64_t length) const {
  return ops::reference::decay_mask_1d(decay, length);
}

torch::Tensor RelPos2dImpl::mask_2d(int64_t height, int64_t width) const {
  return ops::reference::decay_mask_2d(decay, height, width);
}

}  // namespace rmt::nn

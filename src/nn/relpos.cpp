#include "rmt/nn/relpos.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "rmt/ops/masa.h"
#include "nn/derived_weights.h"

namespace rmt::nn {

namespace detail {
class SinCosTables : public DerivedWeights<std::pair<torch::Tensor, torch::Tensor>> {};
}  // namespace detail

RelPos2dImpl::RelPos2dImpl(const RelPos2dOptions& options_) : options(options_) {
  const int64_t head_dim = options.embed_dim() / options.num_heads();
  // Computed in float32 with the same ops as the authors, so a model built here without a
  // checkpoint has bit-identical buffers (checkpoints carry them anyway).
  auto exponent = at::linspace(0, 1, head_dim / 2, at::kFloat);
  auto half = 1.0 / at::pow(10000.0, exponent);
  angle = register_buffer("angle", half.unsqueeze(-1).repeat({1, 2}).flatten());
  decay = register_buffer(
      "decay", retention_decay(options.initial_value(), options.heads_range(), options.num_heads()));
  tables_ = std::make_shared<detail::SinCosTables>();
}

torch::Tensor retention_decay(double initial_value, double heads_range, int64_t num_heads) {
  auto heads = at::arange(num_heads, at::kFloat);
  auto exponent = -initial_value - heads_range * heads / static_cast<double>(num_heads);
  return at::log(1 - at::pow(2.0, exponent));
}

std::pair<torch::Tensor, torch::Tensor> RelPos2dImpl::sin_cos(int64_t height, int64_t width) const {
  auto compute = [&]() -> std::pair<torch::Tensor, torch::Tensor> {
    auto index = at::arange(height * width, angle.options());
    auto phase = index.unsqueeze(1) * angle.unsqueeze(0);  // (HW, head_dim)
    return {at::sin(phase).reshape({height, width, -1}),
            at::cos(phase).reshape({height, width, -1})};
  };
  // Under autograd the tables would carry angle's graph (a parameter only if a user made it one).
  if (policy_.literal() || (at::GradMode::is_enabled() && angle.requires_grad())) return compute();
  if (auto kept = tables_->get({&angle}, {height, width}, compute)) return *std::move(kept);
  return compute();
}

torch::Tensor RelPos2dImpl::mask_1d(int64_t length) const {
  return ops::reference::decay_mask_1d(decay, length);
}

torch::Tensor RelPos2dImpl::mask_2d(int64_t height, int64_t width) const {
  return ops::reference::decay_mask_2d(decay, height, width);
}

}  // namespace rmt::nn

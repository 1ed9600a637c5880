#include "rmt/nn/relpos.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "rmt/ops/masa.h"

namespace rmt::nn {

RelPos2dImpl::RelPos2dImpl(const RelPos2dOptions& options_) : options(options_) {
  const int64_t head_dim = options.embed_dim() / options.num_heads();
  // Computed in float32 with the same ops as the authors, so a model built here without a
  // checkpoint has bit-identical buffers (checkpoints carry them anyway).
  auto exponent = at::linspace(0, 1, head_dim / 2, at::kFloat);
  auto half = 1.0 / at::pow(10000.0, exponent);
  angle = register_buffer("angle", half.unsqueeze(-1).repeat({1, 2}).flatten());
  decay = register_buffer(
      "decay", retention_decay(options.initial_value(), options.heads_range(), options.num_heads()));
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
  std::lock_guard<std::mutex> lock(cache_mutex_);
  const bool same = cached_.height == height && cached_.width == width &&
                    cached_.angle.defined() && cached_.angle.is_same(angle) &&
                    cached_.data == angle.data_ptr() && cached_.version == angle._version() &&
                    cached_.sin.dtype() == angle.dtype() && cached_.sin.device() == angle.device();
  if (!same) {
    auto [s, c] = compute();
    cached_ = {height, width, angle, angle.data_ptr(), angle._version(), s, c};
  }
  return {cached_.sin, cached_.cos};
}

torch::Tensor RelPos2dImpl::mask_1d(int64_t length) const {
  return ops::reference::decay_mask_1d(decay, length);
}

torch::Tensor RelPos2dImpl::mask_2d(int64_t height, int64_t width) const {
  return ops::reference::decay_mask_2d(decay, height, width);
}

}  // namespace rmt::nn

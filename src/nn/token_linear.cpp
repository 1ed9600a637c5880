#include "nn/token_linear.h"

#include "nn/onednn.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

namespace rmt::nn::detail {

torch::Tensor linear_tokens(const torch::nn::LinearImpl& linear, const torch::Tensor& x,
                            PackedLinear* packed) {
  const auto& w = linear.weight;
  if (x.dim() < 2 || !x.is_contiguous()) return at::linear(x, w, linear.bias);
  auto sizes = x.sizes().vec();
  sizes.back() = w.size(0);
  const auto rows = x.view({-1, w.size(1)});
  const bool onednn_fits = packed && onednn::linear_available() && !at::GradMode::is_enabled() &&
                           x.device().is_cpu() && x.scalar_type() == at::kFloat &&
                           w.scalar_type() == at::kFloat && w.device().is_cpu() && rows.size(0) > 0 &&
                           (!linear.bias.defined() || linear.bias.scalar_type() == at::kFloat);
  if (onednn_fits) {
    if (const auto weight = packed->get({&w}, [&] { return onednn::pack_linear(w); })) {
      return onednn::linear(rows, *weight, linear.bias).view(sizes);
    }
  }
  return at::linear(rows, w, linear.bias).view(sizes);
}

}  // namespace rmt::nn::detail

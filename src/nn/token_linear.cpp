#include "nn/token_linear.h"

#include "nn/onednn.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

namespace rmt::nn::detail {

namespace {

// The layer's weight packed for oneDNN, when x (contiguous, at least 2-D) can run there.
std::optional<at::Tensor> onednn_weight(const torch::nn::LinearImpl& linear, const at::Tensor& x,
                                        PackedLinear* packed) {
  const auto& w = linear.weight;
  const bool fits = packed && onednn::linear_available() && !at::GradMode::is_enabled() &&
                    x.device().is_cpu() && x.scalar_type() == at::kFloat &&
                    w.scalar_type() == at::kFloat && w.device().is_cpu() && x.numel() > 0 &&
                    (!linear.bias.defined() || linear.bias.scalar_type() == at::kFloat);
  if (!fits) return std::nullopt;
  return packed->get({&w}, [&] { return onednn::pack_linear(w); });
}

std::vector<int64_t> output_sizes(const torch::nn::LinearImpl& linear, const at::Tensor& x) {
  auto sizes = x.sizes().vec();
  sizes.back() = linear.weight.size(0);
  return sizes;
}

}  // namespace

torch::Tensor linear_tokens(const torch::nn::LinearImpl& linear, const torch::Tensor& x,
                            PackedLinear* packed) {
  const auto& w = linear.weight;
  if (x.dim() < 2 || !x.is_contiguous()) return at::linear(x, w, linear.bias);
  const auto rows = x.view({-1, w.size(1)});
  if (const auto weight = onednn_weight(linear, x, packed)) {
    return onednn::linear(rows, *weight, linear.bias).view(output_sizes(linear, x));
  }
  return at::linear(rows, w, linear.bias).view(output_sizes(linear, x));
}

std::optional<torch::Tensor> linear_gelu_tokens(const torch::nn::LinearImpl& linear,
                                                const torch::Tensor& x, PackedLinear* packed) {
  if (x.dim() < 2 || !x.is_contiguous()) return std::nullopt;
  const auto weight = onednn_weight(linear, x, packed);
  if (!weight) return std::nullopt;
  const auto rows = x.view({-1, linear.weight.size(1)});
  return onednn::linear(rows, *weight, linear.bias, /*gelu=*/true).view(output_sizes(linear, x));
}

}  // namespace rmt::nn::detail

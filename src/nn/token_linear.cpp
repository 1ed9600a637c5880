#include "nn/token_linear.h"

#include "nn/onednn.h"

#include <array>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

namespace rmt::nn::detail {

namespace {

// Whether oneDNN's linear takes the layer on x (contiguous, at least 2-D).
bool onednn_fits(const torch::nn::LinearImpl& linear, const at::Tensor& x) {
  const auto& w = linear.weight;
  return onednn::linear_available() && !at::GradMode::is_enabled() && x.device().is_cpu() &&
         x.scalar_type() == at::kFloat && w.scalar_type() == at::kFloat && w.device().is_cpu() &&
         x.numel() > 0 && (!linear.bias.defined() || linear.bias.scalar_type() == at::kFloat);
}

// The layer's weight packed for oneDNN, when x can run there.
std::optional<at::Tensor> onednn_weight(const torch::nn::LinearImpl& linear, const at::Tensor& x,
                                        PackedLinear* packed) {
  if (!packed || !onednn_fits(linear, x)) return std::nullopt;
  const auto& w = linear.weight;
  return packed->get({&w}, [&] { return onednn::pack_linear(w); });
}

// x (contiguous, at least 2-D) viewed as rows of its last dimension, through `run` (rows ->
// (rows, out_features)), and back to x's shape with out_features last.
template <class Run>
at::Tensor on_rows(const at::Tensor& x, int64_t out_features, Run run) {
  auto sizes = x.sizes().vec();
  sizes.back() = out_features;
  return run(x.view({-1, x.size(-1)})).view(sizes);
}

}  // namespace

torch::Tensor linear_tokens(const torch::nn::LinearImpl& linear, const torch::Tensor& x,
                            PackedLinear* packed) {
  const auto& w = linear.weight;
  if (x.dim() < 2 || !x.is_contiguous()) return at::linear(x, w, linear.bias);
  const auto weight = onednn_weight(linear, x, packed);
  return on_rows(x, w.size(0), [&](const at::Tensor& rows) {
    return weight ? onednn::linear(rows, *weight, linear.bias) : at::linear(rows, w, linear.bias);
  });
}

std::optional<torch::Tensor> stacked_linear_tokens(const torch::nn::LinearImpl& a,
                                                   const torch::nn::LinearImpl& b,
                                                   const torch::nn::LinearImpl& c,
                                                   const torch::Tensor& x,
                                                   PackedLinearStack* cache) {
  if (!cache || x.dim() < 2 || !x.is_contiguous()) return std::nullopt;
  const int64_t in = x.size(-1);
  const std::array<const torch::nn::LinearImpl*, 3> layers{&a, &b, &c};
  for (const auto* layer : layers) {
    if (!onednn_fits(*layer, x) || layer->weight.size(1) != in ||
        layer->bias.defined() != a.bias.defined()) {
      return std::nullopt;
    }
  }
  const auto kept = cache->get({&a.weight, &a.bias, &b.weight, &b.bias, &c.weight, &c.bias}, [&] {
    const auto weight = at::cat({a.weight, b.weight, c.weight});
    return PackedStack{onednn::pack_linear(weight),
                       a.bias.defined() ? at::cat({a.bias, b.bias, c.bias}) : at::Tensor()};
  });
  if (!kept) return std::nullopt;
  return on_rows(x, a.weight.size(0) + b.weight.size(0) + c.weight.size(0),
                 [&](const at::Tensor& rows) {
                   return onednn::linear(rows, kept->packed, kept->bias);
                 });
}

std::optional<torch::Tensor> linear_gelu_tokens(const torch::nn::LinearImpl& linear,
                                                const torch::Tensor& x, PackedLinear* packed) {
  if (x.dim() < 2 || !x.is_contiguous()) return std::nullopt;
  const auto weight = onednn_weight(linear, x, packed);
  if (!weight) return std::nullopt;
  return on_rows(x, linear.weight.size(0), [&](const at::Tensor& rows) {
    return onednn::linear(rows, *weight, linear.bias, /*gelu=*/true);
  });
}

}  // namespace rmt::nn::detail

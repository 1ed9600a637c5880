#include "nn/token_linear.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>

#include <optional>

namespace rmt::nn::detail {

namespace {

// oneDNN's linear and its weight packing, where this LibTorch registers them.
struct OneDnnLinear {
  std::optional<c10::OperatorHandle> linear, reorder;
  bool available() const { return linear.has_value() && reorder.has_value(); }
};

const OneDnnLinear& onednn() {
  static const OneDnnLinear ops = [] {
    auto& dispatcher = c10::Dispatcher::singleton();
    OneDnnLinear o;
    o.linear = dispatcher.findSchema({"mkldnn::_linear_pointwise", ""});
    o.reorder = dispatcher.findSchema({"mkldnn::_reorder_linear_weight", ""});
    return o;
  }();
  return ops;
}

at::Tensor call(const c10::OperatorHandle& op, torch::jit::Stack stack) {
  op.callBoxed(&stack);
  return stack.at(0).toTensor();
}

}  // namespace

torch::Tensor linear_tokens(const torch::nn::LinearImpl& linear, const torch::Tensor& x,
                            PackedLinear* packed) {
  const auto& w = linear.weight;
  if (x.dim() < 2 || !x.is_contiguous()) return at::linear(x, w, linear.bias);
  auto sizes = x.sizes().vec();
  sizes.back() = w.size(0);
  const auto rows = x.view({-1, w.size(1)});
  const bool onednn_fits = packed && onednn().available() && !at::GradMode::is_enabled() &&
                           x.device().is_cpu() && x.scalar_type() == at::kFloat &&
                           w.scalar_type() == at::kFloat && w.device().is_cpu() && rows.size(0) > 0 &&
                           (!linear.bias.defined() || linear.bias.scalar_type() == at::kFloat);
  if (onednn_fits) {
    const auto weight = packed->get({&w}, [&] {
      return call(*onednn().reorder, {w, c10::IValue()});
    });
    torch::jit::Stack stack{rows, weight, linear.bias.defined() ? c10::IValue(linear.bias) : c10::IValue(),
                            c10::IValue(std::string("none")),
                            c10::IValue(c10::List<std::optional<at::Scalar>>()), c10::IValue()};
    return call(*onednn().linear, std::move(stack)).view(sizes);
  }
  return at::linear(rows, w, linear.bias).view(sizes);
}

}  // namespace rmt::nn::detail

#include "rmt/nn/dwconv.h"

#include "rmt/ops/depthwise_conv.h"
#include "nn/conv_padding.h"
#include "nn/derived_weights.h"

namespace rmt::nn {

namespace detail {
// (C, 1, k, k) viewing (k, k, C) memory: the depthwise kernel's tap-major layout, which it then
// reads in place instead of transposing the weight at every call (a serial step before each
// parallel region).
class TapMajorWeight : public DerivedWeights<at::Tensor> {};
}  // namespace detail

DWConv2dImpl::DWConv2dImpl(int64_t dim, int64_t kernel_size, int64_t stride, int64_t padding) {
  conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(dim, dim, kernel_size)
                                                       .stride(stride)
                                                       .padding(padding)
                                                       .groups(dim)));
  tap_major_ = std::make_shared<detail::TapMajorWeight>();
}

torch::Tensor DWConv2dImpl::kernel_weight() {
  const auto& w = conv->weight;
  // Autograd must see the parameter itself; other devices take the weight as it is.
  if (!w.device().is_cpu() || (w.requires_grad() && torch::GradMode::is_enabled())) return w;
  const auto kept = tap_major_->get(
      {&w}, [&] { return w.detach().permute({2, 3, 1, 0}).contiguous().permute({3, 2, 0, 1}); });
  return kept ? *kept : w;
}

torch::Tensor DWConv2dImpl::forward(const torch::Tensor& x) { return forward_add(x, {}); }

torch::Tensor DWConv2dImpl::forward_add(const torch::Tensor& x, const torch::Tensor& residual) {
  if (policy_.literal()) {
    auto y = conv->forward(x.permute({0, 3, 1, 2})).permute({0, 2, 3, 1});
    return residual.defined() ? y + residual : y;
  }
  const auto& o = conv->options;
  return ops::depthwise_conv2d_nhwc(x, kernel_weight(), conv->bias, o.stride()->at(0),
                                    detail::numeric_padding(o)->at(0),
                                    residual);
}

torch::Tensor DWConv2dImpl::forward_gelu_add(const torch::Tensor& h, bool reuse_input) {
  const auto& o = conv->options;
  if (policy_.literal() || o.stride()->at(0) != 1) {
    const auto g = at::gelu(h);
    return forward_add(g, g);
  }
  return ops::gelu_depthwise_conv2d_add(h, kernel_weight(), conv->bias,
                                        detail::numeric_padding(o)->at(0),
                                        reuse_input);
}

torch::Tensor DWConv2dImpl::forward_add_self(const torch::Tensor& g) {
  const auto& o = conv->options;
  if (policy_.literal() || o.stride()->at(0) != 1) return forward_add(g, g);
  return ops::depthwise_conv2d_add_self(g, kernel_weight(), conv->bias,
                                        detail::numeric_padding(o)->at(0));
}

}  // namespace rmt::nn

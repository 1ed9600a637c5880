#include "nn/conv_bn.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "nn/conv_padding.h"

namespace rmt::nn::detail {

torch::Tensor conv_bn(torch::nn::Conv2dImpl& conv, torch::nn::BatchNorm2dImpl& bn,
                      const torch::Tensor& x, bool may_fold) {
  const auto& bo = bn.options;
  const bool fold = may_fold && !bn.is_training() && !at::GradMode::is_enabled() &&
                    bo.affine() && bo.track_running_stats() && bn.running_mean.defined();
  if (!fold) return bn.forward(conv.forward(x));
  const auto& o = conv.options;
  const auto scale = bn.weight * at::rsqrt(bn.running_var + bo.eps());
  const auto weight = conv.weight * scale.reshape({-1, 1, 1, 1});
  const auto bias = conv.bias.defined() ? (conv.bias - bn.running_mean) * scale + bn.bias
                                         : bn.bias - bn.running_mean * scale;
  return at::conv2d(x, weight, bias, *o.stride(), *numeric_padding(o), *o.dilation(), o.groups());
}

}  // namespace rmt::nn::detail

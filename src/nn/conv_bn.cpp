#include "nn/conv_bn.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "nn/conv_padding.h"

namespace rmt::nn::detail {

namespace {

std::pair<torch::Tensor, torch::Tensor> fold(const torch::nn::Conv2dImpl& conv,
                                             const torch::nn::BatchNorm2dImpl& bn) {
  const auto scale = bn.weight * at::rsqrt(bn.running_var + bn.options.eps());
  auto weight =
      (conv.weight * scale.reshape({-1, 1, 1, 1})).contiguous(at::MemoryFormat::ChannelsLast);
  auto bias = conv.bias.defined() ? (conv.bias - bn.running_mean) * scale + bn.bias
                                  : bn.bias - bn.running_mean * scale;
  return {weight, bias};
}

}  // namespace

torch::Tensor conv_bn(torch::nn::Conv2dImpl& conv, torch::nn::BatchNorm2dImpl& bn,
                      const torch::Tensor& x, bool may_fold, FoldedConvBn* cache) {
  const auto& bo = bn.options;
  const bool fold_it = may_fold && !bn.is_training() && !at::GradMode::is_enabled() &&
                       bo.affine() && bo.track_running_stats() && bn.running_mean.defined();
  if (!fold_it) return bn.forward(conv.forward(x));
  const auto& o = conv.options;
  auto make = [&] { return fold(conv, bn); };
  const auto [weight, bias] =
      cache ? cache->get({&conv.weight, &conv.bias, &bn.weight, &bn.bias, &bn.running_mean,
                          &bn.running_var},
                         make)
            : make();
  return at::conv2d(x, weight, bias, *o.stride(), *numeric_padding(o), *o.dilation(), o.groups());
}

}  // namespace rmt::nn::detail

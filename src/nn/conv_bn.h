#pragma once
// A convolution followed by an eval-mode BatchNorm, as one convolution: the BatchNorm's affine
// map folded into the convolution's weights and bias (computed per call: the weights are small),
// so the large activation is written once instead of twice. The folded weights round differently
// from the two-step form by about one float ulp: far inside parity tolerances.

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>

namespace rmt::nn::detail {

// bn(conv(x)); folded when may_fold (the caller's backend policy is not literal), unless the
// BatchNorm is in training mode (batch statistics) or a gradient is being recorded.
torch::Tensor conv_bn(torch::nn::Conv2dImpl& conv, torch::nn::BatchNorm2dImpl& bn,
                      const torch::Tensor& x, bool may_fold);

}  // namespace rmt::nn::detail

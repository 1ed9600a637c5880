#pragma once
// A convolution followed by an eval-mode BatchNorm, as one convolution: the BatchNorm's affine
// map folded into the convolution's weights and bias, so the large activation is written once
// instead of twice. The folded weights round differently from the two-step form by about one
// float ulp: far inside parity tolerances.

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>

#include "nn/derived_weights.h"

namespace rmt::nn::detail {

// One (conv, BatchNorm) pair folded: the weight (channels-last: the activations' layout, which
// oneDNN then takes without a copy), the bias, and, where LibTorch has oneDNN's prepacked
// convolution (nn/onednn.h), the weight packed for it (float32 only); for a 3x3 convolution of
// stride 1 where the Winograd path applies (nn/winograd_conv.h), the weight transformed for it.
struct Folded {
  torch::Tensor weight, bias, packed, winograd;
};
class FoldedConvBn : public DerivedWeights<Folded> {};

// bn(conv(x)); folded when may_fold (the caller's backend policy is not literal), unless the
// BatchNorm is in training mode (batch statistics) or a gradient is being recorded. `cache`
// (optional) keeps the folded weights between calls.
// gelu: then the exact GELU (inside oneDNN's convolution where the packed one runs).
torch::Tensor conv_bn(torch::nn::Conv2dImpl& conv, torch::nn::BatchNorm2dImpl& bn,
                      const torch::Tensor& x, bool may_fold, FoldedConvBn* cache = nullptr,
                      bool gelu = false);

}  // namespace rmt::nn::detail

#include "nn/conv_bn.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <optional>

#include "nn/conv_padding.h"
#include "nn/onednn.h"
#include "nn/winograd_conv.h"

namespace rmt::nn::detail {

namespace {

onednn::ConvGeometry geometry(const torch::nn::Conv2dImpl& conv) {
  const auto& o = conv.options;
  auto vec = [](const torch::ExpandingArray<2>& a) { return std::vector<int64_t>(a->begin(), a->end()); };
  return {vec(numeric_padding(o)), vec(o.stride()), vec(o.dilation()), o.groups()};
}

// The prepacked convolution applies: float32 CPU, channels-last input.
bool packs(const torch::Tensor& x, const torch::Tensor& weight) {
  return onednn::conv_available() && x.device().is_cpu() && x.scalar_type() == at::kFloat &&
         weight.scalar_type() == at::kFloat && x.dim() == 4 &&
         x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

// A 3x3 convolution of stride 1, padding 1, one group (the stem's second and fourth) that the
// Winograd path (nn/winograd_conv.h) takes for this input.
bool winograd_applies(const torch::nn::Conv2dImpl& conv, const torch::Tensor& x) {
  const auto& o = conv.options;
  const auto* padding = padding_numbers(o);
  auto all = [](const torch::ExpandingArray<2>& a, int64_t v) {
    return a->at(0) == v && a->at(1) == v;
  };
  return all(o.kernel_size(), 3) && all(o.stride(), 1) && all(o.dilation(), 1) && padding &&
         all(*padding, 1) && o.groups() == 1 && winograd::applies(x, o.out_channels());
}

// pack: also the oneDNN-packed weight and, where it applies, the Winograd-transformed one (worth
// it only when they are kept between calls).
Folded fold(const torch::nn::Conv2dImpl& conv, const torch::nn::BatchNorm2dImpl& bn,
            const torch::Tensor& x, bool pack) {
  const auto scale = bn.weight * at::rsqrt(bn.running_var + bn.options.eps());
  auto weight =
      (conv.weight * scale.reshape({-1, 1, 1, 1})).contiguous(at::MemoryFormat::ChannelsLast);
  auto bias = conv.bias.defined() ? (conv.bias - bn.running_mean) * scale + bn.bias
                                  : bn.bias - bn.running_mean * scale;
  auto transformed = pack && winograd_applies(conv, x) ? winograd::transform_weight(weight)
                                                       : torch::Tensor();
  // Every input oneDNN's packed conv would take, the Winograd path takes too (same dtype and
  // layout; the channel counts are the conv's): no packed weight beside a transformed one.
  auto packed = pack && !transformed.defined() && packs(x, weight)
                    ? onednn::pack_conv(weight, geometry(conv), x.sizes())
                    : torch::Tensor();
  return {weight, bias, packed, transformed};
}

}  // namespace

torch::Tensor conv_bn(torch::nn::Conv2dImpl& conv, torch::nn::BatchNorm2dImpl& bn,
                      const torch::Tensor& x, bool may_fold, FoldedConvBn* cache, bool gelu) {
  const auto& bo = bn.options;
  const bool fold_it = may_fold && !bn.is_training() && !at::GradMode::is_enabled() &&
                       bo.affine() && bo.track_running_stats() && bn.running_mean.defined();
  if (!fold_it) {
    auto y = bn.forward(conv.forward(x));
    return gelu ? at::gelu(y) : y;
  }
  const auto& o = conv.options;
  std::optional<Folded> kept;
  if (cache) {
    kept = cache->get({&conv.weight, &conv.bias, &bn.weight, &bn.bias, &bn.running_mean,
                       &bn.running_var},
                      [&] { return fold(conv, bn, x, /*pack=*/true); });
  }
  const Folded folded = kept ? *std::move(kept) : fold(conv, bn, x, /*pack=*/false);
  if (folded.winograd.defined() && winograd_applies(conv, x)) {
    return winograd::conv3x3(x, folded.winograd, folded.bias, gelu);
  }
  if (folded.packed.defined() && packs(x, folded.weight)) {
    return onednn::conv(x, folded.packed, folded.bias, geometry(conv), gelu);
  }
  auto y = at::conv2d(x, folded.weight, folded.bias, *o.stride(), *numeric_padding(o),
                      *o.dilation(), o.groups());
  return gelu ? at::gelu_(y) : y;
}

}  // namespace rmt::nn::detail

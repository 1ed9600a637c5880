#include "rmt/nn/patch_embed.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "nn/conv_bn.h"

#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>

namespace rmt::nn {

PatchEmbedImpl::PatchEmbedImpl(int64_t in_chans, int64_t embed_dim) {
  using torch::nn::BatchNorm2d;
  using torch::nn::Conv2d;
  using torch::nn::Conv2dOptions;
  const int64_t half = embed_dim / 2;
  // Indices 0..10 are the authors' state_dict names (proj.0.weight, proj.1.running_mean, ...).
  proj = register_module(
      "proj", torch::nn::Sequential(
                  Conv2d(Conv2dOptions(in_chans, half, 3).stride(2).padding(1)), BatchNorm2d(half),
                  torch::nn::GELU(), Conv2d(Conv2dOptions(half, half, 3).stride(1).padding(1)),
                  BatchNorm2d(half), torch::nn::GELU(),
                  Conv2d(Conv2dOptions(half, embed_dim, 3).stride(2).padding(1)),
                  BatchNorm2d(embed_dim), torch::nn::GELU(),
                  Conv2d(Conv2dOptions(embed_dim, embed_dim, 3).stride(1).padding(1)),
                  BatchNorm2d(embed_dim)));
  for (int i = 0; i < 4; ++i) folded_.push_back(std::make_shared<detail::FoldedConvBn>());
}

torch::Tensor PatchEmbedImpl::forward(const torch::Tensor& x) {
  if (policy_.literal() || at::GradMode::is_enabled()) {
    return proj->forward(x).permute({0, 2, 3, 1});
  }
  // (conv, BatchNorm) pairs at 0, 3, 6, 9 with GELU after the first three. Channels-last from the
  // start, so that the convs keep that layout and the (B, H, W, C) result needs no copy.
  auto y = x.contiguous(at::MemoryFormat::ChannelsLast);
  for (size_t i = 0; i < 10; i += 3) {
    y = detail::conv_bn(*proj[i]->as<torch::nn::Conv2dImpl>(),
                        *proj[i + 1]->as<torch::nn::BatchNorm2dImpl>(), y, /*may_fold=*/true,
                        folded_[i / 3].get(), /*gelu=*/i < 9);
  }
  return y.permute({0, 2, 3, 1});
}

}  // namespace rmt::nn

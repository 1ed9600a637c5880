#include "rmt/nn/patch_merging.h"

#include "nn/conv_bn.h"

namespace rmt::nn {

PatchMergingImpl::PatchMergingImpl(int64_t dim, int64_t out_dim) {
  reduction = register_module(
      "reduction", torch::nn::Conv2d(torch::nn::Conv2dOptions(dim, out_dim, 3).stride(2).padding(1)));
  norm = register_module("norm", torch::nn::BatchNorm2d(out_dim));
  folded_ = std::make_shared<detail::FoldedConvBn>();
}

torch::Tensor PatchMergingImpl::forward(const torch::Tensor& x) {
  // The authors copy to (B, C, H, W); the fused path hands the conv the channels-last view, whose
  // result comes back channels-last, i.e. (B, H, W, C) contiguous after the permute.
  auto nchw = x.permute({0, 3, 1, 2});
  if (policy_.literal()) nchw = nchw.contiguous();
  auto y = detail::conv_bn(*reduction, *norm, nchw, /*may_fold=*/!policy_.literal(),
                            folded_.get());
  return y.permute({0, 2, 3, 1});
}

}  // namespace rmt::nn

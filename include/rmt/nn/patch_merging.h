#pragma once
// Downsampling between stages (PatchMerging): 3x3 stride-2 conv and BatchNorm.

#include <memory>

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>

#include "rmt/nn/backend.h"

namespace rmt::nn {
namespace detail {
class FoldedConvBn;  // nn/conv_bn.h: a (conv, BatchNorm) pair's folded weights, kept between calls
}  // namespace detail

class PatchMergingImpl : public torch::nn::Module, public WithBackend {
 public:
  PatchMergingImpl(int64_t dim, int64_t out_dim);
  // x: (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), out_dim)
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Conv2d reduction{nullptr};
  torch::nn::BatchNorm2d norm{nullptr};  // not literal (Reference): folded into the conv at inference

 private:
  std::shared_ptr<detail::FoldedConvBn> folded_;
};
TORCH_MODULE(PatchMerging);

}  // namespace rmt::nn

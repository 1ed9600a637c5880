#pragma once
// Downsampling between stages (PatchMerging): 3x3 stride-2 conv and BatchNorm.

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>

#include "rmt/nn/backend.h"

namespace rmt::nn {

class PatchMergingImpl : public torch::nn::Module, public WithBackend {
 public:
  PatchMergingImpl(int64_t dim, int64_t out_dim);
  // x: (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), out_dim)
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Conv2d reduction{nullptr};
  torch::nn::BatchNorm2d norm{nullptr};  // not literal (Reference): folded into the conv at inference
};
TORCH_MODULE(PatchMerging);

}  // namespace rmt::nn

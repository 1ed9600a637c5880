#pragma once
// Depthwise conv on channels-last tensors (DWConv2d): LCE (5x5), CPE (3x3) and the FFN's 3x3.

#include <torch/nn/modules/conv.h>

namespace rmt::nn {

class DWConv2dImpl : public torch::nn::Module {
 public:
  DWConv2dImpl(int64_t dim, int64_t kernel_size, int64_t stride, int64_t padding);
  // x: (B, H, W, C) -> (B, H', W', C)
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(DWConv2d);

}  // namespace rmt::nn

#pragma once
// Depthwise conv on channels-last tensors (DWConv2d): LCE (5x5), CPE (3x3) and the FFN's 3x3.

#include <torch/nn/modules/conv.h>

#include "rmt/nn/backend.h"

namespace rmt::nn {

namespace detail {
class TapMajorWeight;  // nn/dwconv.cpp: the weight in the CPU kernel's layout, kept between calls
}  // namespace detail

class DWConv2dImpl : public torch::nn::Module, public WithBackend {
 public:
  DWConv2dImpl(int64_t dim, int64_t kernel_size, int64_t stride, int64_t padding);
  // x: (B, H, W, C) -> (B, H', W', C)
  torch::Tensor forward(const torch::Tensor& x);
  // forward(x) + residual in one pass over memory (see rmt/ops/depthwise_conv.h).
  torch::Tensor forward_add(const torch::Tensor& x, const torch::Tensor& residual);
  // g + forward(g) for g = gelu(h), the FFN's middle. With reuse_input, h's memory may hold the
  // result (see rmt/ops/depthwise_conv.h): pass it only for a tensor nothing else uses.
  torch::Tensor forward_gelu_add(const torch::Tensor& h, bool reuse_input);
  // g + forward(g); g's memory may hold the result (see rmt/ops/depthwise_conv.h): pass only a
  // tensor nothing else uses.
  torch::Tensor forward_add_self(const torch::Tensor& g);

  // The weight for rmt::ops' depthwise ops: at CPU inference the tap-major copy, else conv->weight.
  torch::Tensor kernel_weight();

  // Literal (Reference): at::conv2d on the permuted view, then the add.
  torch::nn::Conv2d conv{nullptr};

 private:
  std::shared_ptr<detail::TapMajorWeight> tap_major_;
};
TORCH_MODULE(DWConv2d);

}  // namespace rmt::nn

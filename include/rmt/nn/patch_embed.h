#pragma once
// The conv stem (PatchEmbed): four 3x3 convs (strides 2, 1, 2, 1) with BatchNorm and GELU between.

#include <memory>
#include <vector>

#include <torch/nn/modules/container/sequential.h>

#include "rmt/nn/backend.h"

namespace rmt::nn {
namespace detail {
class FoldedConvBn;  // nn/conv_bn.h: a (conv, BatchNorm) pair's folded weights, kept between calls
}  // namespace detail

class PatchEmbedImpl : public torch::nn::Module, public WithBackend {
 public:
  PatchEmbedImpl(int64_t in_chans, int64_t embed_dim);
  // x: (B, C, H, W) -> (B, ceil(H/4), ceil(W/4), embed_dim), channels last.
  torch::Tensor forward(const torch::Tensor& x);

  // Not literal (Reference): BatchNorms folded, GELU in place at inference.
  torch::nn::Sequential proj{nullptr};

 private:
  std::vector<std::shared_ptr<detail::FoldedConvBn>> folded_;  // one per (conv, BatchNorm) pair
};
TORCH_MODULE(PatchEmbed);

}  // namespace rmt::nn

#pragma once
// The block's FFN (FeedForwardNetwork): fc1, GELU, 3x3 depthwise conv with a residual, fc2.

#include <array>
#include <memory>
#include <optional>

#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include "rmt/nn/dwconv.h"

namespace rmt::nn {
namespace detail {
class PackedLinear;  // nn/token_linear.h: a Linear weight packed for oneDNN, kept between calls
class ScaledLinear;  // nn/token_linear.h: a Linear layer with a layer scale folded in
}  // namespace detail

class FeedForwardImpl : public torch::nn::Module, public WithBackend {
 public:
  FeedForwardImpl(int64_t embed_dim, int64_t ffn_dim);
  // x: (B, H, W, C) -> (B, H, W, C)
  torch::Tensor forward(const torch::Tensor& x);
  // into += forward(x), into of x's shape; at CPU inference fc2 adds its product to `into` in its
  // own pass (no output tensor, no separate add). With scale (C values, a block's layer scale):
  // into += scale * forward(x), scale folded into fc2's packed weight and bias there.
  void forward_add_(const torch::Tensor& x, torch::Tensor& into, const torch::Tensor& scale = {});
  // x += forward(norm(x)) (with scale: scale * forward(norm(x))) at CPU float inference where the
  // FFN runs a few image rows at a time: norm's rows computed as fc1 takes them, no normalized
  // tensor written and read back. Returns false, having done nothing, elsewhere (then norm and
  // forward_add_ as two steps).
  bool norm_forward_add_(const torch::nn::LayerNormImpl& norm, torch::Tensor& x,
                         const torch::Tensor& scale = {});
  // This module's and dwconv's.
  void set_backend(Backend backend) override;

  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  DWConv2d dwconv{nullptr};

 private:
  // dwconv(gelu(fc1(x))) + gelu(fc1(x)), fc2's input.
  torch::Tensor hidden(const torch::Tensor& x);
  std::optional<int64_t> row_pipeline_padding() const;
  std::array<std::shared_ptr<detail::PackedLinear>, 2> packed_;  // fc1, fc2
  std::shared_ptr<detail::ScaledLinear> scaled_fc2_;             // fc2, a scale folded in
};
TORCH_MODULE(FeedForward);

}  // namespace rmt::nn

#pragma once
// Manhattan self-attention (MaSA): the authors' VisionRetentionAll (full) and VisionRetentionChunk
// (decomposed: rows, then columns). Same parameters for both; `decomposed` picks the computation.

#include <array>
#include <memory>

#include <torch/nn/modules/linear.h>

#include "rmt/nn/cost.h"
#include "rmt/nn/dwconv.h"

namespace rmt::nn {
namespace detail {
class PackedLinear;       // nn/token_linear.h: a Linear weight packed for oneDNN, kept between calls
class PackedLinearStack;  // nn/token_linear.h: several Linear weights stacked and packed as one
class ScaledLinear;       // nn/token_linear.h: a Linear layer with a layer scale folded in
}  // namespace detail

struct MaSAOptions {
  MaSAOptions(int64_t embed_dim, int64_t num_heads) : embed_dim_(embed_dim), num_heads_(num_heads) {}
  TORCH_ARG(int64_t, embed_dim);
  TORCH_ARG(int64_t, num_heads);
  TORCH_ARG(bool, decomposed) = false;
};

class MaSAImpl : public torch::nn::Module, public WithBackend, public CountsCost {
 public:
  explicit MaSAImpl(const MaSAOptions& options);
  // x: (B, H, W, C); sin, cos: (H, W, head_dim); decay: (heads,). Returns (B, H, W, C).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& sin, const torch::Tensor& cos,
                        const torch::Tensor& decay);
  // into += forward(x, sin, cos, decay), into of x's shape: at CPU inference out_proj adds its
  // product to `into` in its own pass over it (the block's residual: no output tensor, no add).
  // With scale (C values, a block's layer scale): into += scale * forward(...), scale folded into
  // out_proj's packed weight and bias where out_proj adds in its own pass.
  void forward_add_(const torch::Tensor& x, const torch::Tensor& sin, const torch::Tensor& cos,
                    const torch::Tensor& decay, torch::Tensor& into,
                    const torch::Tensor& scale = {});
  // This module's and lepe's.
  void set_backend(Backend backend) override;
  // The projections and lepe, then the two attention matmuls (QK^T and attention x V), which are
  // no child module: "NAME.attention".
  Size2d count_cost(CostCounter& counter, const std::string& name, Size2d in) const override;

  MaSAOptions options;
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr};
  DWConv2d lepe{nullptr};  // LCE: 5x5 depthwise conv on v
  torch::nn::Linear out_proj{nullptr};

 private:
  // lepe(v) + attention: what out_proj projects.
  torch::Tensor mixed(const torch::Tensor& x, const torch::Tensor& sin, const torch::Tensor& cos,
                      const torch::Tensor& decay);

  std::array<std::shared_ptr<detail::PackedLinear>, 4> packed_;  // q, k, v, out
  std::shared_ptr<detail::PackedLinearStack> packed_qkv_;        // q, k, v stacked
  std::shared_ptr<detail::ScaledLinear> scaled_out_;             // out_proj, a scale folded in
};
TORCH_MODULE(MaSA);

}  // namespace rmt::nn

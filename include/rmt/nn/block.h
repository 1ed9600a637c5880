#pragma once
// RetBlock: CPE, then pre-norm MaSA and pre-norm FFN residuals, optional layer scale, stochastic depth.

#include <torch/nn/modules/normalization.h>

#include "rmt/nn/ffn.h"
#include "rmt/nn/masa.h"

namespace rmt::nn {

struct RetBlockOptions {
  RetBlockOptions(int64_t embed_dim, int64_t num_heads, int64_t ffn_dim)
      : embed_dim_(embed_dim), num_heads_(num_heads), ffn_dim_(ffn_dim) {}
  TORCH_ARG(int64_t, embed_dim);
  TORCH_ARG(int64_t, num_heads);
  TORCH_ARG(int64_t, ffn_dim);
  TORCH_ARG(bool, decomposed) = false;
  TORCH_ARG(double, drop_path) = 0.0;
  TORCH_ARG(bool, layerscale) = false;
  TORCH_ARG(double, layer_init_values) = 1e-5;
};

class RetBlockImpl : public torch::nn::Module, public WithBackend {
 public:
  explicit RetBlockImpl(const RetBlockOptions& options);
  // x: (B, H, W, C); sin/cos/decay as MaSA takes them.
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& sin, const torch::Tensor& cos,
                        const torch::Tensor& decay);
  // This block's (residuals in place or not) and its modules'.
  void set_backend(Backend backend) override;

  RetBlockOptions options;
  torch::nn::LayerNorm retention_layer_norm{nullptr};
  MaSA retention{nullptr};
  torch::nn::LayerNorm final_layer_norm{nullptr};
  FeedForward ffn{nullptr};
  DWConv2d pos{nullptr};  // CPE
  torch::Tensor gamma_1, gamma_2;  // layer scale, (1, 1, 1, C); undefined without it
};
TORCH_MODULE(RetBlock);

// Stochastic depth as timm's DropPath: in training, zero whole samples with probability p and
// scale the survivors by 1 / (1 - p); identity in eval or when p == 0.
torch::Tensor drop_path(const torch::Tensor& x, double p, bool training);

}  // namespace rmt::nn

#include "rmt/nn/ffn.h"

#include <ATen/ATen.h>

namespace rmt::nn {

FeedForwardImpl::FeedForwardImpl(int64_t embed_dim, int64_t ffn_dim) {
  fc1 = register_module("fc1", torch::nn::Linear(embed_dim, ffn_dim));
  fc2 = register_module("fc2", torch::nn::Linear(ffn_dim, embed_dim));
  dwconv = register_module("dwconv", DWConv2d(ffn_dim, 3, 1, 1));
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  auto hidden = at::gelu(fc1->forward(x));
  hidden = dwconv->forward(hidden) + hidden;
  return fc2->forward(hidden);
}

}  // namespace rmt::nn

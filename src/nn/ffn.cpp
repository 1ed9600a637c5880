#include "rmt/nn/ffn.h"

namespace rmt::nn {

FeedForwardImpl::FeedForwardImpl(int64_t embed_dim, int64_t ffn_dim) {
  fc1 = register_module("fc1", torch::nn::Linear(embed_dim, ffn_dim));
  fc2 = register_module("fc2", torch::nn::Linear(ffn_dim, embed_dim));
  dwconv = register_module("dwconv", DWConv2d(ffn_dim, 3, 1, 1));
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  // dwconv(gelu(h)) + gelu(h), in fc1's output buffer (nothing else uses it) when it can.
  auto hidden = dwconv->forward_gelu_add(fc1->forward(x), /*reuse_input=*/true);
  return fc2->forward(hidden);
}

void FeedForwardImpl::set_backend(Backend backend) {
  WithBackend::set_backend(backend);
  dwconv->set_backend(backend);
}

}  // namespace rmt::nn

#include "rmt/nn/ffn.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

namespace rmt::nn {

FeedForwardImpl::FeedForwardImpl(int64_t embed_dim, int64_t ffn_dim) {
  fc1 = register_module("fc1", torch::nn::Linear(embed_dim, ffn_dim));
  fc2 = register_module("fc2", torch::nn::Linear(ffn_dim, embed_dim));
  dwconv = register_module("dwconv", DWConv2d(ffn_dim, 3, 1, 1));
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  auto hidden = fc1->forward(x);
  // In place when no gradient is recorded: fc1's output has no other user.
  const bool in_place = backend != Backend::Reference && !at::GradMode::is_enabled();
  hidden = in_place ? at::gelu_(hidden) : at::gelu(hidden);
  hidden = dwconv->forward_add(hidden, hidden);  // dwconv(h) + h
  return fc2->forward(hidden);
}

}  // namespace rmt::nn

#include "rmt/nn/ffn.h"

#include <ATen/core/grad_mode.h>
#include <fmt/format.h>

#include "nn/conv_padding.h"
#include "nn/ffn_rows.h"
#include "nn/token_linear.h"

namespace rmt::nn {

FeedForwardImpl::FeedForwardImpl(int64_t embed_dim, int64_t ffn_dim) {
  // (LibTorch's Linear would fail on its empty weight's initialisation, naming neither.)
  TORCH_CHECK(embed_dim > 0 && ffn_dim > 0,
              fmt::format("FeedForward: embed_dim and ffn_dim must be positive, got embed_dim={} "
                          "and ffn_dim={}",
                          embed_dim, ffn_dim));
  fc1 = register_module("fc1", torch::nn::Linear(embed_dim, ffn_dim));
  fc2 = register_module("fc2", torch::nn::Linear(ffn_dim, embed_dim));
  dwconv = register_module("dwconv", DWConv2d(ffn_dim, 3, 1, 1));
  // fc2's caches say what it is: the GEMM back-end may differ for it (token_linear.h).
  packed_[0] = std::make_shared<detail::PackedLinear>();
  packed_[1] = std::make_shared<detail::PackedLinear>(detail::LinearRole::kFfnOutput);
  scaled_fc2_ = std::make_shared<detail::ScaledLinear>(detail::LinearRole::kFfnOutput);
}

torch::Tensor FeedForwardImpl::hidden(const torch::Tensor& x) {
  // dwconv(gelu(h)) + gelu(h), in fc1's output buffer (nothing else uses it) when it can.
  if (policy_.literal()) return dwconv->forward_gelu_add(fc1->forward(x), true);
  // With the packed GEMM, the GELU runs in fc1's pass over its output, each block while in cache.
  const auto activated = detail::linear_gelu_tokens(*fc1, x, packed_[0].get());
  return activated ? dwconv->forward_add_self(*activated)
                   : dwconv->forward_gelu_add(detail::linear_tokens(*fc1, x, packed_[0].get()),
                                              /*reuse_input=*/true);
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  const auto h = hidden(x);
  return policy_.literal() ? fc2->forward(h) : detail::linear_tokens(*fc2, h, packed_[1].get());
}

// The depthwise conv's padding where the row pipeline can run it (stride 1, the same padding on
// both axes), else nothing.
std::optional<int64_t> FeedForwardImpl::row_pipeline_padding() const {
  const auto& o = dwconv->conv->options;
  const auto padding = detail::numeric_padding(o);
  if (o.stride()->at(0) != 1 || o.stride()->at(1) != 1 || padding->at(0) != padding->at(1)) {
    return std::nullopt;
  }
  return padding->at(0);
}

void FeedForwardImpl::forward_add_(const torch::Tensor& x, torch::Tensor& into,
                                   const torch::Tensor& scale) {
  const auto fc2_used = policy_.literal() ? std::nullopt
                                        : scaled_fc2_->layer_for(*fc2, packed_[1].get(), scale);
  if (!fc2_used) {
    const auto out = forward(x);
    into.add_(scale.defined() ? out * scale : out);
    return;
  }
  const auto& [layer2, packed2] = *fc2_used;
  const auto padding = row_pipeline_padding();
  if (padding && detail::ffn_rows_add_(*fc1, layer2, dwconv->kernel_weight(), dwconv->conv->bias,
                                       *padding, x, into, packed_[0].get(), packed2)) {
    return;
  }
  detail::linear_tokens_add_(layer2, hidden(x), into, packed2);
}

bool FeedForwardImpl::norm_forward_add_(const torch::nn::LayerNormImpl& norm, torch::Tensor& x,
                                        const torch::Tensor& scale) {
  if (policy_.literal() || at::GradMode::is_enabled() || is_training()) return false;
  const auto padding = row_pipeline_padding();
  const auto fc2_used =
      padding ? scaled_fc2_->layer_for(*fc2, packed_[1].get(), scale) : std::nullopt;
  return fc2_used &&
         detail::ffn_rows_norm_add_(*fc1, fc2_used->first, dwconv->kernel_weight(),
                                    dwconv->conv->bias, *padding, norm.weight, norm.bias,
                                    norm.options.eps(), x, packed_[0].get(), fc2_used->second);
}

void FeedForwardImpl::set_backend(Backend backend) {
  WithBackend::set_backend(backend);
  dwconv->set_backend(backend);
}

}  // namespace rmt::nn

#include "rmt/nn/block.h"

#include <ATen/core/grad_mode.h>

#include "rmt/ops/layer_norm.h"

namespace rmt::nn {

torch::Tensor drop_path(const torch::Tensor& x, double p, bool training) {
  if (p <= 0.0 || !training) return x;
  const double keep = 1.0 - p;
  std::vector<int64_t> shape(x.dim(), 1);
  shape[0] = x.size(0);
  auto mask = at::empty(shape, x.options()).bernoulli_(keep);
  if (keep > 0.0) mask.div_(keep);
  return x * mask;
}

RetBlockImpl::RetBlockImpl(const RetBlockOptions& options_) : options(options_) {
  const auto dim = options.embed_dim();
  auto norm_options = torch::nn::LayerNormOptions({dim}).eps(1e-6);
  retention_layer_norm = register_module("retention_layer_norm", torch::nn::LayerNorm(norm_options));
  retention = register_module(
      "retention", MaSA(MaSAOptions(dim, options.num_heads()).decomposed(options.decomposed())));
  final_layer_norm = register_module("final_layer_norm", torch::nn::LayerNorm(norm_options));
  ffn = register_module("ffn", FeedForward(dim, options.ffn_dim()));
  pos = register_module("pos", DWConv2d(dim, 3, 1, 1));
  if (options.layerscale()) {
    gamma_1 = register_parameter("gamma_1", at::full({1, 1, 1, dim}, options.layer_init_values()));
    gamma_2 = register_parameter("gamma_2", at::full({1, 1, 1, dim}, options.layer_init_values()));
  }
}

torch::Tensor RetBlockImpl::forward(torch::Tensor x, const torch::Tensor& sin,
                                    const torch::Tensor& cos, const torch::Tensor& decay) {
  const double p = options.drop_path();
  x = pos->forward_add(x, x);  // x + pos(x): a new tensor, ours to update in place below
  // In place when no gradient is recorded (and not for the authors' literal op sequence): two
  // tensors of the block's size fewer to allocate.
  const bool in_place = !at::GradMode::is_enabled() && !policy_.literal();
  // gamma * branch (layer scale), in the branch's own buffer when in place.
  auto scaled = [&](const torch::Tensor& branch, const torch::Tensor& gamma) {
    return gamma.defined() ? (in_place ? branch.mul_(gamma) : gamma * branch) : branch;
  };
  auto residual = [&](torch::Tensor& acc, const torch::Tensor& branch, const torch::Tensor& gamma) {
    auto b = drop_path(scaled(branch, gamma), p, is_training());
    return in_place ? acc.add_(b) : acc + b;
  };
  if (in_place && !is_training()) {
    // Inference: out_proj and fc2 add their products (times the layer scale, folded into their
    // weights, where there is one) to x in their own passes; the first LayerNorm reads x in a pass
    // of its own, the second where it can inside the FFN's row pipeline.
    auto norm = [&](torch::nn::LayerNormImpl& ln) {  // x's rows normalized, x unchanged
      return ops::add_layer_norm_(x, {}, ln.weight, ln.bias, ln.options.eps());
    };
    retention->forward_add_(norm(*retention_layer_norm), sin, cos, decay, x, gamma_1);
    if (ffn->norm_forward_add_(*final_layer_norm, x, gamma_2)) return x;
    ffn->forward_add_(norm(*final_layer_norm), x, gamma_2);
    return x;
  }
  x = residual(x, retention->forward(retention_layer_norm->forward(x), sin, cos, decay), gamma_1);
  return residual(x, ffn->forward(final_layer_norm->forward(x)), gamma_2);
}

void RetBlockImpl::set_backend(Backend backend) {
  WithBackend::set_backend(backend);
  pos->set_backend(backend);
  retention->set_backend(backend);
  ffn->set_backend(backend);
}

}  // namespace rmt::nn

#include "rmt/nn/basic_layer.h"

namespace rmt::nn {

BasicLayerImpl::BasicLayerImpl(const BasicLayerOptions& options_) : options(options_) {
  Relpos = register_module("Relpos", RelPos2d(RelPos2dOptions(options.embed_dim(), options.num_heads(),
                                                              options.init_value(),
                                                              options.heads_range())));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.depth(); ++i) {
    const auto& rates = options.drop_path();
    const double rate = i < static_cast<int64_t>(rates.size()) ? rates[i] : 0.0;
    blocks->push_back(RetBlock(RetBlockOptions(options.embed_dim(), options.num_heads(),
                                               options.ffn_dim())
                                   .decomposed(options.decomposed())
                                   .drop_path(rate)
                                   .layerscale(options.layerscale())
                                   .layer_init_values(options.layer_init_values())));
  }
  if (options.out_dim() > 0) {
    downsample = register_module("downsample", PatchMerging(options.embed_dim(), options.out_dim()));
  }
}

StageOutput BasicLayerImpl::forward_stage(const torch::Tensor& input) {
  const auto height = input.size(1), width = input.size(2);
  auto [sin, cos] = Relpos->sin_cos(height, width);
  const auto& decay = Relpos->decay;
  torch::Tensor x = input;
  for (const auto& block : *blocks) {
    x = block->as<RetBlockImpl>()->forward(x, sin, cos, decay);
  }
  if (downsample) return {x, downsample->forward(x)};
  return {x, x};
}

}  // namespace rmt::nn

#include "rmt/models/dense_backbone.h"

#include <algorithm>
#include <string>

#include <fmt/format.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/normalization.h>

#include "rmt/models/check_images.h"
#include "models/stage_builder.h"

namespace rmt {

DenseBackboneImpl::DenseBackboneImpl(const Config& config) : config_(config) {
  config_.validate(ModelKind::Dense);
  patch_embed = register_module("patch_embed",
                                nn::PatchEmbed(config_.in_chans, config_.embed_dims.front()));
  layers = register_module("layers", detail::build_stages(config_, ModelKind::Dense));
  extra_norms = register_module("extra_norms", torch::nn::ModuleList());
  for (size_t i = 0; i < 4; ++i) {
    extra_norms->push_back(
        torch::nn::LayerNorm(torch::nn::LayerNormOptions({config_.embed_dims[i]}).eps(1e-5)));
  }
}

std::vector<torch::Tensor> DenseBackboneImpl::forward(const torch::Tensor& images) {
  check_images(images, config_.in_chans, *this);
  auto x = patch_embed->forward(images);
  std::vector<torch::Tensor> outputs;
  const auto wanted = config_.selected_stages();
  // Every stage runs, as the authors' (in training, their BatchNorms update and stochastic depth draws).
  for (int64_t i = 0; i < config_.num_stages(); ++i) {
    auto stage = layers[i]->as<nn::BasicLayerImpl>()->forward_stage(x);
    if (std::find(wanted.begin(), wanted.end(), i) != wanted.end()) {
      auto normed = extra_norms[i]->as<torch::nn::LayerNormImpl>()->forward(stage.features);
      outputs.push_back(normed.permute({0, 3, 1, 2}).contiguous());
    }
    x = stage.downsampled;
  }
  return outputs;
}

std::vector<FeatureInfo> DenseBackboneImpl::feature_info() const {
  // The stem divides by 4; each stage's PatchMerging (after its features are taken) by 2 more.
  std::vector<FeatureInfo> info;
  for (const int64_t stage : config_.selected_stages()) {
    info.push_back({stage, config_.embed_dims[static_cast<size_t>(stage)], int64_t(4) << stage,
                    fmt::format("extra_norms.{}", stage)});
  }
  return info;
}

void DenseBackboneImpl::train(bool on) {
  torch::nn::Module::train(on);
  if (on && freeze_batchnorm) {
    for (const auto& module : modules(/*include_self=*/false)) {
      if (module->as<torch::nn::BatchNorm2dImpl>()) module->eval();
    }
  }
}

void DenseBackboneImpl::set_backend(nn::Backend backend) {
  WithBackend::set_backend(backend);
  patch_embed->set_backend(backend);
  for (const auto& layer : *layers) layer->as<nn::BasicLayerImpl>()->set_backend(backend);
}

}  // namespace rmt

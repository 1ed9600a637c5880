#pragma once
// The multi-scale RMT backbone for detection and segmentation (the authors' mmdet/mmseg `RMT`).

#include <torch/nn/modules/container/modulelist.h>

#include "rmt/models/config.h"
#include "rmt/models/feature_info.h"
#include "rmt/nn/basic_layer.h"
#include "rmt/nn/patch_embed.h"

namespace rmt {

class DenseBackboneImpl : public torch::nn::Module, public nn::WithBackend {
 public:
  // config.validate(Dense) is called first; projection is unused (as in the authors' RMT).
  explicit DenseBackboneImpl(const Config& config);

  // images: (B, in_chans, H, W). Returns, for each stage i of config.selected_stages() (the stages
  // out_indices names, in stage order, each once), stage i's features before its downsampling,
  // through extra_norms[i] (LayerNorm, eps 1e-5), as NCHW (B, C_i, H_i, W_i).
  std::vector<torch::Tensor> forward(const torch::Tensor& images);

  // With freeze_batchnorm, train() leaves every BatchNorm in eval mode (running statistics used and
  // kept). Off by default, as the authors' code behaves whatever norm_eval says (see Config).
  void train(bool on = true) override;
  bool freeze_batchnorm = false;

  // One entry per output of forward(), in the same order: stage, channels, reduction, module.
  std::vector<FeatureInfo> feature_info() const;

  const Config& config() const { return config_; }
  // The model's and every module's in it (see rmt/nn/backend.h).
  void set_backend(nn::Backend backend) override;

  nn::PatchEmbed patch_embed{nullptr};
  torch::nn::ModuleList layers{nullptr};
  // Four LayerNorms over embed_dims[0..3], whatever the number of stages (as the authors build them).
  torch::nn::ModuleList extra_norms{nullptr};

 private:
  Config config_;
};
TORCH_MODULE(DenseBackbone);

}  // namespace rmt

#pragma once
// The multi-scale RMT backbone for detection and segmentation (the authors' mmdet/mmseg `RMT`).

#include <torch/nn/modules/container/modulelist.h>

#include "rmt/config.h"
#include "rmt/nn/basic_layer.h"
#include "rmt/nn/patch_embed.h"

namespace rmt {

class DenseBackboneImpl : public torch::nn::Module {
 public:
  // config.out_indices selects the returned stages; projection and num_classes are unused.
  explicit DenseBackboneImpl(const Config& config);

  // images: (B, in_chans, H, W). Returns, for each i in out_indices, stage i's features before its
  // downsampling, through extra_norms[i] (LayerNorm, eps 1e-5), as NCHW (B, C_i, H_i, W_i).
  std::vector<torch::Tensor> forward(const torch::Tensor& images);

  // Keeps every BatchNorm in eval mode while training when norm_eval is set (the authors' default).
  void train(bool on = true) override;
  bool norm_eval = true;

  const Config& config() const { return config_; }
  // Every MaSA, depthwise conv and FFN of the model (see rmt/nn/backend.h).
  void set_backend(nn::Backend backend);

  nn::PatchEmbed patch_embed{nullptr};
  torch::nn::ModuleList layers{nullptr};
  torch::nn::ModuleList extra_norms{nullptr};

 private:
  Config config_;
};
TORCH_MODULE(DenseBackbone);

}  // namespace rmt

#pragma once
// The RMT image classifier (the authors' VisRetNet), with the optional token-labeling head of
// RMT-S*/B*/L* (`aux_head`).

#include <array>
#include <memory>

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>

#include "rmt/models/config.h"
#include "rmt/nn/basic_layer.h"
#include "rmt/nn/cost.h"
#include "rmt/nn/patch_embed.h"

namespace rmt {

namespace nn::detail {
class PackedLinear;  // nn/token_linear.h: a Linear weight packed for oneDNN, kept between calls
}  // namespace nn::detail

class VisRetNetImpl : public torch::nn::Module, public nn::WithBackend, public nn::CountsCost {
 public:
  // token_label adds `aux_head`; config.validate(Classifier or TokenLabel) is called first.
  explicit VisRetNetImpl(const Config& config, bool token_label = false);

  // images: (B, in_chans, H, W), floating point, on the model's device and dtype.
  // Returns logits (B, num_classes), or the pooled features (B, projection) when num_classes <= 0
  // (the authors' head is then an identity). With token labeling, the eval output of the authors:
  // head(pooled) + 0.5 * max over tokens of aux_head(tokens) (in train mode too; see forward_train),
  // both heads identities when num_classes <= 0.
  torch::Tensor forward(const torch::Tensor& images);

  // Token labeling in training: {head(pooled) (B, classes), aux_head(tokens) (B, H*W, classes)}.
  // (The authors' MixToken augmentation is left to the training loop.)
  std::pair<torch::Tensor, torch::Tensor> forward_train(const torch::Tensor& images);

  // Channels-last features after the conv stem: (B, H/4, W/4, C0).
  torch::Tensor forward_stem(const torch::Tensor& images);
  // Pooled features before `head`: (B, projection).
  torch::Tensor forward_features(const torch::Tensor& images);
  // proj, BatchNorm, swish and average pooling of the last stage's tokens (B, h, w, C).
  torch::Tensor pool(const torch::Tensor& tokens);
  // The classifier on pooled features (B, projection): logits (B, num_classes), or the features
  // themselves with pre_logits or without a head (num_classes <= 0). For a classifier
  // forward(x) == forward_head(forward_features(x)); a token-labeling model's forward adds
  // 0.5 * max over tokens of aux_head(tokens), which pooled features no longer hold.
  torch::Tensor forward_head(const torch::Tensor& features, bool pre_logits = false);

  // A new head for num_classes classes (fine-tuning on another label set), replacing `head` (and
  // `aux_head` with token labeling) as the authors initialise a Linear: weights normal with std
  // 0.02 (their trunc_normal_, truncated at +-2, i.e. at 100 std), bias 0, on the device and dtype
  // of the model. num_classes <= 0 removes the heads (identity: forward returns the pooled
  // features). The backbone's parameters are left as they are; config().num_classes follows.
  void reset_classifier(int64_t num_classes);

  const Config& config() const { return config_; }
  bool token_label() const { return token_label_; }
  // The model's and every module's in it (see rmt/nn/backend.h).
  void set_backend(nn::Backend backend) override;
  // The stem and the stages, then proj on every token of the last stage, head on the pooled
  // vector and aux_head (token labeling) on every token again (see rmt/models/summary.h).
  nn::Size2d count_cost(nn::CostCounter& counter, const std::string& name,
                        nn::Size2d in) const override;

  nn::PatchEmbed patch_embed{nullptr};
  torch::nn::ModuleList layers{nullptr};
  torch::nn::Linear proj{nullptr};
  torch::nn::BatchNorm2d norm{nullptr};
  torch::nn::Linear head{nullptr};      // null when num_classes <= 0 (identity)
  torch::nn::Linear aux_head{nullptr};  // token labeling only; null when num_classes <= 0 (identity)

 private:
  // Whether a forward on `images` runs a batch a few images at a time (CPU inference).
  bool runs_in_chunks(const torch::Tensor& images) const;
  torch::Tensor run_stages(const torch::Tensor& images);
  torch::Tensor apply_head(const torch::Tensor& pooled);
  torch::Tensor apply_aux_head(const torch::Tensor& tokens);
  // layer(x) through nn/token_linear.h with the packed weight kept in packed_[slot] (literal: the
  // module's own forward).
  torch::Tensor linear(torch::nn::Linear& layer, const torch::Tensor& x, size_t slot);
  std::array<std::shared_ptr<nn::detail::PackedLinear>, 3> packed_;  // proj, head, aux_head
  Config config_;
  bool token_label_;
};
TORCH_MODULE(VisRetNet);

}  // namespace rmt

#pragma once
// Any RMT model behind one handle: what the tools and most applications need.

#include <memory>
#include <string>
#include <vector>

#include "rmt/io/checkpoint.h"
#include "rmt/io/state_dict.h"
#include "rmt/models/classifier.h"
#include "rmt/models/config.h"
#include "rmt/models/dense_backbone.h"
#include "rmt/runtime/busy_cpus.h"

namespace rmt {

class Model {
 public:
  Model(const Config& config, ModelKind kind);
  // A preset by name (see preset_names()).
  static Model from_preset(const std::string& name);

  // Classifier and token-label models: one tensor of logits. Dense: the feature maps. At CPU
  // inference on several threads with fewer images than threads, one thread while other work keeps
  // the CPUs busy (rmt/runtime/busy_cpus.h; RMT_BUSY_CPUS=ignore: never).
  std::vector<torch::Tensor> forward(const torch::Tensor& images);

  ModelKind kind() const { return kind_; }
  const Config& config() const { return config_; }
  // The underlying torch module (VisRetNet or DenseBackbone).
  std::shared_ptr<torch::nn::Module> module() const { return module_; }
  VisRetNet classifier() const;          // throws unless kind is Classifier or TokenLabel
  DenseBackbone dense_backbone() const;  // throws unless kind is Dense

  void to(torch::Device device, torch::Dtype dtype);
  void eval() { module_->eval(); }
  void train(bool on = true) { module_->train(on); }
  // The model's and every module's in it (see rmt/nn/backend.h).
  void set_backend(nn::Backend backend);

  // Classifiers: a new head for num_classes (VisRetNetImpl::reset_classifier); config() follows.
  void reset_classifier(int64_t num_classes);
  // Dense: each output of forward(), in order (DenseBackboneImpl::feature_info); throws otherwise.
  std::vector<FeatureInfo> feature_info() const;

  // Reads and loads a checkpoint; strict unless told otherwise.
  LoadReport load(const std::string& path, const WeightsSelection& selection = {},
                  bool strict = true);

 private:
  Config config_;
  ModelKind kind_;
  std::shared_ptr<torch::nn::Module> module_;
  std::shared_ptr<runtime::BusyCpuGovernor> busy_cpus_ = std::make_shared<runtime::BusyCpuGovernor>();

  std::vector<torch::Tensor> forward_module(const torch::Tensor& images);
};

}  // namespace rmt

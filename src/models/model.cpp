#include "rmt/models/model.h"

#include <fmt/format.h>

#include "rmt/io/state_dict.h"

namespace rmt {

Model::Model(const Config& config, ModelKind kind) : config_(config), kind_(kind) {
  switch (kind) {
    case ModelKind::Classifier: module_ = VisRetNet(config, false).ptr(); break;
    case ModelKind::TokenLabel: module_ = VisRetNet(config, true).ptr(); break;
    case ModelKind::Dense: module_ = DenseBackbone(config).ptr(); break;
  }
}

Model Model::from_preset(const std::string& name) {
  auto p = preset(name);
  return Model(p.config, p.kind);
}

VisRetNet Model::classifier() const {
  TORCH_CHECK(kind_ != ModelKind::Dense,
              fmt::format("Model::classifier: this model is a {} backbone, not a classifier",
                          to_string(kind_)));
  return VisRetNet(std::static_pointer_cast<VisRetNetImpl>(module_));
}

DenseBackbone Model::dense_backbone() const {
  TORCH_CHECK(kind_ == ModelKind::Dense,
              fmt::format("Model::dense_backbone: this model is a {}, not a dense backbone",
                          to_string(kind_)));
  return DenseBackbone(std::static_pointer_cast<DenseBackboneImpl>(module_));
}

std::vector<torch::Tensor> Model::forward(const torch::Tensor& images) {
  if (kind_ == ModelKind::Dense) return dense_backbone()->forward(images);
  return {classifier()->forward(images)};
}

void Model::to(torch::Device device, torch::Dtype dtype) { move_to(*module_, device, dtype); }

void Model::set_backend(nn::Backend backend) {
  if (kind_ == ModelKind::Dense) {
    dense_backbone()->set_backend(backend);
  } else {
    classifier()->set_backend(backend);
  }
}

void Model::reset_classifier(int64_t num_classes) {
  classifier()->reset_classifier(num_classes);
  config_.num_classes = num_classes;
}

std::vector<FeatureInfo> Model::feature_info() const {
  return dense_backbone()->feature_info();
}

LoadReport Model::load(const std::string& path, const WeightsSelection& selection, bool strict) {
  return load_weights(*module_, path, selection, strict);
}

}  // namespace rmt

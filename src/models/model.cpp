#include "rmt/models/model.h"

#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>

#include <chrono>

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

std::vector<torch::Tensor> Model::forward_module(const torch::Tensor& images) {
  if (kind_ == ModelKind::Dense) return dense_backbone()->forward(images);
  return {classifier()->forward(images)};
}

std::vector<torch::Tensor> Model::forward(const torch::Tensor& images) {
  const int planned = at::get_num_threads();
  // A batch of at least as many images as threads runs its stages' chunks side by side, each
  // thread taking the next chunk when done: a descheduled thread holds up no other there, and
  // two threads beside a busy process get more of the CPUs than one (RMT-S batch 16: 11.4 img/s
  // on 2 threads, 8.3 on 1).
  const bool whole_images = images.dim() > 0 && images.size(0) >= planned;
  if (planned <= 1 || whole_images || !images.device().is_cpu() || at::GradMode::is_enabled() ||
      at::in_parallel_region() || !runtime::busy_cpu_feedback_enabled()) {
    return forward_module(images);
  }
  const auto waited_before = runtime::run_queue_wait_seconds();
  if (!waited_before) return forward_module(images);
  const int threads = busy_cpus_->threads_for_next(planned);
  const auto start = std::chrono::steady_clock::now();
  std::vector<torch::Tensor> out;
  {
    runtime::ScopedThreadCount scope(threads);
    out = forward_module(images);
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto waited_after = runtime::run_queue_wait_seconds();
  if (waited_after) busy_cpus_->record(threads, wall, *waited_after - *waited_before);
  return out;
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

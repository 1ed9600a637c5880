#include "rmt/models/classifier.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "rmt/models/check_images.h"
#include "models/stage_builder.h"
#include "nn/batch_chunks.h"
#include "nn/token_linear.h"
#include "runtime/tensor_text.h"

namespace rmt {

VisRetNetImpl::VisRetNetImpl(const Config& config, bool token_label)
    : config_(config), token_label_(token_label) {
  const auto kind = token_label_ ? ModelKind::TokenLabel : ModelKind::Classifier;
  config_.validate(kind);
  patch_embed = register_module("patch_embed",
                                nn::PatchEmbed(config_.in_chans, config_.embed_dims.front()));
  layers = register_module("layers", detail::build_stages(config_, kind));
  const auto features = config_.embed_dims.back();  // the authors' num_features = embed_dims[-1]
  proj = register_module("proj", torch::nn::Linear(features, config_.projection));
  norm = register_module("norm", torch::nn::BatchNorm2d(config_.projection));
  if (config_.num_classes > 0) {
    head = register_module("head", torch::nn::Linear(config_.projection, config_.num_classes));
    if (token_label_) {
      aux_head = register_module("aux_head", torch::nn::Linear(features, config_.num_classes));
    }
  }
  for (auto& p : packed_) p = std::make_shared<nn::detail::PackedLinear>();
}

torch::Tensor VisRetNetImpl::linear(torch::nn::Linear& layer, const torch::Tensor& x,
                                    size_t slot) {
  if (policy_.literal()) return layer->forward(x);
  return nn::detail::linear_tokens(*layer, x, packed_[slot].get());
}

bool VisRetNetImpl::runs_in_chunks(const torch::Tensor& images) const {
  return !policy_.literal() && !is_training() && !at::GradMode::is_enabled() &&
         images.device().is_cpu();
}

// At inference on the CPU a few images at a time, as the stages (nn/batch_chunks.h): a batch's
// stem activations (RMT-S's first convolution's: 1.6 MB an image at 224x224) would go through
// memory, one image's through the cache. Every op of the stem is per image (its BatchNorms are
// folded in eval mode), so the numbers are the whole batch's.
torch::Tensor VisRetNetImpl::forward_stem(const torch::Tensor& images) {
  check_images(images, config_.in_chans, *this);
  const auto chunks =
      runs_in_chunks(images) ? nn::detail::plan_batch_chunks(images) : nn::detail::BatchChunks{};
  if (chunks.count() <= 1) return patch_embed->forward(images);
  std::vector<torch::Tensor> parts(chunks.count());
  nn::detail::run_batch_chunks(chunks, [&](int64_t i) {
    parts[i] = patch_embed->forward(images.narrow(0, chunks.starts[i], chunks.size(i)));
  });
  return at::cat(parts);
}

// Where the stem and the first stages chunk a batch alike (RMT at 224x224: one image a chunk up to
// the last stage, whose small images go several a chunk), each chunk runs through all of them
// before the next starts: a stage's output is still in the cache when the next stage reads it, no
// concatenation between them, and with several threads one parallel region for all of them. The
// stages after that run stage by stage on the concatenated batch. Every op is per image, so the
// numbers are the same.
torch::Tensor VisRetNetImpl::run_stages(const torch::Tensor& images) {
  check_images(images, config_.in_chans, *this);
  const auto chunks =
      runs_in_chunks(images) ? nn::detail::plan_batch_chunks(images) : nn::detail::BatchChunks{};
  const auto stage = [&](size_t i) { return layers[i]->as<nn::BasicLayerImpl>(); };
  torch::Tensor x;
  size_t next = 0;  // the first stage that runs stage by stage
  if (chunks.count() <= 1) {
    x = patch_embed->forward(images);
  } else {
    const int64_t batch = images.size(0), threads = at::get_num_threads();
    std::vector<torch::Tensor> parts(chunks.count());
    std::vector<size_t> reached(chunks.count());
    nn::detail::run_batch_chunks(chunks, [&](int64_t c) {
      auto part = patch_embed->forward(images.narrow(0, chunks.starts[c], chunks.size(c)));
      size_t i = 0;
      for (; i < layers->size(); ++i) {
        const auto plan =
            nn::detail::plan_batch_chunks(part, batch, part.size(1) * part.size(2), threads);
        if (!(plan == chunks)) break;
        part = stage(i)->forward_whole(part);
      }
      parts[c] = std::move(part);
      reached[c] = i;  // the same for every chunk: their images have the same shapes
    });
    x = at::cat(parts);
    next = reached.front();
  }
  for (size_t i = next; i < layers->size(); ++i) x = stage(i)->forward(x);
  return x;
}

torch::Tensor VisRetNetImpl::pool(const torch::Tensor& tokens) {
  auto x = linear(proj, tokens, 0);                            // (b h w p)
  x = norm->forward(x.permute({0, 3, 1, 2})).flatten(2, 3);    // (b p hw)
  x = x * at::sigmoid(x);                                      // swish
  return x.mean(-1);                                           // average pool
}

torch::Tensor VisRetNetImpl::forward_features(const torch::Tensor& images) {
  return pool(run_stages(images));
}

torch::Tensor VisRetNetImpl::apply_head(const torch::Tensor& pooled) {
  return head ? linear(head, pooled, 1) : pooled;
}

torch::Tensor VisRetNetImpl::apply_aux_head(const torch::Tensor& tokens) {
  auto flat = tokens.flatten(1, 2);  // (b hw c)
  return aux_head ? linear(aux_head, flat, 2) : flat;
}

torch::Tensor VisRetNetImpl::forward_head(const torch::Tensor& features, bool pre_logits) {
  TORCH_CHECK(features.dim() == 2 && features.size(1) == config_.projection,
              fmt::format("forward_head: expected pooled features (B, {}), found shape {}",
                          config_.projection, text::shape(features.sizes())));
  return pre_logits ? features : apply_head(features);
}

void VisRetNetImpl::reset_classifier(int64_t num_classes) {
  const auto reference = proj->weight;  // the model's device and dtype
  const auto make = [&](const std::string& name, int64_t in_features) {
    torch::nn::Linear linear(in_features, num_classes);
    {
      torch::NoGradGuard no_grad;
      linear->weight.normal_(0.0, 0.02);
      linear->bias.zero_();
    }
    linear->to(reference.device(), reference.scalar_type());
    linear->train(is_training());
    if (named_children().contains(name)) return replace_module(name, linear);
    return register_module(name, linear);
  };
  const auto drop = [&](const std::string& name) {
    if (named_children().contains(name)) unregister_module(name);
  };
  if (num_classes > 0) {
    head = make("head", config_.projection);
    if (token_label_) aux_head = make("aux_head", config_.embed_dims.back());
  } else {
    drop("head");
    drop("aux_head");
    head = nullptr;
    aux_head = nullptr;
  }
  config_.num_classes = num_classes;
}

torch::Tensor VisRetNetImpl::forward(const torch::Tensor& images) {
  auto tokens = run_stages(images);
  auto logits = apply_head(pool(tokens));
  if (!token_label_) return logits;
  // Without heads (num_classes <= 0) both are identities and the sum broadcasts as PyTorch's does.
  return logits + 0.5 * std::get<0>(apply_aux_head(tokens).max(1));
}

std::pair<torch::Tensor, torch::Tensor> VisRetNetImpl::forward_train(const torch::Tensor& images) {
  TORCH_CHECK(token_label_, "forward_train: this model has no token-labeling head (aux_head)");
  auto tokens = run_stages(images);
  return {apply_head(pool(tokens)), apply_aux_head(tokens)};
}

nn::Size2d VisRetNetImpl::count_cost(nn::CostCounter& counter, const std::string& name,
                                     nn::Size2d in) const {
  const auto join = nn::CostCounter::join;
  auto tokens = counter.count(join(name, "patch_embed"), *patch_embed, in);
  tokens = counter.count(join(name, "layers"), *layers, tokens);
  const int64_t b = counter.batch(), n = b * tokens.first * tokens.second;
  counter.linear(join(name, "proj"), *proj, n, tokens);
  if (head) counter.linear(join(name, "head"), *head, b, {1, 1});
  if (aux_head) counter.linear(join(name, "aux_head"), *aux_head, n, tokens);
  return {1, 1};
}

void VisRetNetImpl::set_backend(nn::Backend backend) {
  WithBackend::set_backend(backend);
  patch_embed->set_backend(backend);
  for (const auto& layer : *layers) layer->as<nn::BasicLayerImpl>()->set_backend(backend);
}

}  // namespace rmt

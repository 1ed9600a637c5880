#include "rmt/nn/basic_layer.h"

#include <stdexcept>
#include <string>

#include <ATen/Context.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>
#include <torch/autograd.h>

#include "nn/batch_chunks.h"

namespace rmt::nn {

namespace {

// The default generators a block draws from: the CPU's, and the device's where the input lives.
std::vector<at::Generator> generators_for(const torch::Tensor& x) {
  std::vector<at::Generator> generators{at::globalContext().defaultGenerator(at::kCPU)};
  if (!x.device().is_cpu()) generators.push_back(at::globalContext().defaultGenerator(x.device()));
  return generators;
}

std::vector<torch::Tensor> get_states(std::vector<at::Generator>& generators) {
  std::vector<torch::Tensor> states;
  for (auto& g : generators) {
    std::lock_guard<std::mutex> lock(g.mutex());
    states.push_back(g.get_state());
  }
  return states;
}

void set_states(std::vector<at::Generator>& generators, const std::vector<torch::Tensor>& states) {
  for (size_t i = 0; i < generators.size(); ++i) {
    std::lock_guard<std::mutex> lock(generators[i].mutex());
    generators[i].set_state(states[i]);
  }
}

// What backward needs besides the saved tensors: the block, and the random state its forward saw.
struct Recompute : torch::CustomClassHolder {
  std::shared_ptr<RetBlockImpl> block;
  std::vector<at::Generator> generators;
  std::vector<torch::Tensor> states;
};

// A block whose activations are not kept: forward runs it without recording, backward runs it
// again with recording from the saved input and backpropagates through that (as
// torch.utils.checkpoint). The parameters are inputs, so that their gradients flow through the graph
// (torch::autograd::grad sees them too).
class CheckpointedBlock : public torch::autograd::Function<CheckpointedBlock> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& sin, const torch::Tensor& cos,
                               const torch::Tensor& decay, at::TensorList parameters,
                               std::shared_ptr<RetBlockImpl> block) {
    auto state = c10::make_intrusive<Recompute>();
    state->block = block;
    state->generators = generators_for(x);
    state->states = get_states(state->generators);
    ctx->saved_data["recompute"] = c10::IValue::make_capsule(state);
    ctx->saved_data["parameters"] = static_cast<int64_t>(parameters.size());
    ctx->save_for_backward({x, sin, cos, decay});
    return block->forward(x, sin, cos, decay);  // autograd does not record inside forward
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto state = c10::static_intrusive_pointer_cast<Recompute>(ctx->saved_data["recompute"].toCapsule());
    const auto saved = ctx->get_saved_variables();
    const auto parameter_count = static_cast<size_t>(ctx->saved_data["parameters"].toInt());
    std::vector<torch::Tensor> inputs;  // x, sin, cos, decay as leaves of the recomputed graph
    for (const auto& t : saved) inputs.push_back(t.detach().requires_grad_(t.requires_grad()));
    const auto parameters = state->block->parameters();
    TORCH_CHECK(parameters.size() == parameter_count,
                "checkpointed block: its parameters changed between forward and backward");

    const auto now = get_states(state->generators);
    set_states(state->generators, state->states);
    torch::Tensor output;
    try {
      torch::AutoGradMode record(true);
      output = state->block->forward(inputs[0], inputs[1], inputs[2], inputs[3]);
    } catch (...) {
      set_states(state->generators, now);
      throw;
    }
    set_states(state->generators, now);

    // Gradients for whatever requires them, in the order of forward's inputs.
    std::vector<torch::Tensor> wanted;
    std::vector<size_t> slot;
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (inputs[i].requires_grad()) wanted.push_back(inputs[i]), slot.push_back(i);
    }
    for (size_t i = 0; i < parameters.size(); ++i) {
      if (parameters[i].requires_grad()) wanted.push_back(parameters[i]), slot.push_back(4 + i);
    }
    // x, sin, cos, decay, the parameters, and the block (not a tensor: no gradient).
    torch::autograd::variable_list grads(4 + parameters.size() + 1);
    if (wanted.empty() || !output.requires_grad()) return grads;
    const auto computed = torch::autograd::grad({output}, wanted, {grad_outputs[0]},
                                                /*retain_graph=*/false, /*create_graph=*/false,
                                                /*allow_unused=*/true);
    for (size_t i = 0; i < computed.size(); ++i) grads[slot[i]] = computed[i];
    return grads;
  }
};

}  // namespace

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
  return run_in_chunks(input, /*keep_features=*/true);
}

torch::Tensor BasicLayerImpl::forward(const torch::Tensor& input) {
  return run_in_chunks(input, /*keep_features=*/false).downsampled;
}

torch::Tensor BasicLayerImpl::forward_whole(const torch::Tensor& input) {
  return run(input).downsampled;
}

// At inference on the CPU, a few images at a time (batch_chunks.h), the chunks' outputs then
// concatenated; every op is per image there (the BatchNorms are folded, in eval mode), so the
// numbers are the same as the whole batch's.
StageOutput BasicLayerImpl::run_in_chunks(const torch::Tensor& input, bool keep_features) {
  const bool chunked = !policy_.literal() && !is_training() && !at::GradMode::is_enabled() &&
                       input.device().is_cpu() && input.dim() == 4;
  const auto chunks = chunked ? detail::plan_batch_chunks(input, input.size(1) * input.size(2))
                              : detail::BatchChunks{};
  if (chunks.count() <= 1) return run(input);
  std::vector<torch::Tensor> downsampled(chunks.count()), features(chunks.count());
  detail::run_batch_chunks(chunks, [&](int64_t i) {
    auto part = run(input.narrow(0, chunks.starts[i], chunks.size(i)));
    downsampled[i] = std::move(part.downsampled);
    if (keep_features && downsample) features[i] = std::move(part.features);
  });
  StageOutput output;
  output.downsampled = at::cat(downsampled);
  output.features = keep_features && downsample ? at::cat(features) : output.downsampled;
  return output;
}

StageOutput BasicLayerImpl::run(const torch::Tensor& input) {
  const auto height = input.size(1), width = input.size(2);
  torch::Tensor x = input;
  if (!blocks->is_empty()) {
    auto [sin, cos] = Relpos->sin_cos(height, width);
    const auto& decay = Relpos->decay;
    const bool checkpoint = options.checkpoint() && at::GradMode::is_enabled();
    for (size_t i = 0; i < blocks->size(); ++i) {
      auto block = blocks->ptr<RetBlockImpl>(i);
      const double rate = block->options.drop_path();
      if (block->is_training() && !(rate >= 0 && rate <= 1)) {
        throw std::invalid_argument(fmt::format(
            "RMT: block {} of this stage has the stochastic depth rate {} (from drop_path_rate): "
            "training needs drop_path_rate in [0, 1]",
            i, rate));
      }
      if (checkpoint) {
        const auto parameters = block->parameters();
        x = CheckpointedBlock::apply(x, sin, cos, decay, at::TensorList(parameters), block);
      } else {
        x = block->forward(x, sin, cos, decay);
      }
    }
  }
  if (downsample) return {x, downsample->forward(x)};
  return {x, x};
}

void BasicLayerImpl::set_backend(Backend backend) {
  WithBackend::set_backend(backend);
  Relpos->set_backend(backend);
  for (size_t i = 0; i < blocks->size(); ++i) blocks->ptr<RetBlockImpl>(i)->set_backend(backend);
  if (downsample) downsample->set_backend(backend);
}

}  // namespace rmt::nn

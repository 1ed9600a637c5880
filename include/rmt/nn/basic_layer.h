#pragma once
// One stage (BasicLayer): relative positions, the RetBlocks, then optional downsampling.

#include <torch/nn/modules/container/modulelist.h>

#include "rmt/nn/block.h"
#include "rmt/nn/patch_merging.h"
#include "rmt/nn/relpos.h"

namespace rmt::nn {

struct BasicLayerOptions {
  BasicLayerOptions(int64_t embed_dim, int64_t depth, int64_t num_heads)
      : embed_dim_(embed_dim), depth_(depth), num_heads_(num_heads) {}
  TORCH_ARG(int64_t, embed_dim);
  TORCH_ARG(int64_t, depth);
  TORCH_ARG(int64_t, num_heads);
  TORCH_ARG(double, init_value) = 2.0;
  TORCH_ARG(double, heads_range) = 4.0;
  TORCH_ARG(int64_t, ffn_dim) = 96;
  TORCH_ARG(std::vector<double>, drop_path);  // one per block; empty means 0
  TORCH_ARG(bool, decomposed) = false;
  TORCH_ARG(int64_t, out_dim) = 0;            // 0: no downsampling after this stage
  TORCH_ARG(bool, layerscale) = false;
  TORCH_ARG(double, layer_init_values) = 1e-5;
  // Activation checkpointing: while autograd records, each block keeps only its input and runs its
  // forward again in backward (with the random state of the first run, so that stochastic depth
  // drops the same samples): the same gradients for less memory, at the cost of a second forward.
  TORCH_ARG(bool, checkpoint) = false;
};

struct StageOutput {
  torch::Tensor features;     // after the blocks, before downsampling: (B, H, W, C)
  torch::Tensor downsampled;  // after downsampling, or `features` when the stage has none
};

class BasicLayerImpl : public torch::nn::Module, public WithBackend {
 public:
  explicit BasicLayerImpl(const BasicLayerOptions& options);
  // In training, throws std::invalid_argument when a block's stochastic depth rate is outside [0, 1]
  // (a drop_path_rate the authors' training cannot use either; evaluation ignores the rates).
  // At inference on the CPU, a batch runs a few images at a time, as many as keep an activation in
  // the cache (RMT_CPU_BATCH_CHUNK: `off` for the whole batch, or a count): the same numbers.
  StageOutput forward_stage(const torch::Tensor& x);
  // The stage's output as the classifier consumes it (after downsampling).
  torch::Tensor forward(const torch::Tensor& x);
  // The same, the whole of x at once (no chunks): for a caller that already runs a batch a few
  // images at a time through several stages.
  torch::Tensor forward_whole(const torch::Tensor& x);
  // This stage's and every module's in it.
  void set_backend(Backend backend) override;

  BasicLayerOptions options;
  RelPos2d Relpos{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  PatchMerging downsample{nullptr};  // null in the last stage

 private:
  StageOutput run_in_chunks(const torch::Tensor& x, bool keep_features);
  StageOutput run(const torch::Tensor& x);  // the whole of x at once
};
TORCH_MODULE(BasicLayer);

}  // namespace rmt::nn

#pragma once
// What a module costs: the multiply-accumulates (MACs) of its convs, linear layers and attention
// matmuls at an input size, counted layer by layer. rmt::summarize (rmt/models/summary.h) gives the
// totals of a model and states the convention.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace torch::nn {
class Module;
class LinearImpl;
}  // namespace torch::nn

namespace rmt {

enum class CostKind { Conv, DepthwiseConv, Linear, Attention };
std::string to_string(CostKind kind);  // "conv", "depthwise conv", "linear", "attention"

// One counted operation: a conv or linear layer (by its module path, e.g.
// "layers.0.blocks.1.ffn.fc1") or the attention matmuls of a MaSA ("...retention.attention").
struct LayerCost {
  std::string name;
  CostKind kind = CostKind::Linear;
  int64_t macs = 0;
  int64_t parameters = 0;  // the layer's own weights and bias (0 for attention)
  int64_t out_height = 0, out_width = 0;  // spatial size of the layer's output
};

}  // namespace rmt

namespace rmt::nn {

// A spatial size (height, width).
using Size2d = std::pair<int64_t, int64_t>;

class CostCounter;

// A module that counts its own cost, where walking its children in registration order would not:
// costs that are no child (MaSA's attention matmuls), children that see other sizes or run in
// another order (a classifier's pooled head). Derived from beside torch::nn::Module.
class CountsCost {
 public:
  virtual ~CountsCost() = default;
  // Adds this module's layers, named under `name`, for an input of spatial size `in`; returns the
  // spatial size of its output.
  virtual Size2d count_cost(CostCounter& counter, const std::string& name, Size2d in) const = 0;
};

// Collects the LayerCosts of a (batch, C, H, W) forward pass, in execution order.
class CostCounter {
 public:
  explicit CostCounter(int64_t batch) : batch_(batch) {}
  int64_t batch() const { return batch_; }
  const std::vector<LayerCost>& layers() const { return layers_; }

  // Any module: its count_cost when it is a CountsCost; a Conv2d or Linear layer (every token)
  // from its options; otherwise its children in registration order, which is the order they run
  // in. A stride changes the spatial size for the layers after it.
  Size2d count(const std::string& name, const torch::nn::Module& module, Size2d in);
  Size2d count_children(const std::string& name, const torch::nn::Module& module, Size2d in);
  // A linear layer applied to `tokens` vectors; `out` is the size recorded for its output.
  void linear(const std::string& name, const torch::nn::LinearImpl& linear, int64_t tokens,
              Size2d out);
  void add(LayerCost cost) { layers_.push_back(std::move(cost)); }

  // "prefix.name", or "name" at the top.
  static std::string join(const std::string& prefix, const std::string& name) {
    return prefix.empty() ? name : prefix + "." + name;
  }

 private:
  int64_t batch_;
  std::vector<LayerCost> layers_;
};

}  // namespace rmt::nn

#include "rmt/nn/cost.h"

#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include "nn/conv_padding.h"

namespace rmt {

std::string to_string(CostKind kind) {
  switch (kind) {
    case CostKind::Conv: return "conv";
    case CostKind::DepthwiseConv: return "depthwise conv";
    case CostKind::Linear: return "linear";
    case CostKind::Attention: return "attention";
  }
  return "?";
}

}  // namespace rmt

namespace rmt::nn {
namespace {

int64_t own_parameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters(/*recurse=*/false)) n += p.numel();
  return n;
}

}  // namespace

Size2d CostCounter::count(const std::string& name, const torch::nn::Module& module, Size2d in) {
  if (const auto* counts = dynamic_cast<const CountsCost*>(&module)) {
    return counts->count_cost(*this, name, in);
  }
  // LibTorch's layers, known by their options.
  const auto [h, w] = in;
  if (const auto* conv = dynamic_cast<const torch::nn::Conv2dImpl*>(&module)) {
    const auto& o = conv->options;
    const auto k = *o.kernel_size(), s = *o.stride(), d = *o.dilation();
    int64_t oh = h, ow = w;
    if (const auto* pad = detail::padding_numbers(o)) {
      oh = (h + 2 * (**pad)[0] - d[0] * (k[0] - 1) - 1) / s[0] + 1;
      ow = (w + 2 * (**pad)[1] - d[1] * (k[1] - 1) - 1) / s[1] + 1;
    } else if (detail::padding_is_valid(o)) {
      oh = (h - d[0] * (k[0] - 1) - 1) / s[0] + 1;
      ow = (w - d[1] * (k[1] - 1) - 1) / s[1] + 1;
    }  // kSame keeps the size (stride 1 only)
    const bool depthwise = o.groups() > 1 && o.groups() == o.in_channels();
    const int64_t macs =
        batch_ * oh * ow * o.out_channels() * (o.in_channels() / o.groups()) * k[0] * k[1];
    add({name, depthwise ? CostKind::DepthwiseConv : CostKind::Conv, macs, own_parameters(module),
         oh, ow});
    return {oh, ow};
  }
  if (const auto* layer = dynamic_cast<const torch::nn::LinearImpl*>(&module)) {
    linear(name, *layer, batch_ * h * w, in);
    return in;
  }
  return count_children(name, module, in);
}

Size2d CostCounter::count_children(const std::string& name, const torch::nn::Module& module,
                                   Size2d in) {
  for (const auto& child : module.named_children()) {
    in = count(join(name, child.key()), *child.value(), in);
  }
  return in;
}

void CostCounter::linear(const std::string& name, const torch::nn::LinearImpl& linear,
                         int64_t tokens, Size2d out) {
  const auto& o = linear.options;
  add({name, CostKind::Linear, tokens * o.in_features() * o.out_features(),
       own_parameters(linear), out.first, out.second});
}

}  // namespace rmt::nn

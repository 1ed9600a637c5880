#include "rmt/summary.h"

#include <iterator>
#include <map>
#include <stdexcept>

#include <fmt/format.h>

#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include "rmt/classifier.h"
#include "rmt/model.h"
#include "rmt/nn/masa.h"
#include "grouping.h"
#include "nn/conv_padding.h"

namespace rmt {
namespace {

int64_t own_parameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters(/*recurse=*/false)) n += p.numel();
  return n;
}

struct Counter {
  ModelSummary& summary;

  void add(const std::string& name, CostKind kind, int64_t macs, int64_t params, int64_t h,
           int64_t w) {
    summary.layers.push_back({name, kind, macs, params, h, w});
    switch (kind) {
      case CostKind::Conv: summary.conv_macs += macs; break;
      case CostKind::DepthwiseConv: summary.depthwise_conv_macs += macs; break;
      case CostKind::Linear: summary.linear_macs += macs; break;
      case CostKind::Attention: summary.attention_macs += macs; break;
    }
  }

  static std::string join(const std::string& prefix, const std::string& name) {
    return prefix.empty() ? name : prefix + "." + name;
  }

  // Walks `module` for an input of spatial size (h, w); returns the output's spatial size.
  std::pair<int64_t, int64_t> walk(const std::string& name, const torch::nn::Module& module,
                                   int64_t h, int64_t w) {
    const int64_t b = summary.batch;
    if (const auto* conv = dynamic_cast<const torch::nn::Conv2dImpl*>(&module)) {
      const auto& o = conv->options;
      const auto k = *o.kernel_size(), s = *o.stride(), d = *o.dilation();
      int64_t oh = h, ow = w;
      if (const auto* pad = nn::detail::padding_numbers(o)) {
        oh = (h + 2 * (**pad)[0] - d[0] * (k[0] - 1) - 1) / s[0] + 1;
        ow = (w + 2 * (**pad)[1] - d[1] * (k[1] - 1) - 1) / s[1] + 1;
      } else if (nn::detail::padding_is_valid(o)) {
        oh = (h - d[0] * (k[0] - 1) - 1) / s[0] + 1;
        ow = (w - d[1] * (k[1] - 1) - 1) / s[1] + 1;
      }  // kSame keeps the size (stride 1 only)
      const bool depthwise = o.groups() > 1 && o.groups() == o.in_channels();
      const int64_t macs = b * oh * ow * o.out_channels() * (o.in_channels() / o.groups()) * k[0] * k[1];
      add(name, depthwise ? CostKind::DepthwiseConv : CostKind::Conv, macs,
          own_parameters(module), oh, ow);
      return {oh, ow};
    }
    if (const auto* linear = dynamic_cast<const torch::nn::LinearImpl*>(&module)) {
      linear_layer(name, *linear, b * h * w, h, w);
      return {h, w};
    }
    if (const auto* net = dynamic_cast<const VisRetNetImpl*>(&module)) {
      auto [th, tw] = walk(join(name, "patch_embed"), *net->patch_embed, h, w);
      std::tie(th, tw) = walk(join(name, "layers"), *net->layers, th, tw);
      // proj runs on every token of the last stage, head on the pooled vector, aux_head (token
      // labeling) on every token again.
      linear_layer(join(name, "proj"), *net->proj, b * th * tw, th, tw);
      if (net->head) linear_layer(join(name, "head"), *net->head, b, 1, 1);
      if (net->aux_head) linear_layer(join(name, "aux_head"), *net->aux_head, b * th * tw, th, tw);
      return {1, 1};
    }
    if (const auto* masa = dynamic_cast<const nn::MaSAImpl*>(&module)) {
      walk_children(name, module, h, w);
      const int64_t c = masa->options.embed_dim();  // heads x head_dim, for q, k and v alike
      const int64_t per_matmul =
          masa->options.decomposed() ? b * (h * w * w + w * h * h) * c : b * (h * w) * (h * w) * c;
      add(join(name, "attention"), CostKind::Attention, 2 * per_matmul, 0, h, w);
      return {h, w};
    }
    return walk_children(name, module, h, w);
  }

  std::pair<int64_t, int64_t> walk_children(const std::string& name,
                                            const torch::nn::Module& module, int64_t h,
                                            int64_t w) {
    for (const auto& child : module.named_children()) {
      std::tie(h, w) = walk(join(name, child.key()), *child.value(), h, w);
    }
    return {h, w};
  }

  void linear_layer(const std::string& name, const torch::nn::LinearImpl& linear, int64_t tokens,
                    int64_t h, int64_t w) {
    const auto& o = linear.options;
    add(name, CostKind::Linear, tokens * o.in_features() * o.out_features(),
        own_parameters(linear), h, w);
  }
};

std::string with_commas(int64_t v) { return fmt::format(detail::grouping(), "{:L}", v); }

}  // namespace

std::string to_string(CostKind kind) {
  switch (kind) {
    case CostKind::Conv: return "conv";
    case CostKind::DepthwiseConv: return "depthwise conv";
    case CostKind::Linear: return "linear";
    case CostKind::Attention: return "attention";
  }
  return "?";
}

ModelSummary summarize(const torch::nn::Module& module, int64_t height, int64_t width,
                       int64_t batch) {
  if (height < 1 || width < 1 || batch < 1) {
    throw std::invalid_argument(fmt::format(
        "summarize: expected a positive batch, height and width, found {}x{}x{}", batch, height,
        width));
  }
  ModelSummary summary;
  summary.batch = batch;
  summary.height = height;
  summary.width = width;
  for (const auto& p : module.parameters()) summary.parameters += p.numel();
  Counter{summary}.walk("", module, height, width);
  return summary;
}

ModelSummary summarize(const Model& model, int64_t height, int64_t width, int64_t batch) {
  return summarize(*model.module(), height, width, batch);
}

std::string format_summary(const ModelSummary& s, const std::string& title, bool per_layer) {
  fmt::memory_buffer out;
  const auto g = [](int64_t macs) { return fmt::format("{:.3f}", macs / 1e9); };
  fmt::format_to(std::back_inserter(out), "{} at input {}x3x{}x{}\n",
                 title.empty() ? std::string("model") : title, s.batch, s.height, s.width);
  fmt::format_to(std::back_inserter(out), "  parameters        {} ({:.2f} M)\n",
                 with_commas(s.parameters), s.parameters / 1e6);
  fmt::format_to(std::back_inserter(out),
                 "  GMACs             {:.2f} = {} dense convs + {} depthwise convs + {} linear + {} "
                 "attention\n",
                 s.total_macs() / 1e9, g(s.conv_macs), g(s.depthwise_conv_macs), g(s.linear_macs),
                 g(s.attention_macs));
  fmt::format_to(std::back_inserter(out), "  MACs              {}\n", with_commas(s.total_macs()));

  // By top-level module: "layers.2.blocks..." -> "layers.2".
  std::vector<std::string> order;
  std::map<std::string, std::pair<int64_t, int64_t>> groups;  // params, MACs
  for (const auto& l : s.layers) {
    auto dot = l.name.find('.');
    if (l.name.compare(0, 7, "layers.") == 0) dot = l.name.find('.', 7);
    const std::string key = dot == std::string::npos ? l.name : l.name.substr(0, dot);
    if (!groups.count(key)) order.push_back(key);
    groups[key].first += l.parameters;
    groups[key].second += l.macs;
  }
  constexpr const char* kModuleRow = "  {:<22} {:>14} {:>10}\n";
  fmt::format_to(std::back_inserter(out), "\n");
  fmt::format_to(std::back_inserter(out), kModuleRow, "module", "parameters", "GMACs");
  for (const auto& key : order) {
    fmt::format_to(std::back_inserter(out), kModuleRow, key, with_commas(groups[key].first),
                   g(groups[key].second));
  }
  fmt::format_to(std::back_inserter(out),
                 "  (parameters of the counted layers; norms and relative positions hold the "
                 "rest)\n");
  if (per_layer) {
    constexpr const char* kLayerRow = "  {:<44} {:<15} {:>9} {:>12} {:>14}\n";
    fmt::format_to(std::back_inserter(out), "\n");
    fmt::format_to(std::back_inserter(out), kLayerRow, "layer", "kind", "output", "parameters",
                   "MACs");
    for (const auto& l : s.layers) {
      fmt::format_to(std::back_inserter(out), kLayerRow, l.name, to_string(l.kind),
                     fmt::format("{}x{}", l.out_height, l.out_width), with_commas(l.parameters),
                     with_commas(l.macs));
    }
  }
  return fmt::to_string(out);
}

}  // namespace rmt

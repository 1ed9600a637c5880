#include "rmt/models/summary.h"

#include <iterator>
#include <map>
#include <stdexcept>

#include <fmt/format.h>

#include <torch/nn/module.h>

#include "models/grouping.h"
#include "rmt/models/model.h"

namespace rmt {
namespace {

std::string with_commas(int64_t v) { return fmt::format(detail::grouping(), "{:L}", v); }

}  // namespace

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
  nn::CostCounter counter(batch);
  counter.count("", module, {height, width});
  summary.layers = counter.layers();
  for (const auto& layer : summary.layers) {
    switch (layer.kind) {
      case CostKind::Conv: summary.conv_macs += layer.macs; break;
      case CostKind::DepthwiseConv: summary.depthwise_conv_macs += layer.macs; break;
      case CostKind::Linear: summary.linear_macs += layer.macs; break;
      case CostKind::Attention: summary.attention_macs += layer.macs; break;
    }
  }
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

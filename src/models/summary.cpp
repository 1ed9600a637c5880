#include "rmt/models/summary.h"

#include <cstdio>
#include <map>
#include <sstream>
#include <stdexcept>

#include <torch/nn/module.h>

#include "rmt/models/model.h"

namespace rmt {
namespace {

std::string with_commas(int64_t v) {
  std::string digits = std::to_string(v < 0 ? -v : v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return v < 0 ? "-" + out : out;
}

std::string fixed(double v, int decimals) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f", decimals, v);
  return buffer;
}

}  // namespace

ModelSummary summarize(const torch::nn::Module& module, int64_t height, int64_t width,
                       int64_t batch) {
  if (height < 1 || width < 1 || batch < 1) {
    throw std::invalid_argument("summarize: expected a positive batch, height and width, found " +
                                std::to_string(batch) + "x" + std::to_string(height) + "x" +
                                std::to_string(width));
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
  std::ostringstream out;
  const auto g = [](int64_t macs) { return fixed(macs / 1e9, 3); };
  out << (title.empty() ? std::string("model") : title) << " at input " << s.batch << "x3x"
      << s.height << "x" << s.width << "\n";
  out << "  parameters        " << with_commas(s.parameters) << " ("
      << fixed(s.parameters / 1e6, 2) << " M)\n";
  out << "  GMACs             " << fixed(s.total_macs() / 1e9, 2) << " = " << g(s.conv_macs)
      << " dense convs + " << g(s.depthwise_conv_macs) << " depthwise convs + "
      << g(s.linear_macs) << " linear + " << g(s.attention_macs) << " attention\n";
  out << "  MACs              " << with_commas(s.total_macs()) << "\n";

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
  char line[256];
  std::snprintf(line, sizeof line, "\n  %-22s %14s %10s\n", "module", "parameters", "GMACs");
  out << line;
  for (const auto& key : order) {
    std::snprintf(line, sizeof line, "  %-22s %14s %10s\n", key.c_str(),
                  with_commas(groups[key].first).c_str(), g(groups[key].second).c_str());
    out << line;
  }
  out << "  (parameters of the counted layers; norms and relative positions hold the rest)\n";
  if (per_layer) {
    std::snprintf(line, sizeof line, "\n  %-44s %-15s %9s %12s %14s\n", "layer", "kind", "output",
                  "parameters", "MACs");
    out << line;
    for (const auto& l : s.layers) {
      const std::string size = std::to_string(l.out_height) + "x" + std::to_string(l.out_width);
      std::snprintf(line, sizeof line, "  %-44s %-15s %9s %12s %14s\n", l.name.c_str(),
                    to_string(l.kind).c_str(), size.c_str(), with_commas(l.parameters).c_str(),
                    with_commas(l.macs).c_str());
      out << line;
    }
  }
  return out.str();
}

}  // namespace rmt

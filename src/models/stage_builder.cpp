#include "models/stage_builder.h"

#include <numeric>

#include "rmt/nn/basic_layer.h"

namespace rmt::detail {

torch::nn::ModuleList build_stages(const Config& config, ModelKind kind) {
  const auto stages = config.num_stages();
  const int64_t total_depth = std::accumulate(config.depths.begin(), config.depths.end(), int64_t{0});
  // The authors take the rates from a float32 linspace; keep that for identical training behaviour.
  auto rates_tensor = at::linspace(0, config.drop_path_rate, std::max<int64_t>(total_depth, 1), at::kFloat);
  std::vector<double> rates(total_depth);
  for (int64_t i = 0; i < total_depth; ++i) rates[i] = rates_tensor[i].item<float>();

  torch::nn::ModuleList layers;
  int64_t first = 0;
  for (int64_t i = 0; i < stages; ++i) {
    const auto depth = config.depths[i];
    const auto dim = config.embed_dims[i];
    // Python's int(): truncation toward zero.
    const auto ffn_dim = static_cast<int64_t>(config.mlp_ratios[i] * static_cast<double>(dim));
    const bool checkpoint = kind == ModelKind::Dense ? config.use_checkpoint : config.use_checkpoints[i];
    layers->push_back(nn::BasicLayer(
        nn::BasicLayerOptions(dim, depth, config.num_heads[i])
            .init_value(config.init_values[i])
            .heads_range(config.heads_ranges[i])
            .ffn_dim(ffn_dim)
            .drop_path(std::vector<double>(rates.begin() + first, rates.begin() + first + depth))
            .decomposed(config.chunkwise_recurrents[i])
            .out_dim(i + 1 < stages ? config.embed_dims[i + 1] : 0)
            .layerscale(config.layerscales[i])
            .layer_init_values(config.layer_init_values)
            .checkpoint(checkpoint)));
    first += depth;
  }
  return layers;
}

}  // namespace rmt::detail

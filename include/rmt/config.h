#pragma once
// The constructor arguments of the authors' VisRetNet / RMT backbone, plus named presets.

#include <cstdint>
#include <string>
#include <vector>

namespace rmt {

// What a model returns: class logits, token-labeling logits, or dense feature maps.
enum class ModelKind { Classifier, TokenLabel, Dense };

std::string to_string(ModelKind kind);
// Accepts "classifier", "token_label", "dense"; throws on anything else.
ModelKind model_kind_from_string(const std::string& name);

// Exactly the keyword arguments of the authors' constructor (one entry per stage).
struct Config {
  std::vector<int64_t> embed_dims{96, 192, 384, 768};
  std::vector<int64_t> depths{2, 2, 6, 2};
  std::vector<int64_t> num_heads{3, 6, 12, 24};
  std::vector<double> init_values{1, 1, 1, 1};
  std::vector<double> heads_ranges{3, 3, 3, 3};
  std::vector<double> mlp_ratios{3, 3, 3, 3};
  // true: stage uses decomposed (row then column) MaSA; false: full MaSA over all tokens.
  std::vector<bool> chunkwise_recurrents{true, true, false, false};
  std::vector<bool> layerscales{false, false, false, false};
  double layer_init_values = 1e-6;
  int64_t projection = 1024;
  int64_t num_classes = 1000;
  double drop_path_rate = 0.1;
  int64_t in_chans = 3;
  // Dense backbone only: which stages' features are returned.
  std::vector<int64_t> out_indices{0, 1, 2, 3};

  int64_t num_stages() const { return static_cast<int64_t>(depths.size()); }
  // Throws std::invalid_argument naming the field, the expected and the found value.
  void validate() const;
  std::string to_json() const;
};

// Parses a JSON object shaped like a `config` of the reference manifest. Unknown keys are an error
// (a typo must not silently fall back to a default); missing keys keep the defaults above.
Config config_from_json(const std::string& json_text);
Config config_from_json_file(const std::string& path);

// Presets by name: rmt_t, rmt_s, rmt_b, rmt_l (classifiers), rmt_s_tl, rmt_b_tl, rmt_l_tl
// (token labeling), rmt_t_dense ... rmt_l_dense (detection/segmentation backbone).
struct Preset {
  std::string name;
  ModelKind kind;
  Config config;
};
Preset preset(const std::string& name);
std::vector<std::string> preset_names();

}  // namespace rmt

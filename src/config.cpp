#include "rmt/config.h"

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace rmt {

namespace {

[[noreturn]] void invalid(const std::string& message) {
  throw std::invalid_argument("rmt::Config: " + message);
}

template <typename T>
std::string list(const std::vector<T>& values) {
  std::ostringstream out;
  out << '[';
  for (size_t i = 0; i < values.size(); ++i) out << (i ? ", " : "") << values[i];
  out << ']';
  return out.str();
}

Config make(std::vector<int64_t> dims, std::vector<int64_t> depths, std::vector<int64_t> heads,
            std::vector<double> ranges, std::vector<double> mlp, std::vector<bool> chunk,
            std::vector<bool> layerscale, double drop_path) {
  Config c;
  c.embed_dims = std::move(dims);
  c.depths = std::move(depths);
  c.num_heads = std::move(heads);
  c.init_values = {2, 2, 2, 2};
  c.heads_ranges = std::move(ranges);
  c.mlp_ratios = std::move(mlp);
  c.chunkwise_recurrents = std::move(chunk);
  c.layerscales = std::move(layerscale);
  c.layer_init_values = 1e-6;
  c.projection = 1024;
  c.num_classes = 1000;
  c.drop_path_rate = drop_path;
  return c;
}

// The authors' RMT_T3, RMT_S, RMT_M2 (RMT-B) and RMT_L6 (RMT-L).
const std::map<std::string, Config>& base_presets() {
  static const std::map<std::string, Config> presets = {
      {"rmt_t", make({64, 128, 256, 512}, {2, 2, 8, 2}, {4, 4, 8, 16}, {4, 4, 6, 6}, {3, 3, 3, 3},
                     {true, true, false, false}, {false, false, false, false}, 0.1)},
      {"rmt_s", make({64, 128, 256, 512}, {3, 4, 18, 4}, {4, 4, 8, 16}, {4, 4, 6, 6}, {4, 4, 3, 3},
                     {true, true, true, false}, {false, false, false, false}, 0.15)},
      {"rmt_b", make({80, 160, 320, 512}, {4, 8, 25, 8}, {5, 5, 10, 16}, {5, 5, 6, 6}, {4, 4, 3, 3},
                     {true, true, true, false}, {false, false, true, true}, 0.4)},
      {"rmt_l", make({112, 224, 448, 640}, {4, 8, 25, 8}, {7, 7, 14, 20}, {6, 6, 6, 6},
                     {4, 4, 3, 3}, {true, true, true, false}, {false, false, true, true}, 0.5)},
  };
  return presets;
}

template <typename T>
void read_field(const nlohmann::json& object, const char* key, T& out) {
  if (!object.contains(key)) return;
  try {
    out = object.at(key).get<T>();
  } catch (const nlohmann::json::exception& e) {
    invalid(std::string("field '") + key + "' has the wrong type (" + e.what() + ")");
  }
}

}  // namespace

std::string to_string(ModelKind kind) {
  switch (kind) {
    case ModelKind::Classifier: return "classifier";
    case ModelKind::TokenLabel: return "token_label";
    case ModelKind::Dense: return "dense";
  }
  return "unknown";
}

ModelKind model_kind_from_string(const std::string& name) {
  if (name == "classifier") return ModelKind::Classifier;
  if (name == "token_label") return ModelKind::TokenLabel;
  if (name == "dense") return ModelKind::Dense;
  throw std::invalid_argument("unknown model kind '" + name +
                              "': expected classifier, token_label or dense");
}

void Config::validate() const {
  const size_t stages = depths.size();
  if (stages == 0) invalid("depths is empty: expected one entry per stage");
  auto same_length = [&](const char* name, size_t size) {
    if (size != stages) {
      invalid(std::string(name) + " has " + std::to_string(size) + " entries, expected " +
              std::to_string(stages) + " (one per stage, as depths)");
    }
  };
  same_length("embed_dims", embed_dims.size());
  same_length("num_heads", num_heads.size());
  same_length("init_values", init_values.size());
  same_length("heads_ranges", heads_ranges.size());
  same_length("mlp_ratios", mlp_ratios.size());
  same_length("chunkwise_recurrents", chunkwise_recurrents.size());
  same_length("layerscales", layerscales.size());
  if (in_chans <= 0) invalid("in_chans must be positive, found " + std::to_string(in_chans));
  for (size_t i = 0; i < stages; ++i) {
    const auto stage = "stage " + std::to_string(i) + ": ";
    if (depths[i] < 1) invalid(stage + "depth must be at least 1, found " + std::to_string(depths[i]));
    if (embed_dims[i] < 2) invalid(stage + "embed_dim must be at least 2, found " + std::to_string(embed_dims[i]));
    if (num_heads[i] < 1) invalid(stage + "num_heads must be at least 1, found " + std::to_string(num_heads[i]));
    if (embed_dims[i] % num_heads[i] != 0) {
      invalid(stage + "embed_dim " + std::to_string(embed_dims[i]) +
              " is not divisible by num_heads " + std::to_string(num_heads[i]));
    }
    const auto head_dim = embed_dims[i] / num_heads[i];
    if (head_dim % 2 != 0) {
      invalid(stage + "head dim " + std::to_string(head_dim) + " (embed_dim " +
              std::to_string(embed_dims[i]) + " / num_heads " + std::to_string(num_heads[i]) +
              ") is odd: the theta-shift rotates pairs of channels, so it must be even");
    }
    if (!(init_values[i] > 0)) {
      invalid(stage + "init_value must be positive (the decay log(1 - 2^-x) needs x > 0), found " +
              std::to_string(init_values[i]));
    }
    if (!(heads_ranges[i] >= 0)) invalid(stage + "heads_range must be >= 0, found " + std::to_string(heads_ranges[i]));
    if (!(mlp_ratios[i] > 0) || static_cast<int64_t>(mlp_ratios[i] * embed_dims[i]) < 1) {
      invalid(stage + "mlp_ratio must give an FFN width of at least 1, found " + std::to_string(mlp_ratios[i]));
    }
  }
  if (projection < 1) invalid("projection must be positive, found " + std::to_string(projection));
  if (num_classes < 0) invalid("num_classes must be >= 0, found " + std::to_string(num_classes));
  if (!(drop_path_rate >= 0 && drop_path_rate < 1)) {
    invalid("drop_path_rate must be in [0, 1), found " + std::to_string(drop_path_rate));
  }
  std::set<int64_t> seen;
  for (const auto index : out_indices) {
    if (index < 0 || index >= static_cast<int64_t>(stages)) {
      invalid("out_indices " + list(out_indices) + " has " + std::to_string(index) +
              ": expected stage indices in [0, " + std::to_string(stages) + ")");
    }
    if (!seen.insert(index).second) invalid("out_indices " + list(out_indices) + " repeats " + std::to_string(index));
  }
}

std::string Config::to_json() const {
  nlohmann::json j;
  j["embed_dims"] = embed_dims;
  j["depths"] = depths;
  j["num_heads"] = num_heads;
  j["init_values"] = init_values;
  j["heads_ranges"] = heads_ranges;
  j["mlp_ratios"] = mlp_ratios;
  j["chunkwise_recurrents"] = chunkwise_recurrents;
  j["layerscales"] = layerscales;
  j["layer_init_values"] = layer_init_values;
  j["projection"] = projection;
  j["num_classes"] = num_classes;
  j["drop_path_rate"] = drop_path_rate;
  j["in_chans"] = in_chans;
  j["out_indices"] = out_indices;
  return j.dump();
}

Config config_from_json(const std::string& json_text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {
    invalid(std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object()) invalid("expected a JSON object, found " + std::string(j.type_name()));
  static const std::set<std::string> known = {
      "embed_dims", "depths", "num_heads", "init_values", "heads_ranges", "mlp_ratios",
      "chunkwise_recurrents", "layerscales", "layer_init_values", "projection", "num_classes",
      "drop_path_rate", "in_chans", "out_indices"};
  for (const auto& item : j.items()) {
    if (!known.count(item.key())) invalid("unknown field '" + item.key() + "'");
  }
  Config c;
  read_field(j, "embed_dims", c.embed_dims);
  read_field(j, "depths", c.depths);
  read_field(j, "num_heads", c.num_heads);
  read_field(j, "init_values", c.init_values);
  read_field(j, "heads_ranges", c.heads_ranges);
  read_field(j, "mlp_ratios", c.mlp_ratios);
  read_field(j, "chunkwise_recurrents", c.chunkwise_recurrents);
  read_field(j, "layerscales", c.layerscales);
  read_field(j, "layer_init_values", c.layer_init_values);
  read_field(j, "projection", c.projection);
  read_field(j, "num_classes", c.num_classes);
  read_field(j, "drop_path_rate", c.drop_path_rate);
  read_field(j, "in_chans", c.in_chans);
  read_field(j, "out_indices", c.out_indices);
  c.validate();
  return c;
}

Config config_from_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open config file '" + path + "'");
  std::stringstream text;
  text << in.rdbuf();
  try {
    return config_from_json(text.str());
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(path + ": " + e.what());
  }
}

Preset preset(const std::string& name) {
  const auto& base = base_presets();
  auto lookup = [&](const std::string& key, ModelKind kind) {
    return Preset{name, kind, base.at(key)};
  };
  if (base.count(name)) return lookup(name, ModelKind::Classifier);
  auto ends_with = [&](const std::string& suffix) {
    return name.size() > suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends_with("_tl")) {
    const auto key = name.substr(0, name.size() - 3);
    if (key != "rmt_t" && base.count(key)) return lookup(key, ModelKind::TokenLabel);
  }
  if (ends_with("_dense")) {
    const auto key = name.substr(0, name.size() - 6);
    if (base.count(key)) return lookup(key, ModelKind::Dense);
  }
  std::string names;
  for (const auto& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
  throw std::invalid_argument("unknown preset '" + name + "': expected one of " + names);
}

std::vector<std::string> preset_names() {
  return {"rmt_t", "rmt_s", "rmt_b", "rmt_l", "rmt_s_tl", "rmt_b_tl", "rmt_l_tl",
          "rmt_t_dense", "rmt_s_dense", "rmt_b_dense", "rmt_l_dense"};
}

}  // namespace rmt

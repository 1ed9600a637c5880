#include "rmt/models/config.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <type_traits>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "rmt/nn/relpos.h"

namespace rmt {

namespace {

[[noreturn]] void invalid(const std::string& message) {
  throw std::invalid_argument(fmt::format("rmt::Config: {}", message));
}

// 6 significant digits (printf's %g): short, and enough to name the value.
std::string number(double value) { return fmt::format("{:g}", value); }
// Numbers as above, integers in full, flags as true/false.
template <typename T>
std::string item(T value) {
  if constexpr (std::is_floating_point_v<T>) return number(value);
  else return fmt::format("{}", value);
}

// "[a, b, c]", the first 10 entries of a longer list then "...": messages stay short.
template <typename T>
std::string list(const std::vector<T>& values) {
  std::vector<std::string> shown;
  for (size_t i = 0; i < values.size() && i < 10; ++i) shown.push_back(item(T(values[i])));
  return fmt::format("[{}{}]", fmt::join(shown, ", "), values.size() > 10 ? ", ..." : "");
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
  throw std::invalid_argument(
      fmt::format("unknown model kind '{}': expected classifier, token_label or dense", name));
}

namespace {

const Config& defaults() {
  static const Config config;
  return config;
}

const char* constructor_of(ModelKind kind) {
  switch (kind) {
    case ModelKind::Classifier: return "the classifier (VisRetNet of classfication_release)";
    case ModelKind::TokenLabel:
      return "the token-label classifier (VisRetNet of classification_token_label_release)";
    case ModelKind::Dense: return "the dense backbone (RMT of the segmentation/detection code)";
  }
  return "unknown";
}

bool is_classifier(ModelKind kind) { return kind != ModelKind::Dense; }

// A per-stage list must have an entry for every stage; the message says when the value is the
// default, i.e. most likely a field the user did not write.
template <typename T>
void check_per_stage(const char* name, const std::vector<T>& values, const std::vector<T>& fallback,
                     const std::vector<int64_t>& depths, const char* why = "") {
  if (values.size() >= depths.size()) return;
  std::string message =
      fmt::format("{} {} has {} entries but depths {} has {} stages: expected one entry per stage",
                  name, list(values), values.size(), list(depths), depths.size());
  if (values == fallback) {
    fmt::format_to(std::back_inserter(message),
                   " ({} was not given, and its default has {} entries{})", name, fallback.size(),
                   why);
  }
  invalid(message);
}

// What the authors compute in float32: the decay must be finite for every head, else the masks hold
// -inf * 0 = NaN.
void check_decay(size_t stage, double initial_value, double heads_range, int64_t heads) {
  const auto where = fmt::format("stage {0}: init_values[{0}] = {1} and heads_ranges[{0}] = {2}",
                                 stage, number(initial_value), number(heads_range));
  if (!std::isfinite(initial_value) || !std::isfinite(heads_range)) {
    invalid(fmt::format("{}: expected finite numbers", where));
  }
  const auto decay = nn::retention_decay(initial_value, heads_range, heads);
  for (int64_t h = 0; h < heads; ++h) {
    const float value = decay[h].item<float>();
    if (std::isfinite(value)) continue;
    invalid(fmt::format("{0} give head {1} of {2} the decay log(1 - 2^-({3} + {4} * {1} / {2})) = "
                        "{5} in float32, as the authors compute it: the retention would be NaN. "
                        "Every head needs init_value + heads_range * h / num_heads > 0 (and not "
                        "within ~1e-7 of 0)",
                        where, h, heads, number(initial_value), number(heads_range),
                        number(value)));
  }
}

}  // namespace

void Config::validate() const {
  const size_t stages = depths.size();
  if (embed_dims.empty()) invalid("embed_dims is empty: the stem needs embed_dims[0]");
  check_per_stage("embed_dims", embed_dims, defaults().embed_dims, depths);
  check_per_stage("num_heads", num_heads, defaults().num_heads, depths);
  check_per_stage("init_values", init_values, defaults().init_values, depths);
  check_per_stage("heads_ranges", heads_ranges, defaults().heads_ranges, depths);
  check_per_stage("mlp_ratios", mlp_ratios, defaults().mlp_ratios, depths);
  check_per_stage("chunkwise_recurrents", chunkwise_recurrents, defaults().chunkwise_recurrents, depths);
  check_per_stage("layerscales", layerscales, defaults().layerscales, depths);
  if (in_chans < 1) invalid(fmt::format("in_chans = {}: expected at least 1", in_chans));
  for (size_t i = 0; i < embed_dims.size(); ++i) {
    if (embed_dims[i] < 1) {
      invalid(fmt::format("embed_dims[{}] = {}: expected at least 1", i, embed_dims[i]));
    }
  }
  if (embed_dims[0] < 2) {
    invalid(fmt::format("embed_dims[0] = {}: the stem's first convolutions have embed_dims[0] // 2 "
                        "channels, so it must be at least 2 (with 0 channels the output would not "
                        "depend on the image)",
                        embed_dims[0]));
  }
  for (size_t i = 0; i < stages; ++i) {
    if (depths[i] < 0) invalid(fmt::format("depths[{}] = {}: expected >= 0 blocks", i, depths[i]));
    if (num_heads[i] < 1) {
      invalid(fmt::format("num_heads[{}] = {}: expected >= 1", i, num_heads[i]));
    }
    if (depths[i] == 0) continue;  // no block: the stage's heads, decay and FFN are never used
    const auto dim = embed_dims[i], heads = num_heads[i];
    if (dim % heads != 0) {
      invalid(fmt::format("stage {0}: embed_dims[{0}] = {1} is not divisible by num_heads[{0}] = "
                          "{2}",
                          i, dim, heads));
    }
    if ((dim / heads) % 2 != 0) {
      invalid(fmt::format("stage {0}: head dimension embed_dims[{0}] / num_heads[{0}] = {1} / {2} "
                          "= {3} is odd: the theta shift rotates pairs of channels, so it must be "
                          "even",
                          i, dim, heads, dim / heads));
    }
    check_decay(i, init_values[i], heads_ranges[i], heads);
    const double width = mlp_ratios[i] * static_cast<double>(dim);
    if (width >= 0x1p40) {
      invalid(fmt::format("mlp_ratios[{0}] = {1} gives stage {0} an FFN width of {2}: too large", i,
                          number(mlp_ratios[i]), number(width)));
    }
    if (!(width >= 1)) {  // Python's int() truncates toward zero
      invalid(fmt::format("mlp_ratios[{0}] = {1} gives stage {0} an FFN width of int({1} * {2}) = "
                          "{3}: it must be at least 1",
                          i, number(mlp_ratios[i]), dim,
                          std::isfinite(width) ? fmt::format("{}", static_cast<int64_t>(width))
                                               : "nan"));
    }
  }
  if (!std::isfinite(layer_init_values)) {
    invalid(fmt::format("layer_init_values = {}: expected a finite number",
                        number(layer_init_values)));
  }
  if (!std::isfinite(drop_path_rate)) {
    invalid(fmt::format("drop_path_rate = {}: expected a finite number", number(drop_path_rate)));
  }
}

void Config::validate(ModelKind kind) const {
  validate();
  const size_t stages = depths.size();
  if (is_classifier(kind)) {
    check_per_stage("use_checkpoints", use_checkpoints, defaults().use_checkpoints, depths,
                    ", as in the authors' VisRetNet, which needs it for more than 4 stages");
    if (projection < 1) {
      invalid(fmt::format("projection = {}: {} needs at least 1 (with 0 the output would not "
                          "depend on the image)",
                          projection, constructor_of(kind)));
    }
    // proj (and aux_head) take embed_dims[-1] features: the last stage's width, or the stem's.
    const auto last = stages > 0 ? stages - 1 : 0;
    if (embed_dims.back() != embed_dims[last]) {
      invalid(fmt::format("embed_dims {} has {} entries for {} stages: the authors' proj takes "
                          "embed_dims[-1] = {} features but the {} gives embed_dims[{}] = {}",
                          list(embed_dims), embed_dims.size(), stages, embed_dims.back(),
                          stages > 0 ? "last stage" : "stem", last, embed_dims[last]));
    }
    if (kind == ModelKind::TokenLabel && num_classes <= 0) {
      // No heads: pooled (B, projection) + 0.5 * max over tokens (B, C); broadcasting as PyTorch.
      const auto channels = embed_dims.back();
      if (projection != channels && projection != 1 && channels != 1) {
        invalid(fmt::format("num_classes = {} leaves the token-label model without heads, and its "
                            "output, the pooled features (projection = {}) + 0.5 * the maximum "
                            "over tokens of the last stage's features (embed_dims[-1] = {}), "
                            "cannot be added (the authors' code fails to broadcast): make "
                            "projection equal embed_dims[-1]",
                            num_classes, projection, channels));
      }
    }
  } else {
    if (embed_dims.size() < 4) {
      invalid(fmt::format("embed_dims {} has {} entries: {} builds four extra_norms from "
                          "embed_dims[0] to embed_dims[3] whatever the number of stages, so it "
                          "needs at least 4",
                          list(embed_dims), embed_dims.size(), constructor_of(kind)));
    }
    if (out_indices != defaults().out_indices) {
      const auto available = std::min<size_t>(stages, 4);
      for (const auto index : out_indices) {
        if (index >= 0 && index < static_cast<int64_t>(available)) continue;
        std::string why = fmt::format("depths has {} stages", stages);
        if (stages > 4 && index >= 4) why = "the authors' backbone has extra_norms for stages 0 to 3 only";
        invalid(fmt::format("out_indices {} has {}: {} ({})", list(out_indices), index,
                            available ? fmt::format("expected stage indices from 0 to {}",
                                                    available - 1)
                                      : std::string("there is no stage to select"),
                            why));
      }
    }
  }
}

std::vector<int64_t> Config::selected_stages() const {
  const int64_t available = std::min<int64_t>(num_stages(), 4);
  std::vector<int64_t> stages;
  for (int64_t i = 0; i < available; ++i) {
    if (std::find(out_indices.begin(), out_indices.end(), i) != out_indices.end()) stages.push_back(i);
  }
  return stages;
}

namespace {

const std::vector<std::string>& common_keys() {
  static const std::vector<std::string> keys = {
      "in_chans", "embed_dims", "depths", "num_heads", "init_values", "heads_ranges", "mlp_ratios",
      "drop_path_rate", "patch_norm", "chunkwise_recurrents", "projection", "layerscales",
      "layer_init_values"};
  return keys;
}

std::vector<std::string> keys_of(ModelKind kind) {
  auto keys = common_keys();
  switch (kind) {
    case ModelKind::Classifier: keys.insert(keys.end(), {"num_classes", "use_checkpoints"}); break;
    case ModelKind::TokenLabel:
      keys.insert(keys.end(), {"num_classes", "use_checkpoints", "token_label"});
      break;
    case ModelKind::Dense: keys.insert(keys.end(), {"out_indices", "use_checkpoint", "norm_eval"}); break;
  }
  return keys;
}

bool contains(const std::vector<std::string>& keys, const std::string& key) {
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

std::string shown(const nlohmann::json& value) {
  auto text = value.dump();
  return text.size() > 60 ? fmt::format("{}...", text.substr(0, 57)) : text;
}

// JSON values read as the authors' Python reads them, strictly where Python would fail.
int64_t as_integer(const nlohmann::json& value, const std::string& where) {
  if (value.is_number_unsigned() && value.get<uint64_t>() > uint64_t(INT64_MAX)) {
    invalid(fmt::format("{} = {} is too large", where, shown(value)));
  }
  if (!value.is_number_integer()) {
    invalid(fmt::format("{} is {}: expected an integer", where, shown(value)));
  }
  return value.get<int64_t>();
}

double as_number(const nlohmann::json& value, const std::string& where) {
  if (!value.is_number()) invalid(fmt::format("{} is {}: expected a number", where, shown(value)));
  return value.get<double>();
}

bool as_flag(const nlohmann::json& value, const std::string& where) {
  if (value.is_boolean()) return value.get<bool>();
  if (value.is_number_integer()) return value.get<int64_t>() != 0;  // Python's truthiness
  invalid(fmt::format("{} is {}: expected true or false (or an integer, 0 being false)", where,
                      shown(value)));
}

template <typename T, typename Read>
std::vector<T> as_list(const nlohmann::json& value, const std::string& key, Read read) {
  if (!value.is_array()) invalid(fmt::format("{} is {}: expected a list", key, shown(value)));
  std::vector<T> out;
  for (size_t i = 0; i < value.size(); ++i) {
    out.push_back(read(value[i], fmt::format("{}[{}]", key, i)));
  }
  return out;
}

std::vector<int64_t> integers(const nlohmann::json& v, const std::string& key) {
  return as_list<int64_t>(v, key, as_integer);
}
std::vector<double> numbers(const nlohmann::json& v, const std::string& key) {
  return as_list<double>(v, key, as_number);
}
std::vector<bool> flags(const nlohmann::json& v, const std::string& key) {
  return as_list<bool>(v, key, as_flag);
}

// Why `key` is not an argument of `kind`'s constructor (kind unset: of no kind).
[[noreturn]] void refuse_key(const std::string& key, const std::vector<std::string>& accepted,
                             const ModelKind* kind) {
  if (key == "norm_layer") {
    invalid("'norm_layer' is a Python class in the authors' constructors and has no effect there "
            "(PatchEmbed and PatchMerging ignore it): leave it out");
  }
  std::vector<std::string> owners;
  for (const auto other : {ModelKind::Classifier, ModelKind::TokenLabel, ModelKind::Dense}) {
    if (contains(keys_of(other), key)) owners.push_back(to_string(other));
  }
  if (kind && !owners.empty()) {
    std::string hint;
    if (key == "use_checkpoint") hint = "; the classifiers take use_checkpoints, one flag per stage";
    if (key == "use_checkpoints") hint = "; the dense backbone takes use_checkpoint, one flag for all stages";
    if (key == "token_label") hint = "; use the kind token_label";
    invalid(fmt::format("'{}' is not an argument of {} but of the kind {}{}", key,
                        constructor_of(*kind), fmt::join(owners, " and "), hint));
  }
  invalid(fmt::format("unknown field '{}': expected one of {}", key, fmt::join(accepted, ", ")));
}

Config parse(const std::string& json_text, const ModelKind* kind) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {
    invalid(fmt::format("not valid JSON: {}", e.what()));
  }
  if (!j.is_object()) invalid(fmt::format("expected a JSON object, found {}", j.type_name()));
  std::vector<std::string> accepted;
  if (kind) {
    accepted = keys_of(*kind);
  } else {
    for (const auto any : {ModelKind::Classifier, ModelKind::TokenLabel, ModelKind::Dense}) {
      for (const auto& key : keys_of(any)) {
        if (!contains(accepted, key)) accepted.push_back(key);
      }
    }
  }
  Config c;
  for (const auto& item : j.items()) {
    const auto& key = item.key();
    const auto& v = item.value();
    if (!contains(accepted, key)) refuse_key(key, accepted, kind);
    if (key == "embed_dims") c.embed_dims = integers(v, key);
    else if (key == "depths") c.depths = integers(v, key);
    else if (key == "num_heads") c.num_heads = integers(v, key);
    else if (key == "init_values") c.init_values = numbers(v, key);
    else if (key == "heads_ranges") c.heads_ranges = numbers(v, key);
    else if (key == "mlp_ratios") c.mlp_ratios = numbers(v, key);
    else if (key == "chunkwise_recurrents") c.chunkwise_recurrents = flags(v, key);
    else if (key == "layerscales") c.layerscales = flags(v, key);
    else if (key == "layer_init_values") c.layer_init_values = as_number(v, key);
    else if (key == "projection") c.projection = as_integer(v, key);
    else if (key == "num_classes") c.num_classes = as_integer(v, key);
    else if (key == "drop_path_rate") c.drop_path_rate = as_number(v, key);
    else if (key == "in_chans") c.in_chans = as_integer(v, key);
    else if (key == "patch_norm") c.patch_norm = as_flag(v, key);
    else if (key == "use_checkpoints") c.use_checkpoints = flags(v, key);
    else if (key == "out_indices") c.out_indices = integers(v, key);
    else if (key == "use_checkpoint") c.use_checkpoint = as_flag(v, key);
    else if (key == "norm_eval") c.norm_eval = as_flag(v, key);
    else if (key == "token_label" && !as_flag(v, key)) {
      invalid(fmt::format("token_label is {}: without token labeling the authors' model is the "
                          "plain classifier; use the kind classifier",
                          shown(v)));
    }
  }
  if (kind) {
    c.validate(*kind);
  } else {
    c.validate();
  }
  return c;
}

nlohmann::ordered_json to_json_object(const Config& c, const std::vector<std::string>& keys) {
  nlohmann::ordered_json j;
  for (const auto& key : keys) {
    if (key == "embed_dims") j[key] = c.embed_dims;
    else if (key == "depths") j[key] = c.depths;
    else if (key == "num_heads") j[key] = c.num_heads;
    else if (key == "init_values") j[key] = c.init_values;
    else if (key == "heads_ranges") j[key] = c.heads_ranges;
    else if (key == "mlp_ratios") j[key] = c.mlp_ratios;
    else if (key == "chunkwise_recurrents") j[key] = c.chunkwise_recurrents;
    else if (key == "layerscales") j[key] = c.layerscales;
    else if (key == "layer_init_values") j[key] = c.layer_init_values;
    else if (key == "projection") j[key] = c.projection;
    else if (key == "num_classes") j[key] = c.num_classes;
    else if (key == "drop_path_rate") j[key] = c.drop_path_rate;
    else if (key == "in_chans") j[key] = c.in_chans;
    else if (key == "patch_norm") j[key] = c.patch_norm;
    else if (key == "use_checkpoints") j[key] = c.use_checkpoints;
    else if (key == "out_indices") j[key] = c.out_indices;
    else if (key == "use_checkpoint") j[key] = c.use_checkpoint;
    else if (key == "norm_eval") j[key] = c.norm_eval;
  }
  return j;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(fmt::format("cannot open config file '{}'", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

std::string Config::to_json(ModelKind kind) const { return to_json_object(*this, keys_of(kind)).dump(); }

std::string Config::to_json() const {
  auto keys = common_keys();
  keys.insert(keys.end(), {"num_classes", "use_checkpoints", "out_indices", "use_checkpoint", "norm_eval"});
  return to_json_object(*this, keys).dump();
}

Config config_from_json(const std::string& json_text, ModelKind kind) { return parse(json_text, &kind); }

Config config_from_json(const std::string& json_text) { return parse(json_text, nullptr); }

Config config_from_json_file(const std::string& path, ModelKind kind) {
  const auto text = read_text(path);
  try {
    return config_from_json(text, kind);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(fmt::format("{}: {}", path, e.what()));
  }
}

Config config_from_json_file(const std::string& path) {
  const auto text = read_text(path);
  try {
    return config_from_json(text);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(fmt::format("{}: {}", path, e.what()));
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
  throw std::invalid_argument(fmt::format("unknown preset '{}': expected one of {}", name,
                                          fmt::join(preset_names(), ", ")));
}

std::vector<std::string> preset_names() {
  return {"rmt_t", "rmt_s", "rmt_b", "rmt_l", "rmt_s_tl", "rmt_b_tl", "rmt_l_tl",
          "rmt_t_dense", "rmt_s_dense", "rmt_b_dense", "rmt_l_dense"};
}

}  // namespace rmt

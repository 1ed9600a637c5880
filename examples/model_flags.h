#pragma once
// The model and weights options of every tool, declared once: --arch/--config/--kind, --weights,
// --weights-key/--key-prefix(/--keep-module-prefix), --non-strict, --dtype, --device; and the
// model they describe.
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include "rmt/io/checkpoint.h"
#include "rmt/models/config.h"
#include "rmt/models/model.h"
#include "tool_common.h"

namespace rmt::tools {

// Which weights of a checkpoint: --weights-key, --key-prefix and, where asked for,
// --keep-module-prefix.
struct SelectionFlags {
  std::string weights_key = "auto", key_prefix;
  bool keep_module_prefix = false;
  CLI::Option *weights_key_opt = nullptr, *key_prefix_opt = nullptr;

  rmt::WeightsSelection selection() const {
    rmt::WeightsSelection s;
    s.weights_key = weights_key;
    s.key_prefix = key_prefix;
    s.strip_module_prefix = !keep_module_prefix;
    return s;
  }
};

inline void add_selection_flags(CLI::App& app, SelectionFlags& f, bool module_prefix_flag) {
  f.weights_key_opt = app.add_option(
      "--weights-key", f.weights_key,
      fmt::format("entry holding the weights (auto: {}, else the top-level dict; \"\" the "
                  "top-level dict)",
                  fmt::join(rmt::automatic_weights_keys(), ", ")));
  f.key_prefix_opt = app.add_option("--key-prefix", f.key_prefix,
                                    "keep only keys with this prefix, removed (e.g. backbone.)");
  if (module_prefix_flag) {
    app.add_flag("--keep-module-prefix", f.keep_module_prefix,
                 "do not remove DistributedDataParallel's module.");
  }
}

// What a tool takes of the model options.
struct ModelFlagsSpec {
  std::vector<std::string> kinds{"classifier", "token_label", "dense"};  // --kind with --config
  bool dense_presets = true;  // --arch's help lists the dense backbone presets
  std::string arch_help = "preset name";
  std::string config_help = "JSON file with the constructor arguments";
  // --weights FILE, and the selection options; empty: the tool takes the file otherwise.
  std::string weights_help = "checkpoint: torch.save (.pth) or safetensors (required)";
  bool run = true;  // --non-strict, --device, --dtype
  std::string device_help = "cpu or cuda";
  bool module_prefix_flag = false;  // --keep-module-prefix
};

struct ModelFlags {
  std::string arch, config_path, kind_name = "classifier", weights, dtype_name = "float32",
                                 device_name = "cpu";
  bool non_strict = false;
  SelectionFlags select;

  bool given() const { return !arch.empty() || !config_path.empty(); }
  // The preset, or the config of --config read for --kind: untrained weights.
  rmt::Model build() const {
    if (!given()) throw std::invalid_argument("give --arch NAME or --config FILE.json");
    if (!arch.empty()) return rmt::Model::from_preset(arch);
    const auto kind = rmt::model_kind_from_string(kind_name);
    return rmt::Model(rmt::config_from_json_file(config_path, kind), kind);
  }
};

inline void add_model_flags(CLI::App& app, ModelFlags& f, const ModelFlagsSpec& spec = {}) {
  std::vector<std::string> names;
  for (const auto& n : rmt::preset_names()) {
    if (spec.dense_presets || n.find("dense") == std::string::npos) names.push_back(n);
  }
  auto* arch_opt = app.add_option("--arch", f.arch,
                                  fmt::format("{}: {}", spec.arch_help, fmt::join(names, ", ")));
  auto* config_opt = app.add_option("--config", f.config_path, spec.config_help);
  arch_opt->excludes(config_opt);
  std::string kind_help;  // "a, b or c"
  for (size_t i = 0; i < spec.kinds.size(); ++i) {
    fmt::format_to(std::back_inserter(kind_help), "{}{}",
                   i == 0 ? "" : i + 1 == spec.kinds.size() ? " or " : ", ", spec.kinds[i]);
  }
  app.add_option("--kind", f.kind_name, fmt::format("with --config: {}", kind_help))
      ->check(CLI::IsMember(spec.kinds));
  if (!spec.weights_help.empty()) app.add_option("--weights", f.weights, spec.weights_help);
  add_selection_flags(app, f.select, spec.module_prefix_flag);
  if (spec.run) {
    app.add_flag("--non-strict", f.non_strict,
                 "load the matching keys and report the others instead of failing");
    app.add_option("--device", f.device_name, spec.device_help);
    app.add_option("--dtype", f.dtype_name, "float32, float64, float16 or bfloat16");
  }
}

// The model of the flags with its weights, on `device` in the flags' dtype, in eval mode. A
// non-strict load's report goes to stderr as a warning.
inline rmt::Model load_model(const ModelFlags& f, torch::Device device, const char* tool) {
  if (!f.given()) throw std::invalid_argument("give --arch NAME or --config FILE.json");
  if (f.weights.empty()) throw std::invalid_argument("--weights is required");
  const auto dtype = parse_dtype(f.dtype_name);
  rmt::Model model = f.build();
  auto report = model.load(f.weights, f.select.selection(), !f.non_strict);
  if (!report.ok()) fmt::print(stderr, "{}: warning: {}\n", tool, report.summary());
  model.to(device, dtype);
  model.eval();
  return model;
}

}  // namespace rmt::tools

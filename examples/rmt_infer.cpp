// rmt-infer: runs an RMT model on a .npy batch and writes the outputs as .npy.
#include <cstdio>
#include <iostream>
#include <sstream>
#include <optional>

#include <CLI/CLI.hpp>
#include <c10/core/InferenceMode.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/cuda.h>

#include "rmt/rmt.h"
#include "tool_common.h"
#include "rmt/summary.h"

namespace {

int run(int argc, char** argv) {
  CLI::App app{"Runs an RMT model (a preset or a config) with a checkpoint on a .npy image batch."};
  std::string arch, config_path, kind_name = "classifier", weights, weights_key = "auto",
                                 key_prefix, input, output, dtype_name = "float32", device_name = "cpu";
  bool non_strict = false;
  auto* arch_opt = app.add_option("--arch", arch, "preset name: " + [] {
    std::string names;
    for (const auto& n : rmt::preset_names()) names += (names.empty() ? "" : ", ") + n;
    return names;
  }());
  auto* config_opt = app.add_option("--config", config_path, "JSON file with the constructor arguments");
  arch_opt->excludes(config_opt);
  app.add_option("--kind", kind_name, "with --config: classifier, token_label or dense")
      ->check(CLI::IsMember({"classifier", "token_label", "dense"}));
  app.add_option("--weights", weights, "checkpoint: torch.save (.pth) or safetensors (required unless --summary)");
  app.add_option("--weights-key", weights_key, "entry holding the weights (auto: model, state_dict, model_ema, ...)");
  app.add_option("--key-prefix", key_prefix, "keep only keys with this prefix, removed (e.g. backbone.)");
  app.add_flag("--non-strict", non_strict, "load the matching keys and report the others instead of failing");
  app.add_option("--input", input, "float .npy, (B, C, H, W) (required unless --summary)");
  app.add_option("--output", output, "output prefix: PREFIX.npy, or PREFIX.stage{i}.npy per selected stage i (dense) "
                 "(required unless --summary)");
  bool summary = false, per_layer = false;
  std::vector<int64_t> input_size{224, 224};
  app.add_flag("--summary", summary,
               "print the parameter count and multiply-accumulates (dense convs, depthwise convs, "
               "linear layers, attention) instead of running the model");
  app.add_option("--input-size", input_size, "with --summary: H W (or one number for both)")
      ->expected(1, 2)
      ->check(CLI::PositiveNumber);
  std::vector<std::string> compare;
  app.add_option("--compare", compare,
                 "reference .npy per output: print the relative error ||out - ref|| / ||ref||");
  app.add_flag("--per-layer", per_layer, "with --summary: one line per counted layer too");
  app.add_option("--dtype", dtype_name, "float32, float64, float16 or bfloat16");
  app.add_option("--device", device_name, "cpu or cuda");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (arch.empty() && config_path.empty()) throw std::invalid_argument("give --arch NAME or --config FILE.json");
  if (summary) {
    const rmt::Model summarized = !arch.empty()
        ? rmt::Model::from_preset(arch)
        : rmt::Model(rmt::config_from_json_file(config_path, rmt::model_kind_from_string(kind_name)),
                     rmt::model_kind_from_string(kind_name));
    const int64_t h = input_size.front(), w = input_size.back();
    std::cout << rmt::format_summary(rmt::summarize(summarized, h, w),
                                     !arch.empty() ? arch : config_path, per_layer);
    return 0;
  }
  for (const auto& [value, name] : {std::pair{&weights, "--weights"}, std::pair{&input, "--input"},
                                    std::pair{&output, "--output"}}) {
    if (value->empty()) throw std::invalid_argument(std::string(name) + " is required (unless --summary)");
  }

  const auto dtype = rmt::tools::parse_dtype(dtype_name);
  const torch::Device device = rmt::tools::parse_device(device_name);

  std::optional<rmt::Model> model;
  if (!arch.empty()) {
    model.emplace(rmt::Model::from_preset(arch));
  } else {
    const auto kind = rmt::model_kind_from_string(kind_name);
    model.emplace(rmt::config_from_json_file(config_path, kind), kind);
  }
  rmt::WeightsSelection selection;
  selection.weights_key = weights_key;
  selection.key_prefix = key_prefix;
  auto report = model->load(weights, selection, !non_strict);
  if (!report.ok()) std::cerr << "rmt-infer: warning: " << report.summary() << "\n";
  model->to(device, dtype);
  model->eval();

  auto images = rmt::read_npy(input);
  if (!at::isFloatingType(images.scalar_type())) {
    throw std::invalid_argument(fmt::format("{}: expected floating-point images, found {}", input,
                                            c10::toString(images.scalar_type())));
  }
  // cuDNN convolutions would otherwise use TF32 (a 10-bit mantissa) for float32 on Ampere and newer.
  at::globalContext().setAllowTF32CuDNN(false);
  // Dense outputs are named by the stage they hold.
  std::vector<int64_t> stages;
  if (model->kind() == rmt::ModelKind::Dense) {
    stages = model->config().selected_stages();
    if (stages.empty()) {
      throw std::invalid_argument(
          fmt::format("the config's out_indices selects none of the {} stages: nothing to write",
                      model->config().num_stages()));
    }
  }
  c10::InferenceMode inference;  // no autograd records, no version counters
  auto outputs = model->forward(images.to(device, dtype));
  if (!compare.empty() && compare.size() != outputs.size()) {
    throw std::invalid_argument(fmt::format(
        "--compare: the model has {} outputs (dense: one per selected stage, in stage order), "
        "found {} reference files",
        outputs.size(), compare.size()));
  }
  for (size_t i = 0; i < compare.size(); ++i) {
    auto expected = rmt::read_npy(compare[i]).to(at::kDouble);
    auto actual = outputs[i].to(at::kCPU, at::kDouble);
    if (actual.sizes() != expected.sizes()) {
      throw std::invalid_argument(fmt::format("{}: expected the output's shape [{}], found [{}]",
                                              compare[i], fmt::join(actual.sizes(), ", "),
                                              fmt::join(expected.sizes(), ", ")));
    }
    const double error = ((actual - expected).norm() / expected.norm()).item<double>();
    fmt::print("{} {} [{}]: relative error {:g} vs {}\n", stages.empty() ? "output" : "stage",
               stages.empty() ? static_cast<int64_t>(i) : stages[i],
               fmt::join(actual.sizes(), ", "), error, compare[i]);
  }
  if (model->kind() == rmt::ModelKind::Dense) {
    for (size_t i = 0; i < outputs.size(); ++i) {
      rmt::write_npy(fmt::format("{}.stage{}.npy", output, stages[i]), outputs[i]);
    }
  } else {
    rmt::write_npy(output + ".npy", outputs.front());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return rmt::tools::run_tool("rmt-infer", [&] { return run(argc, argv); });
}

// rmt-infer: runs an RMT model on a .npy batch and writes the outputs as .npy.
#include <cstdio>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <c10/core/InferenceMode.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/cuda.h>

#include "model_flags.h"
#include "rmt/rmt.h"
#include "tool_common.h"

namespace {

int run(int argc, char** argv) {
  CLI::App app{"Runs an RMT model (a preset or a config) with a checkpoint on a .npy image batch."};
  rmt::tools::ModelFlags model_flags;
  rmt::tools::ModelFlagsSpec spec;
  spec.weights_help = "checkpoint: torch.save (.pth) or safetensors (required unless --summary)";
  rmt::tools::add_model_flags(app, model_flags, spec);
  std::string input, output;
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
  int threads = 0;
  app.add_option("--threads", threads,
                 "CPU threads (default: OMP_NUM_THREADS when set, else the CPUs this process may "
                 "use: affinity mask and cgroup quota)")
      ->check(CLI::Range(1, 1024));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!model_flags.given()) throw std::invalid_argument("give --arch NAME or --config FILE.json");
  rmt::runtime::configure_threads(threads);
  rmt::runtime::retain_freed_memory();
  if (summary) {
    const int64_t h = input_size.front(), w = input_size.back();
    fmt::print("{}", rmt::format_summary(
                         rmt::summarize(model_flags.build(), h, w),
                         !model_flags.arch.empty() ? model_flags.arch : model_flags.config_path,
                         per_layer));
    return 0;
  }
  for (const auto& [value, name] : {std::pair{&model_flags.weights, "--weights"},
                                    std::pair{&input, "--input"}, std::pair{&output, "--output"}}) {
    if (value->empty()) {
      throw std::invalid_argument(fmt::format("{} is required (unless --summary)", name));
    }
  }

  const auto dtype = rmt::tools::parse_dtype(model_flags.dtype_name);
  const torch::Device device = rmt::tools::parse_device(model_flags.device_name);
  rmt::Model model = rmt::tools::load_model(model_flags, device, "rmt-infer");

  auto images = rmt::read_npy(input);
  if (!at::isFloatingType(images.scalar_type())) {
    throw std::invalid_argument(fmt::format("{}: expected floating-point images, found {}", input,
                                            c10::toString(images.scalar_type())));
  }
  // cuDNN convolutions would otherwise use TF32 (a 10-bit mantissa) for float32 on Ampere and newer.
  at::globalContext().setAllowTF32CuDNN(false);
  // Dense outputs are named by the stage they hold.
  std::vector<int64_t> stages;
  if (model.kind() == rmt::ModelKind::Dense) {
    stages = model.config().selected_stages();
    if (stages.empty()) {
      throw std::invalid_argument(
          fmt::format("the config's out_indices selects none of the {} stages: nothing to write",
                      model.config().num_stages()));
    }
  }
  c10::InferenceMode inference;  // no autograd records, no version counters
  auto outputs = model.forward(images.to(device, dtype));
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
  if (model.kind() == rmt::ModelKind::Dense) {
    for (size_t i = 0; i < outputs.size(); ++i) {
      rmt::write_npy(fmt::format("{}.stage{}.npy", output, stages[i]), outputs[i]);
    }
  } else {
    rmt::write_npy(fmt::format("{}.npy", output), outputs.front());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return rmt::tools::run_tool("rmt-infer", [&] { return run(argc, argv); });
}

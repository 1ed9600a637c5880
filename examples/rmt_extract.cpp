// rmt-extract: per-image features of an RMT model for a sharded, resumable run on one or many
// processes (torchrun, srun, Kubernetes Indexed Jobs): the pooled features before the classifier
// head (classifier and token-labeling models), or the dense backbone's feature maps. Results go to
// a run directory as safetensors chunks, merged into one file in input order (see rmt/batch/*.h).
#include <iostream>
#include <iterator>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <c10/core/InferenceMode.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "batch_tool.h"
#include "rmt/batch/chunks.h"
#include "rmt/batch/inputs.h"
#include "rmt/batch/job.h"
#include "rmt/batch/merge.h"
#include "rmt/models/model.h"
#include "tool_common.h"

namespace {

constexpr const char* kTool = "rmt-extract";

// Each chunk's features as a safetensors file: "features" (n, D) pooled, or "stage{i}" maps.
class FeaturesSink : public rmt::batch::ChunkSink {
 public:
  FeaturesSink(rmt::Model& model, torch::Device device, torch::Dtype dtype)
      : model_(model), device_(device), dtype_(dtype) {}

  // The names of the outputs, in order.
  static std::vector<std::string> output_names(const rmt::Model& model) {
    if (model.kind() != rmt::ModelKind::Dense) return {"features"};
    std::vector<std::string> names;
    for (auto i : model.config().out_indices) names.push_back(fmt::format("stage{}", i));
    return names;
  }

  void begin_chunk(const rmt::batch::Range& chunk) override { chunk_.emplace(chunk); }
  void add_batch(const rmt::batch::DecodedBatch& batch) override {
    for (const auto& f : batch.failures) chunk_->add_failure(f);
    if (batch.images.empty()) return;
    const auto x = batch.pixels.to(device_, dtype_);
    std::vector<at::Tensor> outputs;
    if (model_.kind() == rmt::ModelKind::Dense) {
      outputs = model_.forward(x);
    } else {
      outputs = {model_.classifier()->forward_features(x)};
    }
    const auto names = output_names(model_);
    std::vector<std::pair<std::string, at::Tensor>> named;
    for (size_t i = 0; i < outputs.size(); ++i) named.emplace_back(names.at(i), outputs[i]);
    chunk_->add(batch.images, named);
  }
  void write_chunk(const std::string& path) override { chunk_->write(path); }

 private:
  rmt::Model& model_;
  torch::Device device_;
  torch::Dtype dtype_;
  std::optional<rmt::batch::FeaturesChunk> chunk_;
};

int run(int argc, char** argv) {
  CLI::App app{
      "Extracts per-image features with an RMT model into a run directory: the pooled "
      "features before the classifier head (classifier and token-labeling models), or "
      "the feature maps of a dense backbone (--arch rmt_t_dense, ..., or --kind dense). "
      "Shards the sorted inputs over the launcher's ranks (torchrun, srun, Kubernetes "
      "Indexed Jobs), writes resumable safetensors chunks, and merges them in input "
      "order when every rank has finished. Preprocessing as rmt-classify's."};
  app.footer(
      "Exit status: 0 when this rank's share is written (images that fail to decode are "
      "listed in the output), 1 on any error.");
  rmt::tools::ModelFlags model_flags;
  rmt::tools::PreprocessFlags pre_flags;
  rmt::tools::BatchFlags batch;
  std::vector<std::string> inputs;
  rmt::tools::add_model_flags(
      app, model_flags, rmt::tools::batch_model_spec({"classifier", "token_label", "dense"}, true));
  rmt::tools::add_preprocess_flags(app, pre_flags);
  rmt::tools::add_batch_flags(app, batch, true);
  app.add_option("inputs", inputs, "image files and directories (walked recursively)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!batch.merge_dir.empty()) {
    if (!inputs.empty() || !batch.file_lists.empty()) {
      throw std::invalid_argument(
          "--merge DIR takes no inputs: they are the run's (DIR/inputs.txt)");
    }
    const auto result = rmt::batch::merge_run(batch.merge_dir, rmt::tools::merge_options(batch));
    std::string files;
    for (const auto& f : result.written) fmt::format_to(std::back_inserter(files), " {}", f);
    fmt::print(stderr, "{}: merged {} inputs ({} failed to decode) into{}\n", kTool,
               result.inputs, result.failures, files);
    if (!result.note.empty()) fmt::print(stderr, "{}: note: {}\n", kTool, result.note);
    return 0;
  }
  if (batch.output.empty()) throw std::invalid_argument("give --output DIR (or --merge DIR)");
  if (inputs.empty() && batch.file_lists.empty()) {
    throw std::invalid_argument("give images or directories, or --file-list FILE");
  }
  const auto rank = rmt::tools::rank_of(batch);
  const auto dtype = rmt::tools::parse_dtype(model_flags.dtype_name);
  const torch::Device device = rmt::tools::device_for(model_flags.device_name, rank);
  const auto pre = rmt::tools::preprocess_options(pre_flags, model_flags);
  rmt::tools::apply_threads(batch);
  auto model = rmt::tools::load_model(model_flags, device, kTool);
  c10::InferenceMode inference;  // no autograd records, no version counters

  const auto listing = rmt::batch::list_inputs(inputs, batch.file_lists);
  for (const auto& d : listing.empty_directories) {
    fmt::print(stderr, "{}: warning: {}: no images (.jpg .jpeg .png .bmp .gif) in this directory\n",
               kTool, d);
  }
  if (listing.duplicates) {
    fmt::print(stderr, "{}: warning: {} paths were given more than once: each is computed once\n",
               kTool, listing.duplicates);
  }
  if (listing.files.empty()) throw std::invalid_argument("no images to extract features from");
  auto settings = rmt::tools::run_settings(model_flags, model, pre, pre_flags);
  settings["outputs"] = fmt::format("{}", fmt::join(FeaturesSink::output_names(model), " "));
  FeaturesSink sink(model, device, dtype);
  rmt::batch::run_job(
      listing.files,
      rmt::tools::job_options(kTool, batch, rmt::batch::ChunkFormat::Features, pre, rank, settings),
      sink, std::cerr);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return rmt::tools::run_tool(kTool, [&] { return run(argc, argv); });
}

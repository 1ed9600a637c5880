// rmt-classify: classifies image files (JPEG, PNG, BMP, GIF) with an RMT ImageNet model, with the
// authors' evaluation preprocessing, and prints the top-k classes with their probabilities; with
// --output DIR, one rank of a sharded, resumable run (see rmt/batch/job.h), and --merge DIR.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <c10/core/InferenceMode.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>

#include "batch_tool.h"
#include "tool_common.h"
#include "rmt/batch/chunks.h"
#include "rmt/batch/inputs.h"
#include "rmt/batch/job.h"
#include "rmt/batch/merge.h"
#include "rmt/batch/prefetch.h"
#include "rmt/data/preprocess.h"
#include "rmt/models/model.h"

// The 1000 ImageNet-1k class names, one per line (generated from examples/imagenet_classes.txt).
extern const char* const rmt_imagenet_classes_text;

namespace {

namespace fs = std::filesystem;
constexpr const char* kTool = "rmt-classify";

// Exit codes.
constexpr int kOk = 0, kSomeInputsFailed = 2;  // fatal errors: 1 (run_tool)

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(line);
  }
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  return lines;
}

std::vector<std::string> class_names(int64_t num_classes, const std::string& labels_path) {
  if (!labels_path.empty()) {
    std::ifstream in(labels_path);
    if (!in) {
      throw std::runtime_error(fmt::format("{}: cannot open the class names file", labels_path));
    }
    std::stringstream text;
    text << in.rdbuf();
    auto names = split_lines(text.str());
    if (static_cast<int64_t>(names.size()) != num_classes) {
      throw std::runtime_error(fmt::format(
          "{}: expected {} class names (one per line, the model's num_classes), found {}",
          labels_path, num_classes, names.size()));
    }
    return names;
  }
  if (num_classes == 1000) return split_lines(rmt_imagenet_classes_text);
  std::vector<std::string> names;
  for (int64_t i = 0; i < num_classes; ++i) names.push_back(fmt::format("class {}", i));
  return names;
}

struct Failure {
  std::string file, message;
};

// Files to classify, in order: files as given, directories walked recursively (sorted, image
// extensions only), then the paths of the file lists. Missing paths and unreadable directories
// become failures.
std::vector<std::string> collect_inputs(const std::vector<std::string>& args,
                                        const std::vector<std::string>& file_lists,
                                        std::vector<Failure>& failures) {
  std::vector<std::string> files;
  for (const auto& arg : args) {
    std::error_code ec;
    const auto status = fs::status(arg, ec);
    if (ec || !fs::exists(status)) {
      failures.push_back({arg, fmt::format("{}: no such file or directory", arg)});
      continue;
    }
    if (!fs::is_directory(status)) {
      files.push_back(arg);
      continue;
    }
    const auto found = rmt::batch::images_in_directory(arg, ec);
    if (ec) {
      failures.push_back(
          {arg, fmt::format("{}: cannot walk the directory ({})", arg, ec.message())});
    }
    if (found.empty() && !ec) {
      fmt::print(stderr,
                 "{}: warning: {}: no images (.jpg .jpeg .png .bmp .gif) in this directory\n",
                 kTool, arg);
    }
    files.insert(files.end(), found.begin(), found.end());
  }
  for (const auto& list : file_lists) {
    const auto listed = rmt::batch::read_file_list(list);
    files.insert(files.end(), listed.begin(), listed.end());
  }
  return files;
}

// A one-line progress bar on stderr (only drawn when stderr is a terminal).
class Progress {
 public:
  Progress(size_t total, bool enabled)
      : total_(total), enabled_(enabled), start_(std::chrono::steady_clock::now()) {}
  void update(size_t done) {
    done_ = done;
    draw();
  }
  void clear() {
    if (enabled_) std::fputs("\r\033[2K", stderr);
  }
  void draw() {
    if (!enabled_) return;
    constexpr int width = 30;
    const int filled = total_ ? static_cast<int>(width * done_ / total_) : width;
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    fmt::print(stderr, "\r\033[2K[{:#<{}}{:.<{}}] {}/{} images  {:.1f} images/s", "", filled, "",
               width - filled, done_, total_, seconds > 0 ? done_ / seconds : 0.0);
    std::fflush(stderr);
  }
  bool enabled() const { return enabled_; }

 private:
  size_t total_, done_ = 0;
  bool enabled_;
  std::chrono::steady_clock::time_point start_;
};

// The top-k classes of a batch of preprocessed images: (probabilities, class indices), (B, k) each,
// on the CPU.
std::pair<at::Tensor, at::Tensor> top_classes(rmt::Model& model, const at::Tensor& pixels,
                                              torch::Device device, torch::Dtype dtype, int64_t k) {
  auto logits = model.forward(pixels.to(device, dtype)).front();
  auto top = logits.to(at::kFloat).softmax(1).topk(k, 1);
  return {std::get<0>(top).cpu().contiguous(), std::get<1>(top).cpu().contiguous()};
}

// --output: each chunk's results as JSON lines.
class ClassesSink : public rmt::batch::ChunkSink {
 public:
  ClassesSink(rmt::Model& model, torch::Device device, torch::Dtype dtype, int64_t topk,
              const std::vector<std::string>& names)
      : model_(model), device_(device), dtype_(dtype), topk_(topk), names_(names) {}
  void begin_chunk(const rmt::batch::Range& chunk) override { chunk_.emplace(chunk); }
  void add_batch(const rmt::batch::DecodedBatch& batch) override {
    for (const auto& f : batch.failures) chunk_->add_failure(f);
    if (batch.images.empty()) return;
    const auto [probs, indices] = top_classes(model_, batch.pixels, device_, dtype_, topk_);
    const auto p = probs.accessor<float, 2>();
    const auto ix = indices.accessor<int64_t, 2>();
    for (size_t i = 0; i < batch.images.size(); ++i) {
      std::vector<rmt::batch::Prediction> top;
      for (int64_t k = 0; k < topk_; ++k) {
        const int64_t c = ix[static_cast<int64_t>(i)][k];
        top.push_back({c, names_[static_cast<size_t>(c)], p[static_cast<int64_t>(i)][k]});
      }
      chunk_->add(batch.images[i], top);
    }
  }
  void write_chunk(const std::string& path) override { chunk_->write(path); }

 private:
  rmt::Model& model_;
  torch::Device device_;
  torch::Dtype dtype_;
  int64_t topk_;
  const std::vector<std::string>& names_;
  std::optional<rmt::batch::ClassesChunk> chunk_;
};

int merge(const std::string& dir, const rmt::tools::BatchFlags& batch) {
  const auto result = rmt::batch::merge_run(dir, rmt::tools::merge_options(batch));
  std::string files;
  for (const auto& f : result.written) fmt::format_to(std::back_inserter(files), " {}", f);
  fmt::print(stderr, "{}: merged {} inputs ({} failed to decode) into{}\n", kTool, result.inputs,
             result.failures, files);
  if (!result.note.empty()) fmt::print(stderr, "{}: note: {}\n", kTool, result.note);
  return kOk;
}

int run(int argc, char** argv) {
  CLI::App app{"Classifies images with an RMT ImageNet model: prints the top-k classes with their "
               "softmax probabilities, or, with --output DIR, writes them for a sharded, resumable "
               "run on many processes (torchrun, srun, Kubernetes Indexed Jobs). Preprocessing is "
               "the authors' evaluation transform (bicubic resize of the shorter side to input_size "
               "/ crop_pct as PIL does it, center crop, ImageNet mean/std)."};
  app.footer("Exit status: 0 when every image was classified, 2 when some inputs could not be "
             "read or decoded (the others are still classified), 1 on any other error. With "
             "--output, images that fail to decode are listed in the output and the status is 0.");
  rmt::tools::ModelFlags model_flags;
  rmt::tools::PreprocessFlags pre_flags;
  rmt::tools::BatchFlags batch;
  std::string labels_path;
  int64_t topk = 5;
  bool json = false;
  std::vector<std::string> inputs;
  rmt::tools::add_model_flags(app, model_flags,
                              rmt::tools::batch_model_spec({"classifier", "token_label"}, false));
  app.add_option("--topk", topk, "how many classes to print per image")
      ->check(CLI::PositiveNumber);
  rmt::tools::add_preprocess_flags(app, pre_flags);
  app.add_option("--labels", labels_path,
                 "class names, one per line (default: ImageNet-1k for 1000 classes, else "
                 "'class N')");
  app.add_flag("--json", json, "print one JSON document instead of text");
  rmt::tools::add_batch_flags(app, batch, false);
  app.add_option("inputs", inputs, "image files and directories (walked recursively)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!batch.merge_dir.empty()) {
    if (!inputs.empty() || !batch.file_lists.empty()) {
      throw std::invalid_argument("--merge DIR takes no inputs: they are the run's (DIR/inputs.txt)");
    }
    return merge(batch.merge_dir, batch);
  }
  if (inputs.empty() && batch.file_lists.empty()) {
    throw std::invalid_argument("give images or directories to classify, or --file-list FILE");
  }
  if (json && !batch.output.empty()) {
    throw std::invalid_argument("--json prints to stdout; with --output the results go to DIR");
  }
  const bool sharded = !batch.output.empty();
  const auto rank = sharded ? rmt::tools::rank_of(batch) : rmt::batch::RankInfo{};
  const auto dtype = rmt::tools::parse_dtype(model_flags.dtype_name);
  const torch::Device device = rmt::tools::device_for(model_flags.device_name, rank);
  const auto pre = rmt::tools::preprocess_options(pre_flags, model_flags);
  rmt::tools::apply_threads(batch);

  // The model.
  if (!model_flags.arch.empty() &&
      rmt::preset(model_flags.arch).kind == rmt::ModelKind::Dense) {
    throw std::invalid_argument(fmt::format(
        "--arch {}: a dense backbone has no classes; use a classifier preset", model_flags.arch));
  }
  auto model = rmt::tools::load_model(model_flags, device, kTool);
  const int64_t num_classes = model.config().num_classes;
  if (num_classes <= 0) {
    throw std::invalid_argument(
        fmt::format("the model has no classification head (num_classes = {})", num_classes));
  }
  const auto names = class_names(num_classes, labels_path);
  topk = std::min(topk, num_classes);
  c10::InferenceMode inference;  // no autograd records, no version counters

  if (sharded) {
    const auto listing = rmt::batch::list_inputs(inputs, batch.file_lists);
    for (const auto& d : listing.empty_directories) {
      fmt::print(stderr,
                 "{}: warning: {}: no images (.jpg .jpeg .png .bmp .gif) in this directory\n",
                 kTool, d);
    }
    if (listing.duplicates) {
      fmt::print(stderr,
                 "{}: warning: {} paths were given more than once: each is classified once\n",
                 kTool, listing.duplicates);
    }
    if (listing.files.empty()) throw std::invalid_argument("no images to classify");
    auto settings = rmt::tools::run_settings(model_flags, model, pre, pre_flags);
    std::string labels_text;
    for (const auto& n : names) fmt::format_to(std::back_inserter(labels_text), "{}\n", n);
    settings["topk"] = fmt::to_string(topk);
    settings["labels"] = rmt::batch::fingerprint_text(labels_text);
    ClassesSink sink(model, device, dtype, topk, names);
    rmt::batch::run_job(listing.files,
                        rmt::tools::job_options(kTool, batch, rmt::batch::ChunkFormat::Classes,
                                                pre, rank, settings),
                        sink, std::cerr);
    return kOk;
  }

  // The inputs.
  std::vector<Failure> failures;
  const auto files = collect_inputs(inputs, batch.file_lists, failures);
  for (const auto& f : failures) fmt::print(stderr, "{}: error: {}\n", kTool, f.message);
  const size_t path_failures = failures.size();

  nlohmann::ordered_json results = nlohmann::ordered_json::array();
  const size_t batch_size = static_cast<size_t>(batch.batch_size);
  Progress progress(files.size(), isatty(STDERR_FILENO) && !json &&
                                      files.size() > std::max<size_t>(batch_size, 32));
  const bool same_terminal = isatty(STDOUT_FILENO);
  std::vector<std::vector<rmt::batch::InputImage>> batches;
  for (size_t start = 0; start < files.size(); start += batch_size) {
    batches.emplace_back();
    for (size_t i = start; i < std::min(files.size(), start + batch_size); ++i) {
      batches.back().push_back({static_cast<int64_t>(i), files[i]});
    }
  }
  rmt::batch::Prefetcher prefetcher(std::move(batches), pre, rmt::tools::decode_threads(batch));
  progress.draw();
  size_t done = 0;
  while (auto decoded = prefetcher.next()) {
    at::Tensor probs, indices;
    if (!decoded->images.empty()) {
      std::tie(probs, indices) = top_classes(model, decoded->pixels, device, dtype, topk);
    }
    if (progress.enabled() && same_terminal) progress.clear();
    // Results and failures in input order.
    size_t g = 0, f = 0;
    while (g < decoded->images.size() || f < decoded->failures.size()) {
      if (f < decoded->failures.size() &&
          (g == decoded->images.size() ||
           decoded->failures[f].input.index < decoded->images[g].index)) {
        const auto& failure = decoded->failures[f++];
        fmt::print(stderr, "{}: error: {}\n", kTool, failure.error);
        failures.push_back({failure.input.path, failure.error});
        continue;
      }
      const auto& file = decoded->images[g].path;
      nlohmann::ordered_json predictions = nlohmann::ordered_json::array();
      if (!json) fmt::print("{}\n", file);
      for (int64_t k = 0; k < topk; ++k) {
        const int64_t index = indices[static_cast<int64_t>(g)][k].item<int64_t>();
        const double p = probs[static_cast<int64_t>(g)][k].item<float>();
        if (json) {
          predictions.push_back({{"index", index}, {"label", names[index]}, {"probability", p}});
        } else {
          fmt::print("  {:7.2f}%  {:5}  {}\n", 100.0 * p, index, names[index]);
        }
      }
      if (json) results.push_back({{"file", file}, {"predictions", predictions}});
      ++g;
    }
    std::fflush(stdout);
    done += decoded->images.size() + decoded->failures.size();
    progress.update(done);
  }
  progress.clear();

  if (json) {
    nlohmann::ordered_json errors = nlohmann::ordered_json::array();
    for (const auto& f : failures) errors.push_back({{"file", f.file}, {"error", f.message}});
    nlohmann::ordered_json doc = {
        {"model",
         {{"arch", model_flags.arch.empty() ? nlohmann::ordered_json(nullptr)
                                            : nlohmann::ordered_json(model_flags.arch)},
          {"config", model_flags.config_path.empty()
                         ? nlohmann::ordered_json(nullptr)
                         : nlohmann::ordered_json(model_flags.config_path)},
          {"kind", rmt::to_string(model.kind())},
          {"weights", model_flags.weights},
          {"num_classes", num_classes}}},
        {"preprocessing",
         {{"input_size", pre.input_size},
          {"resize", pre.resize_size()},
          {"crop_pct", pre.crop_pct},
          {"interpolation", "bicubic"},
          {"resize_order", pre_flags.pass_order}}},
        {"topk", topk},
        {"results", results},
        {"errors", errors}};
    fmt::print("{}\n", doc.dump(2));
  }
  if (!failures.empty()) {
    fmt::print(stderr, "{}: {} of {} inputs failed\n", kTool, failures.size(),
               files.size() + path_failures);
    return kSomeInputsFailed;
  }
  if (files.empty()) {
    fmt::print(stderr, "{}: error: no images to classify\n", kTool);
    return kSomeInputsFailed;
  }
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  return rmt::tools::run_tool(kTool, [&] { return run(argc, argv); });
}

// rmt-classify: classifies image files (JPEG, PNG, BMP, GIF) with an RMT ImageNet model, with the
// authors' evaluation preprocessing, and prints the top-k classes with their probabilities.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>

#include "tool_common.h"
#include "rmt/model.h"
#include "rmt/preprocess.h"

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
    if (!in) throw std::runtime_error(labels_path + ": cannot open the class names file");
    std::stringstream text;
    text << in.rdbuf();
    auto names = split_lines(text.str());
    if (static_cast<int64_t>(names.size()) != num_classes) {
      throw std::runtime_error(labels_path + ": expected " + std::to_string(num_classes) +
                               " class names (one per line, the model's num_classes), found " +
                               std::to_string(names.size()));
    }
    return names;
  }
  if (num_classes == 1000) return split_lines(rmt_imagenet_classes_text);
  std::vector<std::string> names;
  for (int64_t i = 0; i < num_classes; ++i) names.push_back("class " + std::to_string(i));
  return names;
}

struct Failure {
  std::string file, message;
};

// Files to classify, in order: files as given, directories walked recursively (sorted, image
// extensions only). Missing paths and unreadable directories become failures.
std::vector<std::string> collect_inputs(const std::vector<std::string>& args,
                                        std::vector<Failure>& failures) {
  std::vector<std::string> files;
  for (const auto& arg : args) {
    std::error_code ec;
    const auto status = fs::status(arg, ec);
    if (ec || !fs::exists(status)) {
      failures.push_back({arg, arg + ": no such file or directory"});
      continue;
    }
    if (!fs::is_directory(status)) {
      files.push_back(arg);
      continue;
    }
    std::vector<std::string> found;
    try {
      for (fs::recursive_directory_iterator it(arg, fs::directory_options::skip_permission_denied),
           end;
           it != end; it.increment(ec)) {
        if (ec) break;
        std::error_code file_ec;
        if (it->is_regular_file(file_ec) && rmt::has_image_extension(it->path().string())) {
          found.push_back(it->path().string());
        }
      }
    } catch (const fs::filesystem_error& e) {
      ec = e.code();
    }
    if (ec) failures.push_back({arg, arg + ": cannot walk the directory (" + ec.message() + ")"});
    std::sort(found.begin(), found.end());
    if (found.empty() && !ec) {
      std::cerr << kTool << ": warning: " << arg
                << ": no images (.jpg .jpeg .png .bmp .gif) in this directory\n";
    }
    files.insert(files.end(), found.begin(), found.end());
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
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r\033[2K[%s] %zu/%zu images  %.1f images/s", bar.c_str(), done_,
                 total_, seconds > 0 ? done_ / seconds : 0.0);
    std::fflush(stderr);
  }
  bool enabled() const { return enabled_; }

 private:
  size_t total_, done_ = 0;
  bool enabled_;
  std::chrono::steady_clock::time_point start_;
};

std::string percent(double p) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%7.2f%%", 100.0 * p);
  return buffer;
}

int run(int argc, char** argv) {
  CLI::App app{"Classifies images with an RMT ImageNet model: prints the top-k classes with their "
               "softmax probabilities. Preprocessing is the authors' evaluation transform "
               "(bicubic resize of the shorter side to input_size / crop_pct as PIL does it, "
               "center crop, ImageNet mean/std)."};
  app.footer("Exit status: 0 when every image was classified, 2 when some inputs could not be "
             "read or decoded (the others are still classified), 1 on any other error.");
  std::string arch, config_path, kind_name = "classifier", weights, weights_key = "auto",
                                 key_prefix, dtype_name = "float32", device_name = "cpu",
                                 labels_path, pass_order = "pillow13";
  int64_t topk = 5, batch_size = 16, input_size = 224;
  double crop_pct = 0.9;
  bool json = false, non_strict = false;
  std::vector<std::string> inputs;
  auto* arch_opt = app.add_option("--arch", arch, "preset name: " + [] {
    std::string names;
    for (const auto& n : rmt::preset_names()) {
      if (n.find("dense") == std::string::npos) names += (names.empty() ? "" : ", ") + n;
    }
    return names;
  }());
  auto* config_opt =
      app.add_option("--config", config_path, "JSON file with the constructor arguments");
  arch_opt->excludes(config_opt);
  app.add_option("--kind", kind_name, "with --config: classifier or token_label")
      ->check(CLI::IsMember({"classifier", "token_label"}));
  app.add_option("--weights", weights, "checkpoint: torch.save (.pth) or safetensors")->required();
  app.add_option("--weights-key", weights_key,
                 "entry holding the weights (auto: model, state_dict, model_ema, ...)");
  app.add_option("--key-prefix", key_prefix, "keep only keys with this prefix, removed");
  app.add_flag("--non-strict", non_strict,
               "load the matching keys and report the others instead of failing");
  app.add_option("--topk", topk, "how many classes to print per image")
      ->check(CLI::PositiveNumber);
  app.add_option("--device", device_name, "cpu or cuda");
  app.add_option("--dtype", dtype_name, "float32, float64, float16 or bfloat16");
  app.add_option("--batch-size", batch_size, "images per forward pass")
      ->check(CLI::Range(int64_t(1), int64_t(4096)));
  app.add_option("--input-size", input_size, "side of the square crop the model sees")
      ->check(CLI::Range(int64_t(16), int64_t(4096)));
  app.add_option("--crop-pct", crop_pct,
                 "the shorter side is resized to floor(input_size / crop_pct) before cropping")
      ->check(CLI::Range(0.05, 1.0));
  app.add_option("--resize-order", pass_order,
                 "PIL's order of resize passes: pillow13 (Pillow >= 13) or horizontal-first "
                 "(Pillow <= 12); differs only for images about twice as tall as wide")
      ->check(CLI::IsMember({"pillow13", "horizontal-first"}));
  app.add_option("--labels", labels_path,
                 "class names, one per line (default: ImageNet-1k for 1000 classes, else "
                 "'class N')");
  app.add_flag("--json", json, "print one JSON document instead of text");
  app.add_option("inputs", inputs, "image files and directories (walked recursively)")
      ->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (arch.empty() && config_path.empty()) {
    throw std::invalid_argument("give --arch NAME or --config FILE.json");
  }
  const auto dtype = rmt::tools::parse_dtype(dtype_name);
  const torch::Device device = rmt::tools::parse_device(device_name);

  rmt::PreprocessOptions pre;
  pre.input_size = input_size;
  pre.crop_pct = crop_pct;
  pre.pass_order = pass_order == "pillow13" ? rmt::PillowPassOrder::Pillow13
                                            : rmt::PillowPassOrder::HorizontalFirst;
  pre.validate();

  // The model.
  std::optional<rmt::Model> model;
  if (!arch.empty()) {
    model.emplace(rmt::Model::from_preset(arch));
  } else {
    model.emplace(rmt::config_from_json_file(config_path), rmt::model_kind_from_string(kind_name));
  }
  if (model->kind() == rmt::ModelKind::Dense) {
    throw std::invalid_argument("--arch " + arch +
                                ": a dense backbone has no classes; use a classifier preset");
  }
  const int64_t num_classes = model->config().num_classes;
  if (num_classes <= 0) {
    throw std::invalid_argument("the model has no classification head (num_classes = " +
                                std::to_string(num_classes) + ")");
  }
  const auto names = class_names(num_classes, labels_path);
  topk = std::min(topk, num_classes);
  rmt::WeightsSelection selection;
  selection.weights_key = weights_key;
  selection.key_prefix = key_prefix;
  auto report = model->load(weights, selection, !non_strict);
  if (!report.ok()) std::cerr << kTool << ": warning: " << report.summary() << "\n";
  model->to(device, dtype);
  model->eval();

  // The inputs.
  std::vector<Failure> failures;
  const auto files = collect_inputs(inputs, failures);
  for (const auto& f : failures) std::cerr << kTool << ": error: " << f.message << "\n";
  const size_t path_failures = failures.size();

  nlohmann::ordered_json results = nlohmann::ordered_json::array();
  Progress progress(files.size(), isatty(STDERR_FILENO) && !json &&
                                      files.size() > static_cast<size_t>(std::max<int64_t>(batch_size, 32)));
  const bool same_terminal = isatty(STDOUT_FILENO);
  torch::NoGradGuard no_grad;
  progress.draw();
  for (size_t start = 0; start < files.size(); start += static_cast<size_t>(batch_size)) {
    const size_t count = std::min(files.size() - start, static_cast<size_t>(batch_size));
    std::vector<at::Tensor> tensors(count);
    std::vector<std::string> errors(count);
    at::parallel_for(0, static_cast<int64_t>(count), 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        try {
          tensors[i] = rmt::load_image(files[start + i], pre);
        } catch (const std::exception& e) {
          errors[i] = e.what();
        }
      }
    });
    std::vector<at::Tensor> good;
    std::vector<size_t> good_index;
    for (size_t i = 0; i < count; ++i) {
      if (errors[i].empty()) {
        good.push_back(tensors[i]);
        good_index.push_back(start + i);
      }
    }
    at::Tensor probs, indices;
    if (!good.empty()) {
      auto logits = model->forward(at::stack(good).to(device, dtype)).front();
      auto top = logits.to(at::kFloat).softmax(1).topk(topk, 1);
      probs = std::get<0>(top).cpu();
      indices = std::get<1>(top).cpu();
    }
    if (progress.enabled() && same_terminal) progress.clear();
    size_t g = 0;
    for (size_t i = 0; i < count; ++i) {
      const auto& file = files[start + i];
      if (!errors[i].empty()) {
        std::cerr << kTool << ": error: " << errors[i] << "\n";
        failures.push_back({file, errors[i]});
        continue;
      }
      nlohmann::ordered_json predictions = nlohmann::ordered_json::array();
      if (!json) std::cout << file << "\n";
      for (int64_t k = 0; k < topk; ++k) {
        const int64_t index = indices[g][k].item<int64_t>();
        const double p = probs[g][k].item<float>();
        if (json) {
          predictions.push_back({{"index", index}, {"label", names[index]}, {"probability", p}});
        } else {
          char idx[16];
          std::snprintf(idx, sizeof idx, "%5lld", static_cast<long long>(index));
          std::cout << "  " << percent(p) << "  " << idx << "  " << names[index] << "\n";
        }
      }
      if (json) results.push_back({{"file", file}, {"predictions", predictions}});
      ++g;
    }
    std::cout.flush();
    progress.update(start + count);
  }
  progress.clear();

  if (json) {
    nlohmann::ordered_json errors = nlohmann::ordered_json::array();
    for (const auto& f : failures) errors.push_back({{"file", f.file}, {"error", f.message}});
    nlohmann::ordered_json doc = {
        {"model",
         {{"arch", arch.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(arch)},
          {"config", config_path.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(config_path)},
          {"kind", rmt::to_string(model->kind())},
          {"weights", weights},
          {"num_classes", num_classes}}},
        {"preprocessing",
         {{"input_size", pre.input_size},
          {"resize", pre.resize_size()},
          {"crop_pct", pre.crop_pct},
          {"interpolation", "bicubic"},
          {"resize_order", pass_order}}},
        {"topk", topk},
        {"results", results},
        {"errors", errors}};
    std::cout << doc.dump(2) << "\n";
  }
  if (!failures.empty()) {
    std::cerr << kTool << ": " << failures.size() << " of " << files.size() + path_failures
              << " inputs failed\n";
    return kSomeInputsFailed;
  }
  if (files.empty()) {
    std::cerr << kTool << ": error: no images to classify\n";
    return kSomeInputsFailed;
  }
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  return rmt::tools::run_tool(kTool, [&] { return run(argc, argv); });
}

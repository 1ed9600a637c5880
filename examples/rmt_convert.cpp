// rmt-convert: a checkpoint's weights (torch.save .pth, zip or legacy, or safetensors) to a
// safetensors file with metadata, checked to load into a model when one is named. The output is
// written to a temporary file next to it, read back and compared, then renamed into place, so a
// failure never leaves a half-written file; the input is never overwritten.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <string>
#include <unordered_set>

#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "model_flags.h"
#include "rmt/io/checkpoint.h"
#include "rmt/io/state_dict.h"
#include "rmt/io/untrusted.h"
#include "rmt/models/model.h"
#include "rmt/version.h"
#include "tool_common.h"

namespace {

std::string base_name(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Removes the temporary file unless it was renamed into place.
class TempFile {
 public:
  explicit TempFile(std::string path) : path_(std::move(path)) {}
  ~TempFile() {
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }
  void commit(const std::string& destination) {
    if (::rename(path_.c_str(), destination.c_str()) != 0) {
      throw std::runtime_error(
          fmt::format("cannot rename {} to {}: {}", path_, destination, std::strerror(errno)));
    }
    path_.clear();
  }

 private:
  std::string path_;
};

// The same dtype, shape and bytes (NaNs included, which torch::equal would call different).
bool bit_identical(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || !a.sizes().equals(b.sizes())) return false;
  const at::Tensor x = a.contiguous(), y = b.contiguous();
  return x.nbytes() == y.nbytes() &&
         (x.nbytes() == 0 || std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) == 0);
}

// Refuses weights whose safetensors copy would be far larger than the tensor data the checkpoint
// holds: tensors that view one storage (many names for one tensor, stride-0 views) are written
// once each, so a small file could otherwise make a huge one.
void check_not_inflated(const rmt::StateDict& weights, const std::string& input) {
  using Bytes = unsigned __int128;
  Bytes to_write = 0, held = 0;
  std::unordered_set<const void*> storages;
  for (const auto& item : weights) {
    const at::Tensor& t = item.value();
    to_write += static_cast<Bytes>(t.numel()) * t.element_size();
    if (storages.insert(t.storage().unsafeGetStorageImpl()).second) held += t.storage().nbytes();
  }
  constexpr Bytes kSlack = Bytes(256) << 20;
  if (to_write > held + kSlack) {
    throw std::runtime_error(fmt::format(
        "{}: its {} tensors would take {} bytes as safetensors, but the checkpoint holds only {} "
        "bytes of tensor data (its tensors repeat or overlap the same data, which safetensors "
        "cannot share); refusing to inflate it",
        input, weights.size(), to_write, held));
  }
}

int run(int argc, char** argv) {
  CLI::App app{"Converts the weights of a checkpoint (torch.save .pth or safetensors) to a "
               "safetensors file with metadata (source, weights key, and with --arch or --config "
               "the model's configuration, after checking that the weights load into it)."};
  std::string input, output;
  bool force = false, quiet = false;
  app.add_option("input", input, "the checkpoint to read")->required();
  app.add_option("output", output, "the safetensors file to write")->required();
  // The model the weights must load into, if any; the weights are the input file.
  rmt::tools::ModelFlags model_flags;
  rmt::tools::ModelFlagsSpec spec;
  spec.arch_help = "a preset the weights must load into (strictly)";
  spec.config_help = "JSON file with the constructor arguments the weights must load into";
  spec.weights_help = "";
  spec.run = false;
  spec.module_prefix_flag = true;
  rmt::tools::add_model_flags(app, model_flags, spec);
  app.add_flag("--force", force, "replace the output file if it exists (never the input)");
  app.add_flag("-q,--quiet", quiet, "print nothing on success");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  const auto& arch = model_flags.arch;
  const auto& config_path = model_flags.config_path;
  const auto& key_prefix = model_flags.select.key_prefix;
  const bool keep_module = model_flags.select.keep_module_prefix;

  // Refuse before reading anything: the output must not be the input, nor an existing file
  // unless --force.
  struct stat in_st {}, out_st {};
  const bool out_exists = ::stat(output.c_str(), &out_st) == 0;
  if (output == input ||
      (out_exists && ::stat(input.c_str(), &in_st) == 0 && in_st.st_dev == out_st.st_dev &&
       in_st.st_ino == out_st.st_ino)) {
    throw std::invalid_argument(
        fmt::format("{} is the input file: refusing to overwrite it", output));
  }
  if (out_exists && S_ISDIR(out_st.st_mode)) {
    throw std::invalid_argument(fmt::format("{} is a directory; give the file to write", output));
  }
  if (out_exists && !force) {
    throw std::invalid_argument(fmt::format("{} exists (give --force to replace it)", output));
  }

  const rmt::CheckpointContents contents = rmt::read_checkpoint(input);
  const rmt::SelectedWeights selected = rmt::select_weights(contents, model_flags.select.selection());
  const rmt::StateDict& weights = selected.weights;
  check_not_inflated(weights, input);

  // The source's own safetensors metadata is kept; ours replaces entries of the same name.
  std::map<std::string, std::string> metadata = contents.metadata;
  metadata["format"] = "pt";
  metadata["source"] = base_name(input);
  metadata["source_format"] = contents.format;
  metadata["weights_key"] = selected.entry;
  if (!key_prefix.empty()) metadata["key_prefix"] = key_prefix;
  if (keep_module) metadata["module_prefix_kept"] = "true";
  metadata["converted_by"] = fmt::format("rmt-convert {}", rmt::version());

  if (model_flags.given()) {
    const rmt::Model model = model_flags.build();
    std::string what;
    if (!arch.empty()) {
      metadata["arch"] = arch;
      what = fmt::format("preset {}", arch);
    } else {
      what = fmt::format("the config {} ({})", config_path, model_flags.kind_name);
    }
    metadata["kind"] = rmt::to_string(model.kind());
    metadata["config"] = model.config().to_json(model.kind());  // readable back as --config
    try {
      rmt::load_state_dict(*model.module(), weights, /*strict=*/true);
    } catch (const c10::Error& e) {
      throw std::runtime_error(rmt::cut_message(fmt::format(
          "the weights of {} do not load into {}: {}", input, what, e.what_without_backtrace())));
    } catch (const std::exception& e) {
      throw std::runtime_error(rmt::cut_message(
          fmt::format("the weights of {} do not load into {}: {}", input, what, e.what())));
    }
  }

  TempFile temp(fmt::format("{}.partial-{}", output, ::getpid()));
  try {
    rmt::save_safetensors(temp.path(), weights, metadata);
  } catch (const std::exception& e) {
    throw std::runtime_error(
        rmt::cut_message(fmt::format("cannot write {}: {}", output, e.what())));
  }
  // Read back what was written before it takes the output's name.
  rmt::WeightsSelection exact;
  exact.weights_key = "";
  exact.strip_module_prefix = false;
  const rmt::StateDict back = rmt::read_state_dict(temp.path(), exact);
  if (back.size() != weights.size()) {
    throw std::runtime_error(
        fmt::format("cannot write {}: the file read back holds {} tensors instead of {}", output,
                    back.size(), weights.size()));
  }
  for (const auto& item : weights) {
    const at::Tensor* written = back.find(item.key());
    if (!written || !bit_identical(*written, item.value())) {
      throw std::runtime_error(fmt::format("cannot write {}: tensor '{}' reads back differently",
                                           output, rmt::escape_and_cut(item.key())));
    }
  }
  temp.commit(output);

  if (!quiet) {
    rmt::CountSum elements;
    for (const auto& item : weights) elements.add(item.value().numel());
    const std::string& key = metadata["weights_key"];
    fmt::print("rmt-convert: wrote {}: {} tensors, {}{} elements, from {} of {} ({}){}\n", output,
               weights.size(), elements.saturated() ? "more than " : "", elements.value(),
               key.empty() ? std::string("the top-level dict")
                           : fmt::format("entry '{}'", rmt::escape_and_cut(key)),
               input, contents.format,
               arch.empty() && config_path.empty()
                   ? std::string()
                   : fmt::format("; they load into {}", !arch.empty() ? arch : config_path));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return rmt::tools::run_tool("rmt-convert", [&] { return run(argc, argv); });
}

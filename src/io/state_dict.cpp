#include "rmt/io/state_dict.h"

#include <iterator>
#include <stdexcept>
#include <unordered_map>

#include <fmt/format.h>
#include <torch/nn/module.h>

#include "rmt/io/untrusted.h"
#include "runtime/tensor_text.h"

namespace rmt {

namespace {

void collect(const torch::nn::Module& module, const std::string& prefix, StateDict& out) {
  for (const auto& item : module.named_parameters(/*recurse=*/false)) {
    out.insert(prefix + item.key(), item.value());
  }
  for (const auto& item : module.named_buffers(/*recurse=*/false)) {
    out.insert(prefix + item.key(), item.value());
  }
  for (const auto& child : module.named_children()) {
    collect(*child.value(), prefix + child.key() + ".", out);
  }
}


// Keys of a list, escaped and cut, as many as `budget` bytes hold, then a count of the others
// (names come from the file: a message listing all of them could be megabytes long, with terminal
// control bytes in it). LoadReport keeps them all.
void append_list(std::string& out, const char* title, const std::vector<std::string>& keys,
                 size_t budget) {
  if (keys.empty()) return;
  fmt::format_to(std::back_inserter(out), "\n  {} ({}):", title, keys.size());
  size_t used = 0, shown = 0;
  for (const auto& key : keys) {
    const std::string line = fmt::format("\n    {}", escape_and_cut(key, 100));
    if (used + line.size() > budget) break;
    out += line;
    used += line.size();
    ++shown;
  }
  if (shown < keys.size()) {
    fmt::format_to(std::back_inserter(out), "\n    ... ({} more)", keys.size() - shown);
  }
}

}  // namespace

StateDict state_dict(const torch::nn::Module& module) {
  StateDict out;
  collect(module, "", out);
  return out;
}

std::string LoadReport::summary() const {
  std::string out = fmt::format("{} missing, {} unexpected, {} mis-shaped keys", missing.size(),
                                unexpected.size(), mismatched.size());
  // The lists share what a message may hold (under 1 KB with its context) fairly.
  const size_t lists = !missing.empty() + !unexpected.empty() + !mismatched.empty();
  const size_t budget = lists ? 720 / lists : 0;
  append_list(out, "missing", missing, budget);
  append_list(out, "unexpected", unexpected, budget);
  append_list(out, "mis-shaped", mismatched, budget);
  return cut_message(std::move(out), kMaxMessageBytes - 100);
}

LoadReport load_state_dict(torch::nn::Module& module, const StateDict& weights, bool strict) {
  auto own = state_dict(module);
  LoadReport report;
  for (const auto& item : own) {
    const auto* found = weights.find(item.key());
    if (!found) {
      report.missing.push_back(item.key());
    } else if (found->sizes() != item.value().sizes()) {
      report.mismatched.push_back(fmt::format("{}: expected {}, found {}", item.key(),
                                              text::shape(item.value().sizes()),
                                              text::shape(found->sizes())));
    } else if (at::isFloatingType(item.value().scalar_type()) !=
               at::isFloatingType(found->scalar_type())) {
      report.mismatched.push_back(fmt::format("{}: expected a {} tensor, found {}", item.key(),
                                              c10::toString(item.value().scalar_type()),
                                              c10::toString(found->scalar_type())));
    }
  }
  for (const auto& item : weights) {
    if (!own.contains(item.key())) report.unexpected.push_back(item.key());
  }
  if (!report.mismatched.empty() || (strict && !report.ok())) {
    throw std::runtime_error(
        fmt::format("load_state_dict: the weights do not fit the model: {}", report.summary()));
  }
  at::NoGradGuard no_grad;
  for (auto& item : own) {
    if (const auto* found = weights.find(item.key())) item.value().copy_(*found);
  }
  return report;
}

LoadReport load_weights(torch::nn::Module& module, const std::string& path,
                        const WeightsSelection& selection, bool strict) {
  auto weights = read_state_dict(path, selection);
  try {
    return load_state_dict(module, weights, strict);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(cut_message(fmt::format("{}: {}", path, e.what())));
  }
}

void move_to(torch::nn::Module& module, torch::Device device, std::optional<at::ScalarType> dtype) {
  // Like PyTorch's Module.to(dtype): only floating-point tensors change dtype, so integer buffers
  // such as BatchNorm's num_batches_tracked stay int64.
  at::NoGradGuard no_grad;
  for (auto& item : state_dict(module)) {
    auto& tensor = item.value();
    const bool cast = dtype && at::isFloatingType(tensor.scalar_type());
    tensor.set_data(tensor.to(device, cast ? *dtype : tensor.scalar_type()));
  }
}

}  // namespace rmt

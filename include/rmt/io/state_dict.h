#pragma once
// A module's state_dict in PyTorch's order and names, and loading one into a module.

#include <optional>
#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "rmt/io/checkpoint.h"

namespace rmt {

// Parameters and buffers, named and ordered as PyTorch's Module.state_dict() does (a module's own
// parameters, then its own buffers, then its children in registration order).
StateDict state_dict(const torch::nn::Module& module);

struct LoadReport {
  std::vector<std::string> missing;     // in the module, not in the weights
  std::vector<std::string> unexpected;  // in the weights, not in the module
  std::vector<std::string> mismatched;  // "key: expected [..], found [..]"
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  // The counts and the first keys of each list, as many as fit (escaped, cut): under 1 KB.
  std::string summary() const;
};

// Copies the weights into the module's parameters and buffers, casting to their dtype and device.
// strict: any missing, unexpected or mis-shaped key throws std::runtime_error counting them and
// naming the first of each kind, as many as fit in 1 KB (LoadReport::summary), and nothing is
// changed. Non-strict: matching keys are loaded, the rest is reported (mis-shaped keys
// still throw: a wrong shape is never a partial match).
LoadReport load_state_dict(torch::nn::Module& module, const StateDict& weights, bool strict = true);

// read_state_dict + load_state_dict.
LoadReport load_weights(torch::nn::Module& module, const std::string& path,
                        const WeightsSelection& selection = {}, bool strict = true);

// Moves every parameter and buffer to `device` and casts the floating-point ones to `dtype`
// (integer buffers such as BatchNorm's num_batches_tracked keep their dtype, as in PyTorch).
void move_to(torch::nn::Module& module, torch::Device device,
             std::optional<at::ScalarType> dtype = std::nullopt);

}  // namespace rmt

#pragma once
// Access to the authors' reference numbers for the tests.

#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "rmt/models/model.h"

namespace rmt::test {

// tests/data (small copies of the reference files, always present).
std::string data_path(const std::string& file);
// The full reference folder (../shared/reference); may be absent outside this project's machines.
std::string reference_path(const std::string& file);
bool reference_available(const std::string& file);
// Where a reference file is: tests/data if it is there, else the reference folder.
std::string find_reference_file(const std::string& file);

// manifest.json's case of that name.
nlohmann::json manifest_case(const std::string& name);

// A manifest entry's model: its preset (a "config" that is a name) or its config, untrained.
rmt::Model build_manifest_model(const nlohmann::json& entry);

// A manifest case ready to run: its model with the reference weights, in eval mode, and the input
// and the authors' outputs as stored.
struct ReferenceCase {
  rmt::Model model;
  at::Tensor input;
  std::vector<at::Tensor> expected;
};
ReferenceCase load_manifest_case(const std::string& name);

// ||actual - expected|| / ||expected|| in float64.
double relative_error(const at::Tensor& actual, const at::Tensor& expected);

}  // namespace rmt::test

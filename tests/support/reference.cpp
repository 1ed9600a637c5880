#include "reference.h"

#include <fstream>
#include <utility>
#include <stdexcept>
#include <sys/stat.h>

#include <gtest/gtest.h>

#include "rmt/io/npy.h"
#include "rmt/models/config.h"

namespace rmt::test {

namespace {
bool exists(const std::string& path) {
  struct stat info {};
  return stat(path.c_str(), &info) == 0;
}
}  // namespace

std::string data_path(const std::string& file) { return std::string(RMT_TEST_DATA_DIR) + "/" + file; }

std::string reference_path(const std::string& file) {
  return std::string(RMT_REFERENCE_DIR) + "/" + file;
}

bool reference_available(const std::string& file) { return exists(reference_path(file)); }

std::string find_reference_file(const std::string& file) {
  return exists(data_path(file)) ? data_path(file) : reference_path(file);
}

nlohmann::json manifest_case(const std::string& name) {
  std::ifstream in(data_path("manifest.json"));
  if (!in) throw std::runtime_error("cannot open " + data_path("manifest.json"));
  auto manifest = nlohmann::json::parse(in);
  for (const auto& entry : manifest.at("cases")) {
    if (entry.at("name") == name) return entry;
  }
  throw std::runtime_error("no case '" + name + "' in manifest.json");
}

double relative_error(const at::Tensor& actual, const at::Tensor& expected) {
  auto a = actual.detach().to(at::kCPU, at::kDouble);
  auto e = expected.detach().to(at::kCPU, at::kDouble);
  if (a.sizes() != e.sizes()) {
    throw std::runtime_error("relative_error: shapes differ");
  }
  return (a - e).norm().item<double>() / e.norm().item<double>();
}

rmt::Model build_manifest_model(const nlohmann::json& entry) {
  const auto kind = rmt::model_kind_from_string(entry.at("kind"));
  if (entry.at("config").is_string()) {
    auto p = rmt::preset(entry.at("config").get<std::string>());
    EXPECT_EQ(p.kind, kind);
    return rmt::Model(p.config, kind);
  }
  return rmt::Model(rmt::config_from_json(entry.at("config").dump()), kind);
}

ReferenceCase load_manifest_case(const std::string& name) {
  const auto entry = manifest_case(name);
  auto model = build_manifest_model(entry);
  rmt::WeightsSelection selection;
  selection.weights_key = entry.at("weights_key");
  if (entry.contains("key_prefix")) selection.key_prefix = entry.at("key_prefix");
  model.load(find_reference_file(entry.at("checkpoint")), selection);
  model.eval();
  std::vector<at::Tensor> expected;
  for (const auto& file : entry.at("outputs")) expected.push_back(rmt::read_npy(find_reference_file(file)));
  return {std::move(model), rmt::read_npy(find_reference_file(entry.at("input"))), std::move(expected)};
}

}  // namespace rmt::test

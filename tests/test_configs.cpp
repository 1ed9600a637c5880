// Configurations beyond the presets, against the authors' code (tests/data/configs, made by
// tests/data/gen/make_config_cases.py): every case their constructors accept computes their numbers
// in float64 and float32 with both backends; every case they refuse, compute NaN for, or that rmt
// refuses by choice is refused with a message naming the field.
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

#include <gtest/gtest.h>
#include <unistd.h>

#include "reference.h"
#include "rmt/rmt.h"
#include "tool_runner.h"

namespace {

using rmt::test::relative_error;

std::string config_path(const std::string& file) { return rmt::test::data_path("configs/" + file); }

const nlohmann::json& manifest() {
  static const nlohmann::json m = [] {
    std::ifstream in(config_path("manifest.json"));
    if (!in) throw std::runtime_error("cannot open " + config_path("manifest.json"));
    return nlohmann::json::parse(in);
  }();
  return m;
}

std::vector<std::string> names_of(const char* list) {
  std::vector<std::string> names;
  for (const auto& entry : manifest().at(list)) names.push_back(entry.at("name"));
  return names;
}

const nlohmann::json& entry_of(const char* list, const std::string& name) {
  for (const auto& entry : manifest().at(list)) {
    if (entry.at("name") == name) return entry;
  }
  throw std::runtime_error("no case " + name);
}

std::string test_name(const ::testing::TestParamInfo<std::string>& info) { return info.param; }

// --- what the authors' code computes ---------------------------------------------------------

class AcceptedConfig : public ::testing::TestWithParam<std::string> {};

TEST_P(AcceptedConfig, ComputesTheAuthorsNumbersInFloat64AndFloat32) {
  const auto& entry = entry_of("cases", GetParam());
  const auto kind = rmt::model_kind_from_string(entry.at("kind"));
  rmt::Model model(rmt::config_from_json(entry.at("config").dump(), kind), kind);
  // The authors' state_dict, every key and shape: strict loading.
  model.load(config_path(entry.at("checkpoint")));
  model.train(entry.at("mode") == "train");
  const auto input = rmt::read_npy(config_path(entry.at("input")));
  std::vector<at::Tensor> expected;
  for (const auto& file : entry.at("outputs")) expected.push_back(rmt::read_npy(config_path(file)));
  if (kind == rmt::ModelKind::Dense) {
    EXPECT_EQ(model.config().selected_stages(), entry.at("stages").get<std::vector<int64_t>>());
  }
  for (auto backend : {rmt::nn::Backend::Fused, rmt::nn::Backend::Reference}) {
    const auto tag = backend == rmt::nn::Backend::Fused ? "fused" : "reference";
    model.set_backend(backend);
    for (auto [dtype, tolerance] : {std::pair{at::kDouble, 1e-10}, std::pair{at::kFloat, 1e-5}}) {
      model.to(torch::kCPU, dtype);
      torch::NoGradGuard no_grad;
      const auto outputs = model.forward(input.to(dtype));
      ASSERT_EQ(outputs.size(), expected.size()) << tag;
      for (size_t i = 0; i < outputs.size(); ++i) {
        ASSERT_EQ(outputs[i].sizes(), expected[i].sizes()) << tag << " output " << i;
        const double error = relative_error(outputs[i], expected[i]);
        EXPECT_LT(error, tolerance) << tag << " " << c10::toString(dtype) << " output " << i;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Authors, AcceptedConfig, ::testing::ValuesIn(names_of("cases")), test_name);

// --- what it refuses -------------------------------------------------------------------------

std::string refusal_of(const std::function<void()>& build) {
  try {
    build();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

bool names_field(const std::string& message, const std::string& field) {
  return std::regex_search(message, std::regex("(^|[^a-z_])" + field + "([^a-z_]|$)"));
}

class RefusedConfig : public ::testing::TestWithParam<std::string> {};

TEST_P(RefusedConfig, IsRefusedNamingTheField) {
  const auto& entry = entry_of("refused", GetParam());
  const auto kind = rmt::model_kind_from_string(entry.at("kind"));
  const std::string field = entry.at("refuse_naming");
  const auto text = entry.at("config").dump();
  const auto message = refusal_of([&] { rmt::Model(rmt::config_from_json(text, kind), kind); });
  ASSERT_FALSE(message.empty()) << "accepted: " << text << " (the authors: " << entry.at("authors") << ")";
  EXPECT_TRUE(names_field(message, field)) << message;
  EXPECT_LT(message.size(), 1024u) << message;
  std::cout << "[ refused  ] " << GetParam() << ": " << message << "\n";
  // Read without the kind (every kind's keys accepted), a value the kind cannot use is still
  // refused when the model is built.
  // (A key of another kind's constructor is accepted there: only the kind's parser refuses it.)
  const bool foreign_key =
      entry.at("config").contains(field) &&
      refusal_of([&] {
        rmt::config_from_json("{\"" + field + "\": " + entry.at("config").at(field).dump() + "}", kind);
      }).find("not an argument") != std::string::npos;
  if (!foreign_key && field != "token_label") {
    const auto late = refusal_of([&] { rmt::Model(rmt::config_from_json(text), kind); });
    EXPECT_TRUE(names_field(late, field)) << late;
  }
}

INSTANTIATE_TEST_SUITE_P(Authors, RefusedConfig, ::testing::ValuesIn(names_of("refused")), test_name);

TEST(Manifest, RecordsHowTheReferenceWasMade) {
  const auto& v = manifest().at("versions");
  for (const char* key : {"official_repo_commit", "torch", "timm", "numpy", "python"}) {
    EXPECT_TRUE(v.contains(key)) << key;
  }
  // Every kind with 1 to 5 stages among the accepted cases.
  std::set<std::pair<std::string, size_t>> seen;
  for (const auto& entry : manifest().at("cases")) {
    seen.insert({entry.at("kind"), entry.at("config").at("depths").size()});
  }
  for (const std::string kind : {"classifier", "token_label", "dense"}) {
    for (size_t stages = 1; stages <= 5; ++stages) {
      EXPECT_TRUE(seen.count({kind, stages})) << kind << " with " << stages << " stages";
    }
  }
}

// rmt-infer names each dense output file by the stage it holds, whatever the order of out_indices.
class InferDense : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("rmt_test_configs_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { rmt::test::remove_tree(dir_.string()); }

  rmt::test::ToolResult infer(const nlohmann::json& entry, const nlohmann::json& config,
                              std::vector<std::string> extra = {}) {
    const auto path = (dir_ / "config.json").string();
    std::ofstream(path) << config.dump();
    std::vector<std::string> args = {"--config", path, "--kind", entry.at("kind"),
                                     "--weights", config_path(entry.at("checkpoint")),
                                     "--input", config_path(entry.at("input")),
                                     "--output", (dir_ / "out").string(), "--dtype", "float64"};
    args.insert(args.end(), extra.begin(), extra.end());
    bool exists = false;
    auto r = rmt::test::run_tool("rmt-infer", args, dir_, &exists);
    if (!exists) ADD_FAILURE() << rmt::test::tool_path("rmt-infer") << " does not exist: build it first";
    return r;
  }
  std::filesystem::path dir_;
};

TEST_F(InferDense, FilesAreNamedByTheStageTheyHold) {
  const auto& entry = entry_of("cases", "dense_out30");  // out_indices [3, 0]
  const auto r = infer(entry, entry.at("config"),
                       {"--compare", config_path("dense_out30.stage0.npy"),
                        config_path("dense_out30.stage3.npy")});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("stage 0 [1, 4, 10, 7]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("stage 3 [1, 12, 2, 1]"), std::string::npos) << r.out;
  for (const int stage : {0, 3}) {
    const auto file = "out.stage" + std::to_string(stage) + ".npy";
    ASSERT_TRUE(std::filesystem::exists(dir_ / file)) << file;
    const auto expected = rmt::read_npy(config_path("dense_out30.stage" + std::to_string(stage) + ".npy"));
    EXPECT_LT(relative_error(rmt::read_npy((dir_ / file).string()), expected), 1e-10) << file;
  }
  size_t written = 0;
  for (const auto& f : std::filesystem::directory_iterator(dir_)) written += f.path().extension() == ".npy";
  EXPECT_EQ(written, 2u);
}

TEST_F(InferDense, RefusesNothingToWriteAndOutOfRangeStages) {
  const auto& entry = entry_of("cases", "dense_out30");
  auto config = entry.at("config");
  config["out_indices"] = nlohmann::json::array();
  auto r = infer(entry, config);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("rmt-infer: error: the config's out_indices selects none of the 4 stages"),
            std::string::npos) << r.err;
  config["out_indices"] = {0, 4};
  r = infer(entry, config);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("out_indices [0, 4] has 4"), std::string::npos) << r.err;
  config = entry.at("config");
  config["num_classes"] = 3;
  r = infer(entry, config);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("'num_classes' is not an argument of the dense backbone"), std::string::npos) << r.err;
}

}  // namespace

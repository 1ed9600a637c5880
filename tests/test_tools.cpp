// The command-line tools as users run them: rmt-classify on image files and directories (with the
// tiny reference checkpoint and its config), and rmt-infer --summary.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <ftw.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include "reference.h"
#include "tool_runner.h"
#include "rmt/data/preprocess.h"
#include "rmt/io/checkpoint.h"
#include "rmt/io/state_dict.h"
#include "rmt/models/model.h"

#include "image_writer.h"

namespace {

namespace fs = std::filesystem;

using rmt::test::remove_tree;

using rmt::test::quote;
using rmt::test::slurp;
using rmt::test::tool_path;

using Result = rmt::test::ToolResult;

class Tools : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("rmt_test_tools_" + std::to_string(::getpid()) + "_" + info->name());
    fs::create_directories(dir_);
    config_ = (dir_ / "tiny_cls.json").string();
    std::ofstream(config_) << rmt::test::manifest_case("tiny_cls").at("config").dump();
    weights_ = rmt::test::data_path("tiny_cls.pth");
  }
  void TearDown() override { remove_tree(dir_.string()); }

  Result run(const std::string& tool, const std::vector<std::string>& args) {
    bool exists = false;
    auto r = rmt::test::run_tool(tool, args, dir_, &exists);
    if (!exists) ADD_FAILURE() << tool_path(tool) << " does not exist: build the " << tool << " target first";
    return r;
  }

  std::vector<std::string> classify_args(std::vector<std::string> extra) {
    std::vector<std::string> args = {"--config", config_, "--weights", weights_,
                                     "--input-size", "64", "--topk", "3"};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  // A 48x40 test image with a pattern depending on `seed`.
  std::string write_image(const std::string& name, int seed) {
    const int w = 48, h = 40;
    std::vector<uint8_t> px(w * h * 3);
    for (int y = 0; y < h; ++y) {
      for (int x = 0; x < w; ++x) {
        for (int c = 0; c < 3; ++c) {
          px[(y * w + x) * 3 + c] = static_cast<uint8_t>((x * (seed + 3) + y * (c + 1) * 7 + seed * 40) & 255);
        }
      }
    }
    const auto p = (dir_ / name);
    fs::create_directories(p.parent_path());
    const bool bmp = p.extension() == ".bmp";
    const bool ok = bmp ? stbi_write_bmp(p.c_str(), w, h, 3, px.data())
                        : stbi_write_png(p.c_str(), w, h, 3, px.data(), w * 3);
    EXPECT_TRUE(ok) << p;
    return p.string();
  }

  fs::path dir_;
  std::string config_, weights_;
};

TEST_F(Tools, ClassifyPrintsTopKForEveryImage) {
  const auto a = write_image("images/a.png", 1);
  const auto b = write_image("images/b.bmp", 2);
  const auto c = write_image("images/sub/c.png", 3);
  std::ofstream(dir_ / "images" / "notes.txt") << "not an image, and skipped by extension\n";
  const auto r = run("rmt-classify", classify_args({(dir_ / "images").string()}));
  ASSERT_EQ(r.status, 0) << r.err;
  // Sorted walk: a.png, b.bmp, sub/c.png; three "class N" lines each (10 classes, no names).
  const auto pa = r.out.find(a + "\n"), pb = r.out.find(b + "\n"), pc = r.out.find(c + "\n");
  ASSERT_NE(pa, std::string::npos) << r.out;
  ASSERT_NE(pb, std::string::npos) << r.out;
  ASSERT_NE(pc, std::string::npos) << r.out;
  EXPECT_LT(pa, pb);
  EXPECT_LT(pb, pc);
  size_t lines = 0;
  for (size_t p = r.out.find("class "); p != std::string::npos; p = r.out.find("class ", p + 1)) ++lines;
  EXPECT_EQ(lines, 9u) << r.out;
  EXPECT_EQ(r.out.find("notes.txt"), std::string::npos);
}

TEST_F(Tools, ClassifyJsonMatchesTheLibrary) {
  const auto a = write_image("a.png", 4);
  const auto b = write_image("b.png", 5);
  const auto r = run("rmt-classify", classify_args({"--json", "--batch-size", "1", a, b}));
  ASSERT_EQ(r.status, 0) << r.err;
  const auto doc = nlohmann::json::parse(r.out);
  ASSERT_EQ(doc.at("results").size(), 2u);
  EXPECT_TRUE(doc.at("errors").empty());
  EXPECT_EQ(doc.at("preprocessing").at("resize"), 71);  // floor(64 / 0.9)

  // The same, in process, one image a forward as the tool ran them (--batch-size 1): a batch of
  // two rounds differently in float32 (with Debian's LibTorch 1.13: 1.3e-6 apart in a
  // probability); one image each is the same computation (equal to the bit there).
  rmt::Model model(rmt::config_from_json_file(config_), rmt::ModelKind::Classifier);
  model.load(weights_);
  model.eval();
  rmt::PreprocessOptions options;
  options.input_size = 64;
  at::NoGradGuard no_grad;
  const auto probs = at::cat({model.forward(rmt::load_image(a, options).unsqueeze(0)).front(),
                              model.forward(rmt::load_image(b, options).unsqueeze(0)).front()})
                         .softmax(1);
  for (size_t i = 0; i < 2; ++i) {
    const auto& result = doc.at("results").at(i);
    EXPECT_EQ(result.at("file"), i == 0 ? a : b);
    const auto& top = result.at("predictions");
    ASSERT_EQ(top.size(), 3u);
    const auto expected = probs[static_cast<int64_t>(i)].topk(3);
    for (int64_t k = 0; k < 3; ++k) {
      const int64_t index = top.at(k).at("index");
      EXPECT_EQ(index, std::get<1>(expected)[k].item<int64_t>());
      EXPECT_EQ(top.at(k).at("label"), "class " + std::to_string(index));
      EXPECT_NEAR(top.at(k).at("probability").get<double>(), std::get<0>(expected)[k].item<double>(),
                  1e-6);
      if (k > 0) EXPECT_LE(top.at(k).at("probability"), top.at(k - 1).at("probability"));
    }
  }
}

TEST_F(Tools, ClassifyNamesImageNetClasses) {
  // A 1000-class model (the tiny config with an ImageNet head, random weights): its labels come
  // from the names compiled into rmt-classify, examples/imagenet_classes.txt.
  auto config = rmt::config_from_json_file(config_);
  config.num_classes = 1000;
  rmt::Model model(config, rmt::ModelKind::Classifier);
  const auto weights = (dir_ / "imagenet_head.safetensors").string();
  rmt::save_safetensors(weights, rmt::state_dict(*model.module()));
  const auto config_1000 = (dir_ / "tiny_1000.json").string();
  std::ofstream(config_1000) << config.to_json(rmt::ModelKind::Classifier);
  const auto image = write_image("a.png", 8);
  const auto r = run("rmt-classify", {"--config", config_1000, "--weights", weights, "--input-size",
                                      "64", "--topk", "5", "--json", image});
  ASSERT_EQ(r.status, 0) << r.err;
  std::vector<std::string> names;
  std::ifstream list(rmt::test::data_path("../../examples/imagenet_classes.txt"));
  for (std::string line; std::getline(list, line);) names.push_back(line);
  ASSERT_EQ(names.size(), 1000u);
  EXPECT_EQ(names.front(), "tench");
  const auto doc = nlohmann::json::parse(r.out);
  const auto& top = doc.at("results").at(0).at("predictions");
  ASSERT_EQ(top.size(), 5u);
  for (const auto& p : top) EXPECT_EQ(p.at("label"), names.at(p.at("index").get<size_t>()));
}

TEST_F(Tools, ClassifyReportsBadInputsAndGoesOn) {
  const auto good = write_image("good.png", 6);
  const auto corrupt = (dir_ / "corrupt.jpg").string();
  std::ofstream(corrupt, std::ios::binary) << "\xff\xd8\xff garbage that is no JPEG";
  const auto missing = (dir_ / "missing.png").string();
  const auto r = run("rmt-classify", classify_args({corrupt, good, missing}));
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.out.find(good + "\n"), std::string::npos) << r.out;  // still classified
  EXPECT_NE(r.err.find("rmt-classify: error: " + corrupt + ": "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("rmt-classify: error: " + missing + ": no such file or directory"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("2 of 3 inputs failed"), std::string::npos) << r.err;

  const auto j = run("rmt-classify", classify_args({"--json", corrupt, good, missing}));
  EXPECT_EQ(j.status, 2);
  const auto doc = nlohmann::json::parse(j.out);
  EXPECT_EQ(doc.at("results").size(), 1u);
  ASSERT_EQ(doc.at("errors").size(), 2u);
  EXPECT_EQ(doc.at("errors").at(0).at("file"), missing);  // paths are checked first
  EXPECT_EQ(doc.at("errors").at(1).at("file"), corrupt);
}

// With --arch, rmt-classify preprocesses as the preset's pretrained config says (the authors'
// evaluation: resize 256, crop 224 for RMT-T); --crop-pct and --input-size override it.
TEST_F(Tools, ClassifyTakesThePresetsPretrainedConfig) {
  const auto weights = (dir_ / "rmt_t.safetensors").string();  // random: the classes do not matter
  rmt::save_safetensors(weights, rmt::state_dict(*rmt::Model::from_preset("rmt_t").module()));
  const auto a = write_image("a.png", 6);
  auto r = run("rmt-classify", {"--arch", "rmt_t", "--weights", weights, "--json", "--topk", "1", a});
  ASSERT_EQ(r.status, 0) << r.err;
  auto pre = nlohmann::json::parse(r.out).at("preprocessing");
  EXPECT_EQ(pre.at("input_size"), 224);
  EXPECT_EQ(pre.at("resize"), 256);
  EXPECT_EQ(pre.at("crop_pct"), 0.875);
  r = run("rmt-classify", {"--arch", "rmt_t", "--weights", weights, "--json", "--topk", "1",
                           "--crop-pct", "0.9", "--input-size", "160", a});
  ASSERT_EQ(r.status, 0) << r.err;
  pre = nlohmann::json::parse(r.out).at("preprocessing");
  EXPECT_EQ(pre.at("input_size"), 160);
  EXPECT_EQ(pre.at("resize"), 177);  // floor(160 / 0.9)
}

TEST_F(Tools, ClassifyFatalErrors) {
  const auto good = write_image("good.png", 7);
  auto r = run("rmt-classify", classify_args({"--weights-key", "no_such_entry", good}));
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.err.rfind("rmt-classify: error: ", 0), 0u) << r.err;
  r = run("rmt-classify", {"--config", config_, good});  // no --weights
  EXPECT_NE(r.status, 0);
  r = run("rmt-classify", {"--arch", "rmt_t", "--weights", (dir_ / "none.pth").string(), good});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("none.pth"), std::string::npos) << r.err;
}

TEST_F(Tools, InferSummary) {
  auto r = run("rmt-infer", {"--arch", "rmt_t", "--summary"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("14,334,216"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("2.64 = 0.473 dense convs + 0.064 depthwise convs + 1.825 linear"),
            std::string::npos)
      << r.out;
  r = run("rmt-infer", {"--config", config_, "--summary", "--input-size", "64", "48", "--per-layer"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("at input 1x3x64x48"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("layers.0.blocks.0.retention.attention"), std::string::npos) << r.out;
  r = run("rmt-infer", {"--arch", "rmt_t"});  // neither --summary nor the inputs of a run
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("--weights is required"), std::string::npos) << r.err;
}

}  // namespace

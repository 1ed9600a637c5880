// Parameter and multiply-accumulate counts (rmt::summarize) against the numbers the authors' model
// gives when counted the same way (fvcore's convention), and against hand-computed formulas.
#include <cmath>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "reference.h"
#include "rmt/models/model.h"
#include "rmt/models/summary.h"

namespace {

double giga(int64_t v) { return static_cast<double>(v) / 1e9; }
// The value as printed with `decimals` decimals.
double printed(double v, int decimals) {
  const double scale = std::pow(10.0, decimals);
  return std::round(v * scale) / scale;
}

int64_t preset_parameters(const std::string& name) {
  std::ifstream in(rmt::test::data_path("presets.json"));
  return nlohmann::json::parse(in).at(name).at("parameters").get<int64_t>();
}

TEST(Summary, RmtTMatchesTheAuthorsModel) {
  const auto s = rmt::summarize(rmt::Model::from_preset("rmt_t"), 224, 224);
  EXPECT_EQ(s.parameters, 14334216);
  EXPECT_EQ(s.parameters, preset_parameters("rmt_t"));
  // 0.473 + 0.064 + 1.825 + 0.275 = 2.64 GMACs.
  EXPECT_DOUBLE_EQ(printed(giga(s.conv_macs), 3), 0.473);
  EXPECT_DOUBLE_EQ(printed(giga(s.depthwise_conv_macs), 3), 0.064);
  EXPECT_DOUBLE_EQ(printed(giga(s.linear_macs), 3), 1.825);
  EXPECT_DOUBLE_EQ(printed(giga(s.attention_macs), 3), 0.275);
  EXPECT_DOUBLE_EQ(printed(giga(s.total_macs()), 2), 2.64);
  // Exactly, from the formulas (stem at 112 and 56, stages at 56, 28, 14, 7).
  EXPECT_EQ(s.conv_macs, 473260032);
  EXPECT_EQ(s.depthwise_conv_macs, 64275456);
  EXPECT_EQ(s.linear_macs, 1825021952);
  EXPECT_EQ(s.attention_macs, 274663424);
  const auto text = rmt::format_summary(s, "rmt_t");
  EXPECT_NE(text.find("14,334,216"), std::string::npos) << text;
  EXPECT_NE(text.find("2.64 = 0.473 dense convs + 0.064 depthwise convs + 1.825 linear + 0.275 "
                      "attention"),
            std::string::npos)
      << text;
}

TEST(Summary, PresetTotals) {
  const struct {
    const char* name;
    double gmacs;
    int64_t macs;
  } cases[] = {{"rmt_s", 4.78, 4776574976},
               {"rmt_b", 10.37, 10373118208},
               {"rmt_l", 19.49, 19487964928}};
  for (const auto& c : cases) {
    const auto s = rmt::summarize(rmt::Model::from_preset(c.name), 224, 224);
    EXPECT_DOUBLE_EQ(printed(giga(s.total_macs()), 2), c.gmacs) << c.name;
    EXPECT_EQ(s.total_macs(), c.macs) << c.name;
    EXPECT_EQ(s.parameters, preset_parameters(c.name)) << c.name;
  }
}

TEST(Summary, TokenLabelingAddsTheAuxHead) {
  const auto plain = rmt::summarize(rmt::Model::from_preset("rmt_s"), 224, 224);
  const auto tl = rmt::summarize(rmt::Model::from_preset("rmt_s_tl"), 224, 224);
  EXPECT_EQ(tl.parameters, preset_parameters("rmt_s_tl"));
  EXPECT_EQ(tl.linear_macs - plain.linear_macs, 7 * 7 * 512 * 1000);  // aux_head on every token
  EXPECT_EQ(tl.conv_macs, plain.conv_macs);
  EXPECT_EQ(tl.attention_macs, plain.attention_macs);
}

TEST(Summary, DenseBackboneHasNoHead) {
  const auto cls = rmt::summarize(rmt::Model::from_preset("rmt_t"), 224, 224);
  const auto dense = rmt::summarize(rmt::Model::from_preset("rmt_t_dense"), 224, 224);
  EXPECT_EQ(dense.conv_macs, cls.conv_macs);
  EXPECT_EQ(dense.depthwise_conv_macs, cls.depthwise_conv_macs);
  EXPECT_EQ(dense.attention_macs, cls.attention_macs);
  EXPECT_EQ(cls.linear_macs - dense.linear_macs, 7 * 7 * 512 * 1024 + 1024 * 1000);  // proj, head
}

TEST(Summary, BatchAndNonSquareInputs) {
  const auto model = rmt::Model::from_preset("rmt_t");
  const auto one = rmt::summarize(model, 224, 224);
  const auto four = rmt::summarize(model, 224, 224, 4);
  EXPECT_EQ(four.total_macs(), 4 * one.total_macs());
  EXPECT_EQ(four.parameters, one.parameters);
  // 256x192: stages at 64x48, 32x24, 16x12, 8x6; decomposed attention in stages 0 and 1
  // (B (HWW + WHH) C, twice), full attention in stages 2 and 3 (B (HW)^2 C, twice).
  const auto s = rmt::summarize(model, 256, 192);
  auto decomposed = [](int64_t h, int64_t w, int64_t c) { return 2 * (h * w * w + w * h * h) * c; };
  auto full = [](int64_t h, int64_t w, int64_t c) { return 2 * (h * w) * (h * w) * c; };
  const int64_t expected = 2 * decomposed(64, 48, 64) + 2 * decomposed(32, 24, 128) +
                           8 * full(16, 12, 256) + 2 * full(8, 6, 512);
  EXPECT_EQ(s.attention_macs, expected);
  EXPECT_EQ(s.layers.back().name, "head");
  EXPECT_EQ(s.layers.back().macs, 1024 * 1000);
  EXPECT_THROW(rmt::summarize(model, 0, 224), std::invalid_argument);
}

TEST(Summary, OddSizesFollowTheStrides) {
  // 3x3 stride-2 convs with padding 1: ceil(n / 2) at each downsampling.
  const auto s = rmt::summarize(rmt::Model::from_preset("rmt_t"), 100, 75);
  const auto& first = s.layers.front();
  EXPECT_EQ(first.name, "patch_embed.proj.0");
  EXPECT_EQ(first.out_height, 50);
  EXPECT_EQ(first.out_width, 38);
  EXPECT_EQ(first.macs, 50 * 38 * 32 * 3 * 9);
  const auto proj = std::find_if(s.layers.begin(), s.layers.end(),
                                 [](const rmt::LayerCost& l) { return l.name == "proj"; });
  ASSERT_NE(proj, s.layers.end());
  EXPECT_EQ(proj->out_height, 4);  // 100 -> 50 -> 25 -> 13 -> 7 -> 4
  EXPECT_EQ(proj->out_width, 3);   // 75 -> 38 -> 19 -> 10 -> 5 -> 3
}

}  // namespace

// Presets, configs, modules, training behaviour and bad input.
#include <fstream>
#include <functional>

#include <gtest/gtest.h>

#include "nn/ffn_rows.h"      // internal: the FFN's row pipeline, driven directly below
#include "nn/avx2_gemm.h"    // internal: the packed GEMMs with row calls, driven directly below
#include "nn/brgemm_gemm.h"
#include "nn/mkl_gemm.h"
#include "ops/cpu/bias_gelu.h"  // internal: the GEMM epilogue's GELU, checked element by element
#include "ops/cpu/cpu_math.h"   // internal: the attention's 2^x on 16 lanes, checked likewise
#include "nn/token_linear.h"
#include "nn/winograd_conv.h"  // internal: the stem's 3x3 convolutions by Winograd's F(4x4, 3x3)
#include "reference.h"
#include "rmt/rmt.h"

namespace {

using rmt::test::data_path;

nlohmann::json presets_json() {
  std::ifstream in(data_path("presets.json"));
  return nlohmann::json::parse(in);
}

int64_t parameter_count(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

std::string dtype_name(at::ScalarType t) {
  return t == at::kFloat ? "float32" : t == at::kLong ? "int64" : std::string(c10::toString(t));
}

// A tiny config for fast unit tests: decomposed stages 0-1, full 2-3, layer scale in stage 3.
rmt::Config tiny_config() {
  rmt::Config c;
  c.embed_dims = {8, 16, 16, 32};
  c.depths = {1, 1, 1, 1};
  c.num_heads = {2, 2, 4, 4};
  c.init_values = {2, 2, 2, 2};
  c.heads_ranges = {4, 4, 6, 6};
  c.mlp_ratios = {2, 2, 2, 2};
  c.chunkwise_recurrents = {true, true, false, false};
  c.layerscales = {false, false, false, true};
  c.layer_init_values = 0.5;
  c.projection = 24;
  c.num_classes = 5;
  c.drop_path_rate = 0.0;
  return c;
}

// --- presets -------------------------------------------------------------------------------------

class PresetTest : public ::testing::TestWithParam<std::string> {};

TEST_P(PresetTest, StateDictAndParameterCountEqualTheAuthors) {
  const auto name = GetParam();
  const auto expected = presets_json().at(name);
  auto model = rmt::Model::from_preset(name);
  auto sd = rmt::state_dict(*model.module());
  const auto& keys = expected.at("state_dict");
  ASSERT_EQ(sd.size(), keys.size());
  size_t i = 0;
  for (const auto& item : sd) {
    const auto& ref = keys[i++];
    ASSERT_EQ(item.key(), ref[0].get<std::string>()) << "entry " << i - 1;
    EXPECT_EQ(item.value().sizes().vec(), ref[1].get<std::vector<int64_t>>()) << item.key();
    EXPECT_EQ(dtype_name(item.value().scalar_type()), ref[2].get<std::string>()) << item.key();
  }
  EXPECT_EQ(parameter_count(*model.module()), expected.at("parameters").get<int64_t>());
}

INSTANTIATE_TEST_SUITE_P(Authors, PresetTest,
                         ::testing::Values("rmt_t", "rmt_s", "rmt_b", "rmt_l", "rmt_s_tl",
                                           "rmt_b_tl", "rmt_l_tl"));

TEST(Presets, DenseBackbonesAreTheClassifierWithoutHeadPlusExtraNorms) {
  const auto all = presets_json();
  for (const std::string base : {"rmt_t", "rmt_s", "rmt_b", "rmt_l"}) {
    auto dense = rmt::Model::from_preset(base + "_dense");
    ASSERT_EQ(dense.kind(), rmt::ModelKind::Dense);
    const auto& cfg = dense.config();
    // The classifier's count minus proj, norm and head, plus one LayerNorm per stage.
    const auto c = all.at(base).at("parameters").get<int64_t>();
    const auto p = cfg.projection, last = cfg.embed_dims.back();
    int64_t norms = 0;
    for (auto d : cfg.embed_dims) norms += 2 * d;
    EXPECT_EQ(parameter_count(*dense.module()),
              c - (last * p + p) - 2 * p - (p * 1000 + 1000) + norms) << base;
    auto sd = rmt::state_dict(*dense.module());
    EXPECT_TRUE(sd.contains("extra_norms.3.bias"));
    EXPECT_FALSE(sd.contains("head.weight"));
  }
}

TEST(Presets, UnknownNameListsTheKnownOnes) {
  try {
    rmt::preset("rmt_xl");
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("unknown preset 'rmt_xl'"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("rmt_l_tl"), std::string::npos);
  }
  EXPECT_THROW(rmt::preset("rmt_t_tl"), std::invalid_argument);  // the authors have no T*
}

// --- config --------------------------------------------------------------------------------------

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "no exception";
}

TEST(Config, ReadsTheManifestConfigs) {
  auto entry = rmt::test::manifest_case("tiny_ls");
  auto c = rmt::config_from_json(entry.at("config").dump());
  EXPECT_EQ(c.embed_dims, (std::vector<int64_t>{16, 32, 48, 64}));
  EXPECT_EQ(c.init_values, (std::vector<double>{1, 2, 3, 2}));
  EXPECT_EQ(c.layerscales, (std::vector<bool>{false, false, true, true}));
  EXPECT_DOUBLE_EQ(c.layer_init_values, 1e-6);
  EXPECT_EQ(c.projection, 80);
  EXPECT_EQ(c.num_classes, 7);
  auto again = rmt::config_from_json(c.to_json());
  EXPECT_EQ(again.to_json(), c.to_json());
}

TEST(Config, RejectsWhatTheModelCannotBe) {
  EXPECT_NE(error_of([] { rmt::config_from_json("{\"embed_dim\": [1]}"); }).find("unknown field 'embed_dim'"),
            std::string::npos);
  EXPECT_NE(error_of([] { rmt::config_from_json("[1, 2]"); }).find("expected a JSON object"), std::string::npos);
  EXPECT_NE(error_of([] { rmt::config_from_json("{"); }).find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of([] { rmt::config_from_json("{\"depths\": \"two\"}"); }).find("depths is \"two\": expected a list"),
            std::string::npos);
  auto c = tiny_config();
  c.num_heads[1] = 3;  // 16 / 3
  EXPECT_NE(error_of([&] { c.validate(); }).find("stage 1: embed_dims[1] = 16 is not divisible by num_heads[1] = 3"),
            std::string::npos);
  c = tiny_config();
  c.num_heads[2] = 16;  // head dim 1
  EXPECT_NE(error_of([&] { c.validate(); }).find("head dimension"), std::string::npos);
  c = tiny_config();
  c.depths.push_back(1);  // 5 stages, 4-entry lists
  EXPECT_NE(error_of([&] { c.validate(); }).find("embed_dims [8, 16, 16, 32] has 4 entries but depths [1, 1, 1, 1, 1] has 5 stages"),
            std::string::npos);
  c = tiny_config();
  c.out_indices = {0, 4};
  EXPECT_NO_THROW(c.validate(rmt::ModelKind::Classifier));  // not a classifier's argument
  EXPECT_NE(error_of([&] { c.validate(rmt::ModelKind::Dense); }).find("out_indices [0, 4] has 4: expected stage indices from 0 to 3"),
            std::string::npos);
  c = tiny_config();
  c.init_values[0] = 0;
  EXPECT_NE(error_of([&] { c.validate(); }).find("init_values[0] = 0"), std::string::npos);
  EXPECT_THROW((void)rmt::VisRetNet(c), std::invalid_argument);
}

// The authors' argument names per kind; another kind's argument is refused by name.
TEST(Config, EachKindReadsTheArgumentsOfItsConstructor) {
  using rmt::ModelKind;
  const std::string stages3 = R"("embed_dims": [8, 16, 16], "depths": [1, 1, 1], "num_heads": [2, 2, 4])";
  // Fewer than 4 stages: the 4-entry defaults of the other lists are read as the authors index them.
  auto c = rmt::config_from_json("{" + stages3 + R"(, "use_checkpoints": [1, 0, true], "num_classes": 3})",
                                 ModelKind::Classifier);
  EXPECT_EQ(c.use_checkpoints, (std::vector<bool>{true, false, true}));
  EXPECT_NO_THROW(rmt::Model(c, ModelKind::Classifier));
  EXPECT_NO_THROW(rmt::Model(c, ModelKind::TokenLabel));
  EXPECT_NE(error_of([&] { rmt::config_from_json("{" + stages3 + R"(, "out_indices": [0]})", ModelKind::Classifier); })
                .find("'out_indices' is not an argument of the classifier"),
            std::string::npos);
  auto d = rmt::config_from_json(
      R"({"embed_dims": [8, 16, 16, 24], "depths": [1, 1, 1], "num_heads": [2, 2, 4], "use_checkpoint": 1,
          "norm_eval": false, "out_indices": [2, 0, 2], "chunkwise_recurrents": [0, 1, 0]})",
      ModelKind::Dense);
  EXPECT_TRUE(d.use_checkpoint);
  EXPECT_FALSE(d.norm_eval);
  EXPECT_EQ(d.chunkwise_recurrents, (std::vector<bool>{false, true, false}));
  EXPECT_EQ(d.selected_stages(), (std::vector<int64_t>{0, 2}));
  EXPECT_NE(error_of([&] { rmt::config_from_json(R"({"num_classes": 3})", ModelKind::Dense); })
                .find("'num_classes' is not an argument of the dense backbone"),
            std::string::npos);
  EXPECT_NE(error_of([&] { rmt::config_from_json(R"({"use_checkpoints": [true]})", ModelKind::Dense); })
                .find("takes use_checkpoint, one flag for all stages"),
            std::string::npos);
  EXPECT_NE(error_of([&] { rmt::config_from_json(R"({"norm_layer": "LayerNorm"})", ModelKind::Dense); })
                .find("'norm_layer' is a Python class"),
            std::string::npos);
  // Strict JSON types where Python would fail; flags as Python's truthiness of integers.
  EXPECT_NE(error_of([&] { rmt::config_from_json(R"({"embed_dims": [64.5, 128, 256, 512]})"); })
                .find("embed_dims[0] is 64.5: expected an integer"),
            std::string::npos);
  EXPECT_NE(error_of([&] { rmt::config_from_json(R"({"layerscales": [0, 0.5, 0, 0]})"); })
                .find("layerscales[1] is 0.5: expected true or false"),
            std::string::npos);
  EXPECT_NE(error_of([&] { rmt::config_from_json(R"({"out_indices": 3})", ModelKind::Dense); })
                .find("out_indices is 3: expected a list"),
            std::string::npos);
  // Round trips, per kind and for every field.
  for (const auto kind : {ModelKind::Classifier, ModelKind::TokenLabel, ModelKind::Dense}) {
    const auto preset = rmt::preset(kind == ModelKind::Dense ? "rmt_b_dense" : "rmt_b").config;
    EXPECT_EQ(rmt::config_from_json(preset.to_json(kind), kind).to_json(), preset.to_json());
  }
  EXPECT_EQ(rmt::config_from_json(d.to_json()).to_json(), d.to_json());
}

// --- modules -------------------------------------------------------------------------------------

TEST(RelPos2d, BuffersEqualTheAuthorsToTheLastBit) {
  // The authors' checkpoint carries the buffers their code computed (float32, PyTorch 1.13). Built
  // here, angle is bit-identical and decay within one float32 ulp: log() of PyTorch 1.13 and of this
  // LibTorch differ by one ulp on some inputs (log(1 - 2^-2): 0xbe934b11 there, 0xbe934b10 here).
  // Loading a checkpoint replaces both with the file's values.
  auto entry = rmt::test::manifest_case("tiny_ls");
  auto config = rmt::config_from_json(entry.at("config").dump());
  auto weights = rmt::read_state_dict(data_path("tiny_ls.pth"));
  rmt::VisRetNet net(config);
  auto sd = rmt::state_dict(*net);
  for (int i = 0; i < 4; ++i) {
    for (const std::string buffer : {"angle", "decay"}) {
      const auto key = "layers." + std::to_string(i) + ".Relpos." + buffer;
      ASSERT_TRUE(weights.contains(key)) << key;
      if (buffer == "angle") {
        EXPECT_TRUE(at::equal(sd[key], weights[key])) << key;
      } else {
        EXPECT_TRUE(at::allclose(sd[key], weights[key], /*rtol=*/1.2e-7, /*atol=*/0)) << key;
      }
    }
  }
}

TEST(Shapes, OddAndNonSquareInputs) {
  rmt::VisRetNet net(tiny_config());
  rmt::DenseBackbone dense(tiny_config());
  net->eval();
  dense->eval();
  torch::NoGradGuard no_grad;
  // Each stride-2 conv maps n to ceil(n / 2).
  for (auto [h, w] : std::vector<std::pair<int64_t, int64_t>>{{37, 23}, {1, 1}, {64, 17}}) {
    auto x = torch::randn({2, 3, h, w});
    EXPECT_EQ(net->forward(x).sizes(), (std::vector<int64_t>{2, 5}));
    auto features = dense->forward(x);
    ASSERT_EQ(features.size(), 4u);
    int64_t fh = (h + 1) / 2, fw = (w + 1) / 2;
    const std::vector<int64_t> channels{8, 16, 16, 32};
    for (int i = 0; i < 4; ++i) {
      fh = (fh + 1) / 2;
      fw = (fw + 1) / 2;
      EXPECT_EQ(features[i].sizes(), (std::vector<int64_t>{2, channels[i], fh, fw})) << h << "x" << w;
    }
  }
}

TEST(Dense, OutIndicesSelectStagesInStageOrderEachOnce) {
  auto c = tiny_config();
  torch::manual_seed(4);
  rmt::DenseBackbone all(c);
  all->eval();
  torch::NoGradGuard no_grad;
  const auto images = torch::randn({1, 3, 32, 32});
  const auto every = all->forward(images);
  for (const auto& indices : std::vector<std::vector<int64_t>>{{1, 3}, {3, 1}, {3, 1, 3}}) {
    c.out_indices = indices;
    rmt::DenseBackbone dense(c);
    rmt::load_state_dict(*dense, rmt::state_dict(*all));
    dense->eval();
    auto features = dense->forward(images);
    ASSERT_EQ(features.size(), 2u);
    EXPECT_TRUE(at::equal(features[0], every[1]));
    EXPECT_TRUE(at::equal(features[1], every[3]));
  }
  // The default (0, 1, 2, 3) is every stage there is, up to four.
  c = tiny_config();
  c.depths = {1, 1, 1};
  EXPECT_EQ(c.selected_stages(), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(rmt::DenseBackbone(c)->forward(images).size(), 3u);
}

TEST(TokenLabel, WithoutHeadsTheOutputIsPooledPlusHalfTheRawTokenMaximum) {
  auto c = tiny_config();
  c.num_classes = 0;
  c.projection = 32;  // = embed_dims[-1]: the authors' sum broadcasts
  rmt::VisRetNet net(c, /*token_label=*/true);
  net->eval();
  torch::NoGradGuard no_grad;
  auto x = torch::randn({2, 3, 32, 48});
  auto [pooled, tokens] = net->forward_train(x);
  EXPECT_EQ(tokens.sizes(), (std::vector<int64_t>{2, 2, 32}));
  EXPECT_TRUE(at::allclose(pooled, net->forward_features(x)));
  EXPECT_TRUE(at::allclose(net->forward(x), pooled + 0.5 * std::get<0>(tokens.max(1)), 1e-6, 1e-6));
}

TEST(TokenLabel, EvalOutputIsHeadPlusHalfTheTokenMaximum) {
  auto c = tiny_config();
  rmt::VisRetNet net(c, /*token_label=*/true);
  net->eval();
  torch::NoGradGuard no_grad;
  auto x = torch::randn({2, 3, 32, 48});
  auto [cls, aux] = net->forward_train(x);
  // 32x48 -> stem 8x12 -> three merges -> 1x2 tokens.
  EXPECT_EQ(aux.sizes(), (std::vector<int64_t>{2, 1 * 2, 5}));
  auto expected = cls + 0.5 * std::get<0>(aux.max(1));
  EXPECT_TRUE(at::allclose(net->forward(x), expected, 1e-6, 1e-6));
}

// --- training ------------------------------------------------------------------------------------

TEST(Training, StochasticDepthFollowsTheLinearRule) {
  auto c = tiny_config();
  c.depths = {2, 1, 3, 2};
  c.drop_path_rate = 0.35;
  rmt::VisRetNet net(c);
  // linspace(0, 0.35, 8)[i] = 0.05 * i
  int index = 0;
  for (const auto& layer : *net->layers) {
    for (const auto& block : *layer->as<rmt::nn::BasicLayerImpl>()->blocks) {
      EXPECT_NEAR(block->as<rmt::nn::RetBlockImpl>()->options.drop_path(), 0.05 * index, 1e-7);
      ++index;
    }
  }
  EXPECT_EQ(index, 8);
}

TEST(Training, DropPathDropsWholeSamplesAndRescales) {
  torch::manual_seed(0);
  auto x = torch::ones({20000, 3});
  auto y = rmt::nn::drop_path(x, 0.25, /*training=*/true);
  auto kept = (y.select(1, 0) != 0).to(at::kDouble).mean().item<double>();
  EXPECT_NEAR(kept, 0.75, 0.02);
  // Survivors are scaled by 1 / 0.75, and a sample is kept or dropped whole.
  EXPECT_TRUE(at::allclose(y.select(1, 0), y.select(1, 2)));
  EXPECT_NEAR(y.max().item<double>(), 1 / 0.75, 1e-6);
  EXPECT_TRUE(at::equal(rmt::nn::drop_path(x, 0.25, /*training=*/false), x));
}

TEST(Training, BatchNormUpdatesItsStatisticsAndGradientsReachEveryParameter) {
  auto c = tiny_config();
  c.drop_path_rate = 0.1;
  rmt::VisRetNet net(c, /*token_label=*/true);
  net->train();
  auto before = net->norm->running_mean.clone();
  auto [cls, aux] = net->forward_train(torch::randn({3, 3, 32, 32}));
  (cls.square().sum() + aux.square().mean()).backward();
  EXPECT_FALSE(at::equal(before, net->norm->running_mean));
  EXPECT_EQ(net->norm->num_batches_tracked.item<int64_t>(), 1);
  for (const auto& p : net->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(at::isfinite(p.value().grad()).all().item<bool>()) << p.key();
  }
}

// norm_eval is accepted and, as in the authors' code (their test for nn.BatchNorm2d misses their
// SyncBatchNorm layers), changes nothing: BatchNorm trains. freeze_batchnorm freezes it.
TEST(Training, DenseBatchNormTrainsAsTheAuthorsUnlessFrozen) {
  auto c = tiny_config();
  c.norm_eval = true;
  rmt::DenseBackbone dense(c);
  dense->train();
  EXPECT_TRUE(dense->patch_embed->proj[1]->is_training());
  auto running_var = [&] {
    return dense->layers[0]->as<rmt::nn::BasicLayerImpl>()->downsample->norm->running_var.clone();
  };
  auto before = running_var();
  dense->forward(torch::randn({2, 3, 16, 16}));
  EXPECT_FALSE(at::equal(before, running_var()));
  dense->freeze_batchnorm = true;
  dense->train();
  EXPECT_TRUE(dense->is_training());
  EXPECT_FALSE(dense->patch_embed->proj[1]->is_training());
  before = running_var();
  dense->forward(torch::randn({2, 3, 16, 16}));
  EXPECT_TRUE(at::equal(before, running_var()));
}

// Central differences against autograd, float64, on the input and on parameters of every kind
// (attention projections of both MaSA forms, relative position free, layer scale, convs, norms).
TEST(Gradients, MatchFiniteDifferencesInFloat64) {
  torch::manual_seed(1);
  rmt::VisRetNet net(tiny_config(), /*token_label=*/true);
  rmt::move_to(*net, torch::kCPU, at::kDouble);
  net->eval();
  auto x = torch::randn({1, 3, 20, 12}, at::kDouble).requires_grad_(true);
  auto probe = torch::randn({1, 5}, at::kDouble);
  auto loss_of = [&] { return (net->forward(x) * probe).sum(); };
  auto params = net->named_parameters();
  std::vector<std::pair<std::string, at::Tensor>> checked = {{"input", x}};
  for (const std::string key :
       {"layers.0.blocks.0.retention.q_proj.weight", "layers.1.blocks.0.retention.k_proj.bias",
        "layers.2.blocks.0.retention.v_proj.weight", "layers.3.blocks.0.gamma_1",
        "layers.0.blocks.0.retention.lepe.conv.weight", "layers.2.blocks.0.pos.conv.bias",
        "layers.1.blocks.0.ffn.dwconv.conv.weight", "patch_embed.proj.0.weight",
        "layers.0.downsample.norm.weight", "layers.3.blocks.0.final_layer_norm.weight",
        "aux_head.weight", "proj.weight"}) {
    checked.emplace_back(key, params[key]);
  }
  loss_of().backward();
  for (auto& [name, tensor] : checked) {
    auto grad = tensor.grad().clone();
    auto flat = tensor.detach().view(-1);
    const int64_t n = flat.numel();
    for (int64_t j : {int64_t{0}, n / 3, n - 1}) {
      torch::NoGradGuard no_grad;
      const double saved = flat[j].item<double>();
      const double eps = 1e-6;
      flat[j] = saved + eps;
      const double up = loss_of().item<double>();
      flat[j] = saved - eps;
      const double down = loss_of().item<double>();
      flat[j] = saved;
      const double numeric = (up - down) / (2 * eps);
      const double analytic = grad.view(-1)[j].item<double>();
      EXPECT_NEAR(analytic, numeric, 1e-6 + 1e-5 * std::abs(numeric)) << name << "[" << j << "]";
    }
  }
}

// --- bad input -----------------------------------------------------------------------------------

std::string torch_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "no exception";
}

TEST(BadInput, NamesWhatWasExpected) {
  rmt::Model model(tiny_config(), rmt::ModelKind::Classifier);
  model.eval();
  torch::NoGradGuard no_grad;
  EXPECT_NE(torch_error_of([&] { model.forward(torch::randn({3, 32, 32})); })
                .find("expected a 4-D image batch (B, 3, H, W), found a 3-D tensor"),
            std::string::npos);
  EXPECT_NE(torch_error_of([&] { model.forward(torch::randn({1, 4, 32, 32})); })
                .find("expected 3 input channels"),
            std::string::npos);
  EXPECT_NE(torch_error_of([&] { model.forward(torch::ones({1, 3, 32, 32}, at::kInt)); })
                .find("expected floating-point images, found dtype Int"),
            std::string::npos);
  EXPECT_NE(torch_error_of([&] { model.forward(torch::randn({1, 3, 32, 32}, at::kDouble)); })
                .find("the images are Double but the model is Float"),
            std::string::npos);
  EXPECT_NE(torch_error_of([&] { model.forward(torch::randn({0, 3, 32, 32})); }).find("non-empty batch"),
            std::string::npos);
  rmt::Model dense(tiny_config(), rmt::ModelKind::Dense);
  EXPECT_NE(torch_error_of([&] { dense.forward(torch::randn({1, 1, 32, 32})); }).find("expected 3 input channels"),
            std::string::npos);
  EXPECT_NE(torch_error_of([&] { dense.classifier(); }).find("not a classifier"), std::string::npos);
}

TEST(BadInput, WeightsThatDoNotFitAreNamed) {
  rmt::Model model(tiny_config(), rmt::ModelKind::Classifier);
  auto msg = torch_error_of([&] { model.load(data_path("tiny_cls.pth")); });
  EXPECT_NE(msg.find("mis-shaped"), std::string::npos) << msg;
  EXPECT_NE(msg.find("patch_embed.proj.0.weight: expected [4, 3, 3, 3], found [8, 3, 3, 3]"),
            std::string::npos) << msg;
  // Non-strict loading still refuses wrong shapes.
  EXPECT_THROW(model.load(data_path("tiny_cls.pth"), {}, /*strict=*/false), std::runtime_error);
}

TEST(Loading, StrictReportsMissingAndUnexpectedKeysAndNonStrictLoadsTheRest) {
  // A dense backbone from a classifier checkpoint, as the authors initialize detection.
  auto config = rmt::config_from_json(rmt::test::manifest_case("tiny_cls").at("config").dump());
  rmt::Model dense(config, rmt::ModelKind::Dense);
  auto msg = torch_error_of([&] { dense.load(data_path("tiny_cls.pth")); });
  EXPECT_NE(msg.find("extra_norms.0.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("head.weight"), std::string::npos) << msg;
  auto report = dense.load(data_path("tiny_cls.pth"), {}, /*strict=*/false);
  EXPECT_EQ(report.missing.size(), 8u);  // extra_norms.{0..3}.{weight,bias}
  EXPECT_EQ(report.unexpected.size(), 9u);  // proj (2), norm (5), head (2)
  auto weights = rmt::read_state_dict(data_path("tiny_cls.pth"));
  auto sd = rmt::state_dict(*dense.module());
  EXPECT_TRUE(at::equal(sd["layers.2.blocks.1.retention.q_proj.weight"],
                        weights["layers.2.blocks.1.retention.q_proj.weight"]));
}

}  // namespace

namespace {

// With a single image row the column pass of decomposed MaSA is a softmax over one token, so both
// forms reduce to the same attention along the row: an identity that ties the two implementations.
TEST(MaSA, DecomposedEqualsFullOnASingleRow) {
  torch::manual_seed(3);
  rmt::nn::MaSA full(rmt::nn::MaSAOptions(16, 2).decomposed(false));
  rmt::nn::MaSA decomposed(rmt::nn::MaSAOptions(16, 2).decomposed(true));
  rmt::load_state_dict(*decomposed, rmt::state_dict(*full));
  rmt::nn::RelPos2d relpos(rmt::nn::RelPos2dOptions(16, 2, 2, 4));
  auto x = torch::randn({2, 1, 9, 16}, at::kDouble);
  rmt::move_to(*full, torch::kCPU, at::kDouble);
  rmt::move_to(*decomposed, torch::kCPU, at::kDouble);
  rmt::move_to(*relpos, torch::kCPU, at::kDouble);
  auto [sin, cos] = relpos->sin_cos(1, 9);
  torch::NoGradGuard no_grad;
  auto a = full->forward(x, sin, cos, relpos->decay);
  auto b = decomposed->forward(x, sin, cos, relpos->decay);
  EXPECT_EQ(a.sizes(), x.sizes());
  EXPECT_LT(rmt::test::relative_error(b, a), 1e-14);
  // And on a real 2-D grid they differ (the decomposition is not the full attention).
  auto grid = torch::randn({1, 5, 6, 16}, at::kDouble);
  auto [sin2, cos2] = relpos->sin_cos(5, 6);
  EXPECT_GT(rmt::test::relative_error(decomposed->forward(grid, sin2, cos2, relpos->decay),
                                      full->forward(grid, sin2, cos2, relpos->decay)),
            1e-3);
}

// forward_add_ (the block's residual step at inference, where out_proj adds its product to the
// residual itself) is into + forward, in float32 (the packed GEMM's path) and float64, for both
// forms; forward itself is held to the authors' numbers by the parity tests.
TEST(MaSA, ForwardAddIsTheResidualPlusForward) {
  torch::manual_seed(5);
  rmt::nn::RelPos2d relpos(rmt::nn::RelPos2dOptions(32, 4, 2, 4));
  torch::NoGradGuard no_grad;
  for (const bool decomposed : {true, false}) {
    for (const auto dtype : {at::kFloat, at::kDouble}) {
      rmt::nn::MaSA masa(rmt::nn::MaSAOptions(32, 4).decomposed(decomposed));
      masa->eval();
      rmt::move_to(*masa, torch::kCPU, dtype);
      rmt::move_to(*relpos, torch::kCPU, dtype);
      auto [sin, cos] = relpos->sin_cos(7, 9);
      const auto x = torch::randn({2, 7, 9, 32}, dtype);
      const auto residual = torch::randn({2, 7, 9, 32}, dtype);
      auto into = residual.clone();
      masa->forward_add_(x, sin, cos, relpos->decay, into);
      const auto expected = residual + masa->forward(x, sin, cos, relpos->decay);
      EXPECT_LT(rmt::test::relative_error(into, expected), dtype == at::kFloat ? 1e-6 : 1e-14)
          << (decomposed ? "decomposed" : "full") << ", " << c10::toString(dtype);
      EXPECT_GT(rmt::test::relative_error(into, residual), 1e-2);  // it did add something
    }
  }
}

// With a layer scale (RMT-B's and RMT-L's blocks), forward_add_ folds it into out_proj's packed
// weight and bias (float32: the packed GEMM's path; float64: a separate scaled output): into +
// scale * forward, and again after scale changes in place (the fold is made again, not reused).
TEST(MaSA, ForwardAddFoldsTheLayerScale) {
  torch::manual_seed(6);
  rmt::nn::RelPos2d relpos(rmt::nn::RelPos2dOptions(32, 4, 2, 4));
  torch::NoGradGuard no_grad;
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    rmt::nn::MaSA masa(rmt::nn::MaSAOptions(32, 4).decomposed(true));
    masa->eval();
    rmt::move_to(*masa, torch::kCPU, dtype);
    rmt::move_to(*relpos, torch::kCPU, dtype);
    masa->out_proj->bias.normal_(0, 0.5);  // a bias the fold must scale too
    auto [sin, cos] = relpos->sin_cos(7, 9);
    const auto x = torch::randn({2, 7, 9, 32}, dtype);
    const auto residual = torch::randn({2, 7, 9, 32}, dtype);
    auto scale = torch::rand({1, 1, 1, 32}, dtype) + 0.5;
    for (const int round : {0, 1}) {
      if (round == 1) scale.mul_(-3);  // in place: the kept fold is stale
      auto into = residual.clone();
      masa->forward_add_(x, sin, cos, relpos->decay, into, scale);
      const auto expected = residual + scale * masa->forward(x, sin, cos, relpos->decay);
      EXPECT_LT(rmt::test::relative_error(into, expected), dtype == at::kFloat ? 1e-6 : 1e-14)
          << c10::toString(dtype) << ", round " << round;
    }
  }
}

// sin/cos are cached per input size; the cache must never hand back stale tables.
TEST(Modules, RelPosTablesFollowSizeDtypeAndWeights) {
  rmt::nn::RelPos2d relpos(rmt::nn::RelPos2dOptions(16, 2, 2, 4));
  torch::NoGradGuard no_grad;
  auto expect = [&](int64_t h, int64_t w) {  // the authors' formula, computed here in float64
    auto phase = at::arange(h * w, at::kDouble).unsqueeze(1) * relpos->angle.to(at::kDouble);
    return std::make_pair(at::sin(phase).reshape({h, w, -1}), at::cos(phase).reshape({h, w, -1}));
  };
  auto check = [&](int64_t h, int64_t w, at::ScalarType dtype, double tol) {
    auto [s, c] = relpos->sin_cos(h, w);
    auto [es, ec] = expect(h, w);
    ASSERT_EQ(s.scalar_type(), dtype);
    ASSERT_EQ(s.sizes(), es.sizes());
    EXPECT_LT(rmt::test::relative_error(s, es), tol);
    EXPECT_LT(rmt::test::relative_error(c, ec), tol);
  };
  check(3, 4, at::kFloat, 1e-6);
  auto [s1, c1] = relpos->sin_cos(3, 4);
  auto [s2, c2] = relpos->sin_cos(3, 4);
  EXPECT_TRUE(s1.is_same(s2));  // the same size hits the cache
  check(5, 2, at::kFloat, 1e-6);
  rmt::move_to(*relpos, torch::kCPU, at::kDouble);
  check(5, 2, at::kDouble, 1e-15);
  relpos->angle.mul_(0.5);  // an in-place change, as load_state_dict makes
  check(5, 2, at::kDouble, 1e-15);
  relpos->set_backend(rmt::nn::Backend::Reference);  // the authors recompute them every call
  auto [s3, c3] = relpos->sin_cos(5, 2);
  auto [s4, c4] = relpos->sin_cos(5, 2);
  EXPECT_FALSE(s3.is_same(s4));
}

TEST(Modules, StemAndMergingHalveAndConvsAreDepthwise) {
  rmt::nn::PatchEmbed stem(3, 8);
  stem->eval();
  torch::NoGradGuard no_grad;
  EXPECT_EQ(stem->forward(torch::randn({1, 3, 13, 8})).sizes(), (std::vector<int64_t>{1, 4, 2, 8}));
  rmt::nn::PatchMerging merge(8, 12);
  merge->eval();
  EXPECT_EQ(merge->forward(torch::randn({2, 5, 4, 8})).sizes(), (std::vector<int64_t>{2, 3, 2, 12}));
  rmt::nn::DWConv2d lce(6, 5, 1, 2);
  EXPECT_EQ(lce->conv->weight.sizes(), (std::vector<int64_t>{6, 1, 5, 5}));
  // Channels last in and out; a depthwise conv never mixes channels. No bias: the one product is
  // then the output exactly ((w + b) - b is w only within b's rounding, and LibTorch's generator
  // draws another init each run).
  lce->conv->bias.zero_();
  auto x = torch::zeros({1, 7, 7, 6});
  x.index_put_({0, 3, 3, 2}, 1.0);
  auto y = lce->forward(x);
  EXPECT_EQ(y.sizes(), x.sizes());
  EXPECT_EQ(y.index({0, "...", 1}).abs().sum().item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(y.index({0, 3, 3, 2}).item<float>(), lce->conv->weight.index({2, 0, 2, 2}).item<float>());
}

// The fused stem and merging fold each eval BatchNorm into its conv; with non-trivial running
// statistics they must agree with LibTorch's conv then BatchNorm (the Reference backend).
TEST(Modules, FoldedBatchNormsMatchConvThenBatchNorm) {
  auto randomize = [](torch::nn::Module& m) {
    torch::NoGradGuard no_grad;
    for (auto& b : m.named_buffers()) {
      if (b.key().find("running_mean") != std::string::npos) b.value().normal_();
      if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 2.0);
    }
    for (auto& p : m.named_parameters()) p.value().normal_();
  };
  rmt::nn::PatchEmbed stem(3, 8);
  rmt::nn::PatchMerging merge(8, 12);
  randomize(*stem);
  randomize(*merge);
  rmt::move_to(*stem, torch::kCPU, at::kDouble);
  rmt::move_to(*merge, torch::kCPU, at::kDouble);
  stem->eval();
  merge->eval();
  torch::NoGradGuard no_grad;
  const auto images = torch::randn({2, 3, 17, 12}, at::kDouble);
  const auto tokens = torch::randn({2, 5, 6, 8}, at::kDouble);
  stem->set_backend(rmt::nn::Backend::Reference);
  merge->set_backend(rmt::nn::Backend::Reference);
  const auto stem_ref = stem->forward(images);
  const auto merge_ref = merge->forward(tokens);
  stem->set_backend(rmt::nn::Backend::Fused);
  merge->set_backend(rmt::nn::Backend::Fused);
  EXPECT_LT(rmt::test::relative_error(stem->forward(images), stem_ref), 1e-13);
  EXPECT_LT(rmt::test::relative_error(merge->forward(tokens), merge_ref), 1e-13);
  EXPECT_GT(merge_ref.abs().max().item<double>(), 1.0);  // non-trivial statistics at work
}

// The model's output on the authors' op sequence (Reference), the fused path set again after.
at::Tensor literal_output(rmt::Model& model, const at::Tensor& images) {
  model.set_backend(rmt::nn::Backend::Reference);
  auto y = model.forward(images)[0];
  model.set_backend(rmt::nn::Backend::Fused);
  return y;
}

// The fused path keeps derived weights between calls (BatchNorms folded into their convs, Linear
// weights packed for oneDNN): they must follow every change of the weights they come from, in place
// (as a checkpoint load makes) or by a move to another dtype, and agree with the literal path.
TEST(Modules, KeptFoldedAndPackedWeightsFollowTheWeights) {
  auto model = rmt::Model::from_preset("rmt_t");
  model.eval();
  torch::NoGradGuard no_grad;
  const auto images = torch::randn({1, 3, 64, 64});
  auto literal = [&] { return literal_output(model, images); };
  const auto before = model.forward(images)[0];  // fills the caches
  EXPECT_LT(rmt::test::relative_error(before, literal()), 1e-5);
  for (auto& b : model.module()->named_buffers()) {
    if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 2.0);
    if (b.key().find("running_mean") != std::string::npos) b.value().normal_(0, 0.1);
  }
  for (auto& p : model.module()->named_parameters()) {
    if (p.key().find("proj.weight") != std::string::npos ||
        p.key().find("fc1.weight") != std::string::npos) {
      p.value().mul_(1.5);
    }
  }
  const auto after = model.forward(images)[0];
  EXPECT_GT(rmt::test::relative_error(after, before), 1e-3);  // the changes matter
  EXPECT_LT(rmt::test::relative_error(after, literal()), 1e-5);
  model.to(torch::kCPU, at::kDouble);
  const auto images64 = images.to(at::kDouble);
  const auto fused64 = model.forward(images64)[0];
  model.set_backend(rmt::nn::Backend::Reference);
  EXPECT_LT(rmt::test::relative_error(fused64, model.forward(images64)[0]), 1e-10);
}

// The packed weight `packed` keeps for `layer` (no row scale: token_linear's key is the weight and
// its row scale), or an undefined tensor where it keeps none.
at::Tensor kept_packed_weight(rmt::nn::detail::PackedLinear& packed,
                              const torch::nn::LinearImpl& layer) {
  const at::Tensor no_row_scale;
  const auto w =
      packed.get_at_least({&layer.weight, &no_row_scale}, 0, 0, [] { return at::Tensor(); });
  return w ? *w : at::Tensor();
}

// MKL runs a packed weight's GEMM on at most the threads it was packed on: a layer whose weight
// was packed on 1 thread (a first forward on 1 thread, or inside a parallel region) packs it again
// for a call on 2, once, and keeps it for later calls on 1; the other packed GEMMs' weights do not
// depend on the threads and are kept throughout. The cache's rule itself first: a value made at a
// level serves the calls that ask for at most that level.
TEST(Modules, PackedWeightsAreMadeAgainForMoreThreads) {
  namespace detail = rmt::nn::detail;
  detail::DerivedWeights<int> kept;
  auto source = torch::ones({2});
  int made = 0;
  auto make = [&] { return ++made; };
  EXPECT_EQ(kept.get_at_least({&source}, 1, 1, make), 1);
  EXPECT_EQ(kept.get_at_least({&source}, 0, 2, make), 1);  // any level serves
  EXPECT_EQ(kept.get_at_least({&source}, 2, 2, make), 2);  // made for 1, asked for 2: made again
  EXPECT_EQ(kept.get_at_least({&source}, 1, 1, make), 2);  // made for 2 serves 1
  source.add_(1);
  EXPECT_EQ(kept.get_at_least({&source}, 1, 1, make), 3);  // the source changed

  torch::NoGradGuard no_grad;
  const int threads_before = at::get_num_threads();
  torch::nn::Linear layer(torch::nn::LinearOptions(64, 48));
  const auto x = torch::randn({100, 64});
  detail::PackedLinear packed;
  auto kept_weight = [&]() -> const void* {
    const auto w = kept_packed_weight(packed, *layer);
    return w.defined() ? w.data_ptr() : nullptr;
  };
  const bool by_threads = detail::packed_gemm_name() == std::string("MKL's packed GEMM");
  at::set_num_threads(1);
  const auto on_one = detail::linear_tokens(*layer, x, &packed);
  const void* packed_on_one = kept_weight();
  at::set_num_threads(2);
  if (by_threads) EXPECT_EQ(detail::mkl::threads(), 2);
  const auto on_two = detail::linear_tokens(*layer, x, &packed);
  const void* packed_on_two = kept_weight();
  at::set_num_threads(1);
  detail::linear_tokens(*layer, x, &packed);
  at::set_num_threads(threads_before);
  // Wherever a packed GEMM runs float32 layers, the layer's weight is kept (a lookup that misses
  // would skip the checks below).
  const bool packs = detail::packed_gemm_name() != std::string("none (at::linear)");
  EXPECT_EQ(packed_on_one != nullptr, packs) << detail::packed_gemm_name();
  if (packs) {
    EXPECT_EQ(packed_on_two != packed_on_one, by_threads) << detail::packed_gemm_name();
    EXPECT_EQ(kept_weight(), packed_on_two);
  }
  const auto expected = at::linear(x, layer->weight, layer->bias);
  EXPECT_LT(rmt::test::relative_error(on_one, expected), 1e-5);
  EXPECT_LT(rmt::test::relative_error(on_two, expected), 1e-5);
}

// An FFN's fc2 with fewer than 384 outputs runs on oneDNN's microkernel where MKL's packed GEMM is
// the default (Intel CPUs, RMT_CPU_LINEAR unset) and the LibTorch has the microkernel; every other
// layer, and every layer where the user named a GEMM, on the one GEMM. The layer's numbers either
// way those of at::linear within float rounding.
TEST(Modules, NarrowFfnOutputLayersTakeTheMicrokernelBesideMkl) {
  namespace detail = rmt::nn::detail;
  const std::string general = detail::packed_gemm_name();
  const bool split = general == "MKL's packed GEMM" && std::getenv("RMT_CPU_LINEAR") == nullptr &&
                     detail::brgemm::available();
  const std::string fc2_gemm = split ? "oneDNN's brgemm microkernel" : general;
  EXPECT_EQ(detail::packed_gemm_name(detail::LinearRole::kGeneral, 64), general);
  EXPECT_EQ(detail::packed_gemm_name(detail::LinearRole::kFfnOutput, 64), fc2_gemm);
  EXPECT_EQ(detail::packed_gemm_name(detail::LinearRole::kFfnOutput, 383), fc2_gemm);
  EXPECT_EQ(detail::packed_gemm_name(detail::LinearRole::kFfnOutput, 384), general);
  EXPECT_EQ(detail::packed_gemm_description().find("fc2") != std::string::npos, split)
      << detail::packed_gemm_description();

  torch::NoGradGuard no_grad;
  torch::nn::Linear layer(torch::nn::LinearOptions(192, 64));
  const auto x = torch::randn({100, 192});
  detail::PackedLinear packed(detail::LinearRole::kFfnOutput);
  const auto out = detail::linear_tokens(*layer, x, &packed);
  EXPECT_LT(rmt::test::relative_error(out, at::linear(x, layer->weight, layer->bias)), 1e-5);
  const auto kept = kept_packed_weight(packed, *layer);
  ASSERT_TRUE(kept.defined());
  // The microkernel keeps the weight transposed (in, out); MKL's packed layout is one flat buffer.
  if (split) EXPECT_EQ(kept.sizes(), at::IntArrayRef({192, 64}));
}

// A model built under InferenceMode has inference tensors as weights, whose changes no cache can
// follow: the fused path then derives nothing between calls and must still agree with the literal
// path, before and after an in-place change of its weights.
TEST(Modules, InferenceTensorWeightsAreNeverKeptStale) {
  c10::InferenceMode inference;
  auto model = rmt::Model::from_preset("rmt_t");
  model.eval();
  ASSERT_TRUE(model.module()->parameters()[0].is_inference());
  const auto images = torch::randn({1, 3, 64, 64});
  auto literal = [&] { return literal_output(model, images); };
  const auto before = model.forward(images)[0];
  EXPECT_LT(rmt::test::relative_error(before, literal()), 1e-5);
  for (auto& p : model.module()->named_parameters()) {
    if (p.key().find("fc1.weight") != std::string::npos) p.value().mul_(1.5);
  }
  for (auto& b : model.module()->named_buffers()) {
    if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 2.0);
  }
  const auto after = model.forward(images)[0];
  EXPECT_GT(rmt::test::relative_error(after, before), 1e-3);
  EXPECT_LT(rmt::test::relative_error(after, literal()), 1e-5);
}

// The Winograd 3x3 convolution against at::conv2d in double, with bias and GELU: heights and
// widths that are not multiples of the 4x4 tiles (a last tile partly outside), one pixel, channel
// counts 8 to 64, images whose tiles span several blocks, on 1 and 2 threads. Each output within
// 2.5e-5 of the largest (the transforms' coefficients, up to 8, add roundings to the direct form's).
TEST(Modules, WinogradConvMatchesConv2d) {
  namespace winograd = rmt::nn::detail::winograd;
  if (!winograd::available()) GTEST_SKIP() << "no float32 microkernel in this LibTorch or no AVX2";
  torch::NoGradGuard no_grad;
  torch::manual_seed(13);  // the same inputs every run (the bound below is a few times their error)
  const int threads_before = at::get_num_threads();
  struct Case {
    int64_t batch, in, out, height, width;
  };
  for (const int threads : {1, 2}) {
    at::set_num_threads(threads);
    for (const auto& c : std::vector<Case>{{2, 32, 16, 9, 7}, {1, 8, 8, 1, 1}, {1, 16, 24, 40, 41},
                                           {3, 64, 64, 14, 14}, {1, 8, 56, 2, 3}}) {
      const auto x = torch::randn({c.batch, c.in, c.height, c.width})
                         .contiguous(at::MemoryFormat::ChannelsLast);
      const auto w = torch::randn({c.out, c.in, 3, 3}) * 0.2, b = torch::randn({c.out});
      ASSERT_TRUE(winograd::applies(x, c.out));
      const auto u = winograd::transform_weight(w);
      for (const bool gelu : {false, true}) {
        auto want = at::conv2d(x.to(at::kDouble), w.to(at::kDouble), b.to(at::kDouble), 1, 1);
        if (gelu) want = at::gelu(want);
        const auto got = winograd::conv3x3(x, u, b, gelu);
        EXPECT_TRUE(got.is_contiguous(at::MemoryFormat::ChannelsLast));
        ASSERT_EQ(got.sizes(), want.sizes());
        const double err = (got.to(at::kDouble) - want).abs().max().item<double>();
        // F(4x4, 3x3) in float: up to 1e-5 of the largest output over many random draws (the
        // direct form: ~2e-7); a wrong transform coefficient is off by 1e-2 or more.
        EXPECT_LT(err, 2.5e-5 * want.abs().max().item<double>())
            << threads << " threads, " << c.batch << " x " << c.in << " -> " << c.out << " at "
            << c.height << " x " << c.width << (gelu ? ", GELU" : "");
      }
    }
  }
  at::set_num_threads(threads_before);
  const auto odd = torch::randn({1, 12, 8, 8}).contiguous(at::MemoryFormat::ChannelsLast);
  EXPECT_FALSE(winograd::applies(odd, 16));  // 12 channels: not whole vectors, oneDNN's instead
  EXPECT_FALSE(winograd::applies(torch::randn({1, 16, 8, 8}), 16));  // not channels-last
  EXPECT_THROW(winograd::conv3x3(odd, winograd::transform_weight(torch::randn({16, 12, 3, 3})),
                                 {}, false),
               c10::Error);
}

// The float GELU of the GEMM epilogue and the FFN's depthwise pass (16 lanes: a table of
// polynomials on 16 intervals; narrower vectors: a rational erf), element by element against the
// definition x / 2 (1 + erf(x / sqrt 2)) in double over [-12, 12] in steps of 1e-4 (every interval
// many times; the end of the table at 4 sqrt 2 ~ 5.66), bias added first, the scalar tail too.
// Both are within 2.1e-7 of max(1, |x|); a relative-norm comparison would miss one bad interval.
TEST(Modules, GeluMatchesItsDefinitionElementwise) {
  std::vector<float> x;
  for (int64_t i = -120000; i <= 120000; ++i) x.push_back(static_cast<float>(i * 1e-4));
  x.resize(x.size() / 16 * 16 + 7);  // a tail of 7 past the last whole vector
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<float> bias(n, 0.25f), got(n);
  for (int64_t i = 0; i < n; ++i) got[i] = x[i] - 0.25f;  // the bias brings it back to x exactly
  rmt::ops::cpu::add_bias_gelu(got.data(), 1, n, bias.data(), /*gelu=*/true);
  double worst = 0.0, at = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i], want = 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
    const double err = std::fabs(got[i] - want) / std::max(1.0, std::fabs(v));
    if (err > worst) worst = err, at = v;
  }
  EXPECT_LT(worst, 3e-7) << "worst at x = " << at;
  std::vector<float> special{std::nanf(""), INFINITY, 1e30f, -1e30f, 0.0f, -0.0f};
  special.resize(16, 1.0f);
  rmt::ops::cpu::add_bias_gelu(special.data(), 1, 16, nullptr, true);
  EXPECT_TRUE(std::isnan(special[0]));
  EXPECT_EQ(special[1], INFINITY);
  EXPECT_EQ(special[2], 1e30f);
  EXPECT_EQ(special[3], 0.0f);
  EXPECT_EQ(special[4], 0.0f);
  EXPECT_EQ(special[5], 0.0f);
}

#if RMT_HAVE_AVX2_VARIANT
// The attention kernel's 2^x on 16 lanes (AVX-512) and on 8 (AVX2), where vexp2_nonpos_of takes
// its table form, over n (a multiple of 16) arguments.
template <class V, class I>
RMT_ALWAYS_INLINE void exp2_lanes(const float* in, float* out, int64_t n) {
  namespace cpu = rmt::ops::cpu;
  for (int64_t i = 0; i < n; i += sizeof(V) / sizeof(float)) {
    cpu::vstore(out + i, cpu::vexp2_nonpos_of<V, I>(cpu::vload<float, V>(in + i)));
  }
}
RMT_TARGET_AVX512 RMT_FLATTEN void exp2_16_lanes(const float* in, float* out, int64_t n) {
  exp2_lanes<rmt::ops::cpu::VecN<float, 64>, rmt::ops::cpu::VecN<int32_t, 64>>(in, out, n);
}
RMT_TARGET_AVX2 RMT_FLATTEN void exp2_8_lanes(const float* in, float* out, int64_t n) {
  exp2_lanes<rmt::ops::cpu::VecN<float, 32>, rmt::ops::cpu::VecN<int32_t, 32>>(in, out, n);
}

// The attention's 2^x for x <= 0 on `lanes` lanes (a table of 2^(k / lanes) and a cubic), element
// by element against exp2 in double over [-100, 0] in steps of 1e-4 (every table entry many
// times): within 1.5e-7 (about an ulp; measured 1.05e-7 on 16 lanes, 1.1e-7 on 8) down to 2^-92,
// exactly 0 below (and for -inf), NaN kept.
void expect_exp2_on_lanes_matches_exp2(int lanes) {
  std::vector<float> x;
  for (int64_t i = -1000000; i <= 0; ++i) x.push_back(static_cast<float>(i * 1e-4));
  for (float v : {-92.0f, -92.00001f, -126.0f, -1e30f, -INFINITY, std::nanf(""), -0.0f}) {
    x.push_back(v);
  }
  x.resize((x.size() + 15) / 16 * 16, 0.0f);
  std::vector<float> got(x.size());
  (lanes == 16 ? exp2_16_lanes : exp2_8_lanes)(x.data(), got.data(),
                                               static_cast<int64_t>(x.size()));
  double worst = 0.0, at = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i])) {
      EXPECT_TRUE(std::isnan(got[i]));
    } else if (x[i] < -92.0f) {
      EXPECT_EQ(got[i], 0.0f) << "at x = " << x[i];
    } else {
      const double want = std::exp2(static_cast<double>(x[i]));
      const double err = std::fabs(got[i] - want) / want;
      if (err > worst) worst = err, at = x[i];
    }
  }
  EXPECT_LT(worst, 1.5e-7) << "worst at x = " << at << " on " << lanes << " lanes";
  std::printf("  2^x on %d lanes: worst relative error %.3g (at x = %g)\n", lanes, worst, at);
}
#endif

TEST(Kernels, Exp2OnSixteenLanesMatchesExp2Elementwise) {
#if RMT_HAVE_AVX2_VARIANT
  if (!rmt::ops::cpu::use_avx512()) GTEST_SKIP() << "no AVX-512 on this CPU";
  expect_exp2_on_lanes_matches_exp2(16);
#else
  GTEST_SKIP() << "no vector variants in this build";
#endif
}

TEST(Kernels, Exp2OnEightLanesMatchesExp2Elementwise) {
#if RMT_HAVE_AVX2_VARIANT
  if (!rmt::ops::cpu::use_avx2()) GTEST_SKIP() << "no AVX2 on this CPU";
  expect_exp2_on_lanes_matches_exp2(8);
#else
  GTEST_SKIP() << "no vector variants in this build";
#endif
}

// The packed GEMMs with row calls, oneDNN's microkernel (nn/brgemm_gemm.h), ours for AVX2
// (nn/avx2_gemm.h) and MKL's (nn/mkl_gemm.h), against at::linear, on 1 and 2 threads: rows split
// between threads (300 rows), columns split where rows are few (49 rows, a head's 1 row; widths
// that are not multiples of 16), the calling thread alone for a tiny layer, no input features (the
// bias alone), no output features; with and without bias, with the GELU, and adding into a tensor.
TEST(Modules, PackedGemmsMatchAtLinear) {
  namespace detail = rmt::nn::detail;
  struct Gemm {
    const char* name;
    bool available;
    std::function<at::Tensor(const at::Tensor&, int64_t)> pack;
    using Linear = at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, const at::Tensor&,
                              bool);
    std::function<Linear> linear;
    std::function<void(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor&)> add;
  };
  const std::vector<Gemm> gemms{
      {"brgemm", detail::brgemm::available(),
       [](const at::Tensor& w, int64_t) { return detail::brgemm::pack_linear(w); },
       &detail::brgemm::linear, &detail::brgemm::linear_add_},
      {"avx2", detail::avx2_gemm::available(),
       [](const at::Tensor& w, int64_t) { return detail::avx2_gemm::pack_linear(w); },
       &detail::avx2_gemm::linear, &detail::avx2_gemm::linear_add_},
      {"mkl", detail::mkl::available(), &detail::mkl::pack_linear, &detail::mkl::linear,
       &detail::mkl::linear_add_}};
  torch::NoGradGuard no_grad;
  const int threads_before = at::get_num_threads();
  // {70, 1100, 300}: a weight larger than half an L2 of up to 2 MiB, so that the microkernel's
  // path runs it in column panels and depth slices, each with a remainder; {49, 1100, 300} and
  // {1, 512, 1000}: the same with one block of rows (its panels of 256 and slices of 64, the next
  // panel prefetched). For the AVX2 kernel's tiles of 6 rows: remainders of 1 to 5 rows (49, 70,
  // 14, 3, 17; a last 7 or 8 rows as tiles of 4 and 3 or 4 and 4: 49, 14), strips of 16 columns
  // with a narrower last one (40, 100, 1000, 300, 5), depth slices of 256 with a remainder (1100,
  // 300), and {600, 300, 40}: more rows than a block holds with an L2 of up to 1 MiB (half of it
  // for 256-deep rows: 512 rows).
  const std::vector<std::array<int64_t, 3>> shapes{
      {300, 24, 40}, {49, 64, 100}, {1, 512, 1000}, {70, 1100, 300}, {49, 1100, 300},
      {3, 8, 5},     {14, 300, 48}, {17, 16, 16},   {600, 300, 40},  {4, 0, 6},
      {5, 3, 0}};
  int ran = 0;
  for (const auto& gemm : gemms) {
    if (!gemm.available) continue;
    ++ran;
    for (const int threads : {1, 2}) {
      at::set_num_threads(threads);
      for (const auto& [rows, in, out] : shapes) {
        const auto x = torch::randn({rows, in}), w = torch::randn({out, in}) * 0.2;
        const auto b = torch::randn({out}), base = torch::randn({rows, out});
        const auto packed = gemm.pack(w, rows);
        const std::string what = std::string(gemm.name) + ", " + std::to_string(threads) +
                                 " threads, " + std::to_string(rows) + " x " +
                                 std::to_string(in) + " -> " + std::to_string(out);
        if (out == 0) {  // nothing to compute: the shapes (a relative error of nothing is 0 / 0)
          EXPECT_EQ(gemm.linear(x, packed, out, b, true).sizes(), at::IntArrayRef({rows, 0}))
              << what;
          auto into = base.clone();
          gemm.add(x, packed, b, into);
          EXPECT_EQ(into.sizes(), base.sizes()) << what;
          continue;
        }
        EXPECT_LT(rmt::test::relative_error(gemm.linear(x, packed, out, b, false),
                                            at::linear(x, w, b)),
                  1e-5) << what;
        if (in == 0) {  // no products: zeros (a relative error against zeros is 0 / 0)
          EXPECT_TRUE(
              torch::equal(gemm.linear(x, packed, out, {}, false), torch::zeros({rows, out})))
              << what;
        } else {
          EXPECT_LT(rmt::test::relative_error(gemm.linear(x, packed, out, {}, false),
                                              at::linear(x, w)),
                    1e-5) << what;
        }
        EXPECT_LT(rmt::test::relative_error(gemm.linear(x, packed, out, b, /*gelu=*/true),
                                            at::gelu(at::linear(x, w, b))),
                  1e-5) << what;
        auto into = base.clone();
        gemm.add(x, packed, b, into);
        EXPECT_LT(rmt::test::relative_error(into, base + at::linear(x, w, b)), 1e-5) << what;
      }
    }
    at::set_num_threads(threads_before);
    auto wrong = torch::zeros({299, 40});
    const auto x = torch::randn({300, 24});
    EXPECT_THROW(gemm.add(x, gemm.pack(torch::randn({40, 24}), 300), {}, wrong), c10::Error)
        << gemm.name;
  }
  if (ran == 0) {
    GTEST_SKIP() << "no packed GEMM with row calls here (MKL's and a float32 brgemm need the "
                    "LibTorch to export them, ours an AVX2 CPU and a GCC build)";
  }
}

TEST(Modules, FeedForwardRefusesAnEmptyWidthByName) {
  for (const auto& [dim, hidden] : {std::pair<int64_t, int64_t>{8, 0}, {0, 8}, {-1, 8}}) {
    try {
      rmt::nn::FeedForward ffn(dim, hidden);
      ADD_FAILURE() << dim << ", " << hidden << ": no error";
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find("embed_dim=" + std::to_string(dim) +
                                           " and ffn_dim=" + std::to_string(hidden)),
                std::string::npos)
          << e.what();
    }
  }
}

// An FFN of 8 -> 24 channels in eval mode, its weights drawn wider than the default's.
rmt::nn::FeedForward small_ffn() {
  rmt::nn::FeedForward ffn(8, 24);
  ffn->eval();
  torch::NoGradGuard no_grad;
  for (auto& p : ffn->parameters()) p.normal_(0, 0.3);
  return ffn;
}

// Why the FFN row pipeline cannot run here (its layers' GEMM has no row calls), or "".
std::string no_row_pipeline(const rmt::nn::FeedForward& ffn) {
  rmt::nn::detail::PackedLinear probe;
  if (rmt::nn::detail::row_gemm_weight(*ffn->fc1, 1, &probe)) return "";
  return std::string("the linear layers run on ") + rmt::nn::detail::packed_gemm_name() +
         ", which has no row calls";
}

// At CPU inference the FFN runs a few image rows at a time (nn/ffn_rows.h), each thread on whole
// images or on a share of one image's rows. On sizes that make it slide its row buffer (30 rows of
// 56: chunks of 5, a buffer of 22 rows), end on a short chunk, split one image between two threads
// and run single-row images, it must agree with the authors' FFN (the literal path), and take the
// call wherever the layers' GEMM has row calls (MKL's, oneDNN's microkernel: ctest runs this with
// each); where a share would be under 8 rows it declines.
TEST(Modules, FeedForwardRowPipelineMatchesTheLiteralPath) {
  auto ffn = small_ffn();
  torch::NoGradGuard no_grad;
  if (const auto why = no_row_pipeline(ffn); !why.empty()) GTEST_SKIP() << why;
  auto packed1 = std::make_shared<rmt::nn::detail::PackedLinear>();
  auto packed2 = std::make_shared<rmt::nn::detail::PackedLinear>();
  const int threads_before = at::get_num_threads();
  const std::vector<std::vector<int64_t>> sizes{{1, 30, 56, 8}, {3, 37, 9, 8}, {2, 1, 5, 8}, {1, 16, 3, 8}};
  for (const int threads : {1, 2}) {
    at::set_num_threads(threads);
    for (const auto& size : sizes) {
      const auto x = torch::randn(size), base = torch::randn(size);
      ffn->set_backend(rmt::nn::Backend::Reference);
      const auto expected = base + ffn->forward(x);
      ffn->set_backend(rmt::nn::Backend::Fused);
      auto into = base.clone();
      const bool ran = rmt::nn::detail::ffn_rows_add_(*ffn->fc1, *ffn->fc2, ffn->dwconv->kernel_weight(),
                                                      ffn->dwconv->conv->bias, 1, x, into,
                                                      packed1.get(), packed2.get());
      std::string what = std::to_string(threads) + " threads, x";
      for (const auto n : size) what += " " + std::to_string(n);
      // 2 threads on one image of 16 rows: shares of 8 rows, taken; on {2, 1, 5}: one image each.
      EXPECT_TRUE(ran) << what;
      EXPECT_LT(rmt::test::relative_error(into, expected), 1e-5) << what;
      auto via_module = base.clone();
      ffn->forward_add_(x, via_module);
      EXPECT_LT(rmt::test::relative_error(via_module, expected), 1e-5) << what;
    }
  }
  // One image of 14 rows on 2 threads: shares of 7 rows, declined (the caller's layer-by-layer path).
  at::set_num_threads(2);
  auto into = torch::zeros({1, 14, 14, 8});
  EXPECT_FALSE(rmt::nn::detail::ffn_rows_add_(*ffn->fc1, *ffn->fc2, ffn->dwconv->kernel_weight(),
                                              ffn->dwconv->conv->bias, 1, torch::randn({1, 14, 14, 8}),
                                              into, packed1.get(), packed2.get()));
  EXPECT_EQ(into.abs().max().item<float>(), 0.0f);
  // x itself as `into` (into += ffn(into)): declined, and the module still right.
  auto same = torch::randn({1, 30, 56, 8});
  EXPECT_FALSE(rmt::nn::detail::ffn_rows_add_(*ffn->fc1, *ffn->fc2, ffn->dwconv->kernel_weight(),
                                              ffn->dwconv->conv->bias, 1, same, same, packed1.get(),
                                              packed2.get()));
  ffn->set_backend(rmt::nn::Backend::Reference);
  const auto expected_same = same + ffn->forward(same);
  ffn->set_backend(rmt::nn::Backend::Fused);
  ffn->forward_add_(same, same);
  EXPECT_LT(rmt::test::relative_error(same, expected_same), 1e-5);
  at::set_num_threads(threads_before);
}

// With a layer scale folded into fc2 (RMT-B's and RMT-L's blocks): forward_add_ and
// norm_forward_add_ give the scaled literal FFN, through the row pipeline (30 rows), the
// layer-by-layer path (14 rows on 2 threads, declined by the pipeline) and, in float64, a separate
// scaled output; and follow scale when it changes in place.
TEST(Modules, FeedForwardFoldsTheLayerScale) {
  auto ffn = small_ffn();
  torch::nn::LayerNorm norm(torch::nn::LayerNormOptions({8}).eps(1e-6));
  norm->eval();
  torch::NoGradGuard no_grad;
  const int threads_before = at::get_num_threads();
  at::set_num_threads(2);
  auto scale = torch::rand({1, 1, 1, 8}) + 0.5;
  for (const int round : {0, 1}) {
    if (round == 1) scale.mul_(-3);  // in place: the kept fold is stale
    for (const std::vector<int64_t> size : {std::vector<int64_t>{1, 30, 56, 8}, {1, 14, 14, 8}}) {
      const auto x = torch::randn(size), base = torch::randn(size);
      ffn->set_backend(rmt::nn::Backend::Reference);
      const auto expected = base + scale * ffn->forward(x);
      const auto expected_norm = x + scale * ffn->forward(norm->forward(x));
      ffn->set_backend(rmt::nn::Backend::Fused);
      const std::string what =
          "round " + std::to_string(round) + ", " + std::to_string(size[1]) + " rows";
      auto into = base.clone();
      ffn->forward_add_(x, into, scale);
      EXPECT_LT(rmt::test::relative_error(into, expected), 1e-5) << what;
      auto y = x.clone();
      if (ffn->norm_forward_add_(*norm, y, scale)) {
        EXPECT_LT(rmt::test::relative_error(y, expected_norm), 1e-5) << what;
      } else {
        EXPECT_TRUE(y.equal(x)) << what;  // declined: x as it was
        EXPECT_TRUE(size[1] == 14 || !no_row_pipeline(ffn).empty()) << what;
      }
    }
  }
  rmt::move_to(*ffn, torch::kCPU, at::kDouble);
  const auto x = torch::randn({1, 9, 9, 8}, at::kDouble);
  const auto base = torch::randn({1, 9, 9, 8}, at::kDouble);
  const auto scale64 = scale.to(at::kDouble);
  auto into = base.clone();
  ffn->forward_add_(x, into, scale64);
  EXPECT_LT(rmt::test::relative_error(into, base + scale64 * ffn->forward(x)), 1e-14);
  at::set_num_threads(threads_before);
}

// norm_forward_add_ (the block's last step at inference: x += ffn(norm(x)), the pipeline
// normalizing x's rows as fc1 takes them while fc2 adds into those same rows) must give the
// authors' LayerNorm then FFN (LibTorch's LayerNorm, the literal path), on the sizes above and a
// taller image: two threads on one image, where each share's rows next to the other's must be
// the norms of x before the other thread added to them, and images a thread each. Where the
// pipeline does not run it declines, leaving x as it was.
TEST(Modules, FeedForwardNormForwardAddMatchesNormThenForward) {
  auto ffn = small_ffn();
  torch::nn::LayerNorm norm(torch::nn::LayerNormOptions({8}).eps(1e-6));
  norm->eval();
  torch::NoGradGuard no_grad;
  if (const auto why = no_row_pipeline(ffn); !why.empty()) GTEST_SKIP() << why;
  norm->weight.normal_(1, 0.3);
  norm->bias.normal_(0, 0.3);
  const int threads_before = at::get_num_threads();
  // 120 rows on 2 threads: shares of 24 chunks, so that one thread reads the rows next to its
  // share long after the other, started late by its wake-up, added to them.
  const std::vector<std::vector<int64_t>> sizes{
      {1, 120, 56, 8}, {1, 30, 56, 8}, {3, 37, 9, 8}, {2, 1, 5, 8}, {1, 16, 3, 8}};
  for (const int threads : {1, 2}) {
    at::set_num_threads(threads);
    for (const auto& size : sizes) {
      // x small against what fc2 adds: a row normalized after its neighbour's fc2 added to it
      // would be far off (a LayerNorm does not see a row's scale, only its shape).
      const auto x = torch::randn(size) * 0.01;
      ffn->set_backend(rmt::nn::Backend::Reference);
      const auto expected = x + ffn->forward(norm->forward(x));
      ffn->set_backend(rmt::nn::Backend::Fused);
      auto into = x.clone();
      std::string what = std::to_string(threads) + " threads, x";
      for (const auto n : size) what += " " + std::to_string(n);
      EXPECT_TRUE(ffn->norm_forward_add_(*norm, into)) << what;
      EXPECT_LT(rmt::test::relative_error(into, expected), 1e-5) << what;
    }
  }
  // One image of 14 rows on 2 threads: shares of 7 rows, declined, x untouched.
  at::set_num_threads(2);
  const auto x = torch::randn({1, 14, 14, 8});
  auto into = x.clone();
  EXPECT_FALSE(ffn->norm_forward_add_(*norm, into));
  EXPECT_TRUE(into.equal(x));
  // Under autograd: declined (the caller's LayerNorm and forward record the graph).
  {
    torch::AutoGradMode grad(true);
    auto y = torch::randn({1, 30, 56, 8});
    EXPECT_FALSE(ffn->norm_forward_add_(*norm, y));
  }
  at::set_num_threads(threads_before);
}

}  // namespace

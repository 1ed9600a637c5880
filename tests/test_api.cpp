// The API of timm's habits: forward_head, reset_classifier, feature_info, the presets' pretrained
// configs, inference under c10::InferenceMode; against the authors' reference numbers.
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "reference.h"
#include "rmt/rmt.h"

namespace {

using rmt::test::manifest_case;
using rmt::test::relative_error;

using Case = rmt::test::ReferenceCase;

// A case of the reference manifest (tests/data), in float64.
Case load_case(const std::string& name) {
  auto c = rmt::test::load_manifest_case(name);
  c.model.to(torch::kCPU, torch::kFloat64);
  c.input = c.input.to(at::kDouble);
  for (auto& e : c.expected) e = e.to(at::kDouble);
  return c;
}

// --- forward_head ------------------------------------------------------------------------------

TEST(ForwardHead, AfterForwardFeaturesGivesTheAuthorsLogits) {
  auto c = load_case("tiny_cls");
  auto net = c.model.classifier();
  torch::NoGradGuard no_grad;
  const auto features = net->forward_features(c.input);
  EXPECT_EQ(features.sizes(), (std::vector<int64_t>{c.input.size(0), net->config().projection}));
  EXPECT_LT(relative_error(net->forward_head(features), c.expected[0]), 1e-10);
  EXPECT_TRUE(torch::equal(net->forward_head(features, /*pre_logits=*/true), features));
  // Something other than pooled features is named.
  try {
    net->forward_head(at::zeros({2, 5}, at::kDouble));
    ADD_FAILURE() << "no exception";
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    EXPECT_NE(what.find("expected pooled features (B, 96), found shape [2, 5]"), std::string::npos)
        << what;
  }
}

// --- reset_classifier ----------------------------------------------------------------------------

std::map<std::string, at::Tensor> parameters_except_heads(const torch::nn::Module& m) {
  std::map<std::string, at::Tensor> out;
  for (const auto& p : m.named_parameters()) {
    if (p.key().rfind("head.", 0) != 0 && p.key().rfind("aux_head.", 0) != 0) {
      out[p.key()] = p.value().detach().clone();
    }
  }
  return out;
}

TEST(ResetClassifier, ANewHeadOnTheAuthorsBackbone) {
  auto c = load_case("tiny_cls");
  auto net = c.model.classifier();
  const auto before = parameters_except_heads(*net);
  torch::NoGradGuard no_grad;

  c.model.reset_classifier(7);
  EXPECT_EQ(c.model.config().num_classes, 7);
  EXPECT_EQ(net->config().num_classes, 7);
  const auto features = net->forward_features(c.input);
  const auto logits = c.model.forward(c.input)[0];
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{c.input.size(0), 7}));
  EXPECT_TRUE(torch::equal(logits, net->forward_head(features)));
  // The backbone is the authors' still: the same parameters, the same pooled features as before
  // (forward_head of the old head gave their logits, checked above).
  const auto after = parameters_except_heads(*net);
  ASSERT_EQ(after.size(), before.size());
  for (const auto& [name, value] : before) {
    EXPECT_TRUE(torch::equal(after.at(name), value)) << name;
  }
  // The authors' Linear init: normal weights with std 0.02, zero bias, the model's dtype.
  ASSERT_TRUE(net->head);
  EXPECT_EQ(net->head->weight.sizes(), (std::vector<int64_t>{7, net->config().projection}));
  EXPECT_EQ(net->head->weight.scalar_type(), at::kDouble);
  const double std = net->head->weight.std().item<double>();
  EXPECT_GT(std, 0.015);
  EXPECT_LT(std, 0.025);
  EXPECT_TRUE(torch::equal(net->head->bias, at::zeros({7}, at::kDouble)));
  EXPECT_EQ(rmt::state_dict(*net).find("head.weight")->size(0), 7);

  // No head: forward returns the pooled features; a head can come back.
  c.model.reset_classifier(0);
  EXPECT_FALSE(net->head);
  EXPECT_EQ(rmt::state_dict(*net).find("head.weight"), nullptr);
  EXPECT_TRUE(torch::equal(c.model.forward(c.input)[0], features));
  c.model.reset_classifier(3);
  EXPECT_EQ(c.model.forward(c.input)[0].sizes(), (std::vector<int64_t>{c.input.size(0), 3}));
}

TEST(ResetClassifier, TokenLabelingReplacesBothHeads) {
  auto c = load_case("tiny_token_label");
  auto net = c.model.classifier();
  c.model.reset_classifier(4);
  const auto x = c.input.narrow(0, 0, 1);  // one image: the backward pass is in float64
  const int64_t b = 1;
  auto [head, aux] = net->forward_train(x);
  EXPECT_EQ(head.sizes(), (std::vector<int64_t>{b, 4}));
  EXPECT_EQ(aux.size(0), b);
  EXPECT_EQ(aux.size(2), 4);
  EXPECT_EQ(net->aux_head->weight.size(1), net->config().embed_dims.back());
  // Gradients reach the new heads: fine-tuning trains them.
  (head.sum() + aux.sum()).backward();
  EXPECT_TRUE(net->head->weight.grad().defined());
  EXPECT_TRUE(net->aux_head->weight.grad().defined());
}

TEST(ResetClassifier, IsForClassifiers) {
  auto dense = rmt::Model::from_preset("rmt_t_dense");
  EXPECT_THROW(dense.reset_classifier(10), c10::Error);
}

// --- feature_info --------------------------------------------------------------------------------

TEST(FeatureInfo, DescribesEveryOutputOfTheAuthorsDenseBackbone) {
  auto c = load_case("tiny_dense");
  const auto info = c.model.feature_info();
  ASSERT_EQ(info.size(), c.expected.size());
  const int64_t h = c.input.size(2), w = c.input.size(3);
  for (size_t i = 0; i < info.size(); ++i) {
    const auto& shape = c.expected[i].sizes();  // the authors' feature map i
    EXPECT_EQ(info[i].channels, shape[1]) << i;
    EXPECT_EQ((h + info[i].reduction - 1) / info[i].reduction, shape[2]) << i;
    EXPECT_EQ((w + info[i].reduction - 1) / info[i].reduction, shape[3]) << i;
    EXPECT_EQ(info[i].module, "extra_norms." + std::to_string(info[i].stage));
  }
}

TEST(FeatureInfo, FollowsOutIndicesAndOddSizes) {
  auto preset = rmt::preset("rmt_s_dense");
  auto model = rmt::Model(preset.config, preset.kind);
  std::vector<int64_t> channels, reductions;
  for (const auto& f : model.feature_info()) {
    channels.push_back(f.channels);
    reductions.push_back(f.reduction);
  }
  EXPECT_EQ(channels, (std::vector<int64_t>{64, 128, 256, 512}));
  EXPECT_EQ(reductions, (std::vector<int64_t>{4, 8, 16, 32}));

  auto config = manifest_case("tiny_dense").at("config").dump();
  auto tiny = rmt::config_from_json(config, rmt::ModelKind::Dense);
  tiny.out_indices = {3, 0};
  rmt::DenseBackbone net(tiny);
  net->eval();
  const auto info = net->feature_info();
  ASSERT_EQ(info.size(), 2u);
  EXPECT_EQ(info[0].stage, 0);
  EXPECT_EQ(info[1].stage, 3);
  c10::InferenceMode inference;
  const auto maps = net->forward(at::rand({1, 3, 50, 70}));
  ASSERT_EQ(maps.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(maps[i].size(1), info[i].channels);
    EXPECT_EQ(maps[i].size(2), (50 + info[i].reduction - 1) / info[i].reduction);
    EXPECT_EQ(maps[i].size(3), (70 + info[i].reduction - 1) / info[i].reduction);
  }

  EXPECT_THROW(rmt::Model::from_preset("rmt_t").feature_info(), c10::Error);
}

// --- pretrained configs --------------------------------------------------------------------------

TEST(Pretrained, TheAuthorsEvaluationOfEachPreset) {
  // classfication_release/datasets.py: Resize(int(256 / 224 * 224)) bicubic, CenterCrop(224);
  // classification_token_label_release/main.py: timm's loader with crop_pct 0.96.
  const auto s = rmt::pretrained_config("rmt_s");
  EXPECT_EQ(s.checkpoint, "RMT-S");
  EXPECT_EQ(s.weights_key, "model");
  EXPECT_EQ(s.input_size, 224);
  EXPECT_EQ(s.interpolation, "bicubic");
  EXPECT_EQ(s.preprocess().resize_size(), 256);
  EXPECT_EQ(rmt::pretrained_config("rmt_b_tl").preprocess().resize_size(), 233);
  EXPECT_EQ(rmt::pretrained_config("rmt_l_tl").checkpoint, "RMT-L*");
  const rmt::PreprocessOptions timm;
  EXPECT_EQ(s.preprocess().mean, timm.mean);
  EXPECT_EQ(s.preprocess().stddev, timm.stddev);

  for (const auto& name : rmt::pretrained_presets()) {
    const auto c = rmt::pretrained_config(name);
    EXPECT_EQ(c.num_classes, rmt::preset(name).config.num_classes) << name;
    EXPECT_NE(c.url.find(c.url_code), std::string::npos) << name;
    EXPECT_TRUE(rmt::has_pretrained_config(name));
  }
  EXPECT_EQ(rmt::pretrained_presets().size(), 7u);
  EXPECT_FALSE(rmt::has_pretrained_config("rmt_s_dense"));
  try {
    rmt::pretrained_config("rmt_s_dense");
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'rmt_s_dense'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("rmt_t, rmt_s, rmt_b, rmt_l, rmt_s_tl"), std::string::npos)
        << e.what();
  }
}

// --- inference mode ------------------------------------------------------------------------------

// The tools run models under c10::InferenceMode: the fused kernels' in-place work included, the
// numbers are the authors'.
TEST(InferenceMode, GivesTheAuthorsNumbersWithEveryBackend) {
  for (const std::string name : {"tiny_cls", "tiny_token_label", "tiny_dense"}) {
    for (const auto backend : {rmt::nn::Backend::Fused, rmt::nn::Backend::Reference}) {
      auto c = load_case(name);
      c.model.set_backend(backend);
      c10::InferenceMode inference;
      const auto outputs = c.model.forward(c.input);
      ASSERT_EQ(outputs.size(), c.expected.size());
      for (size_t i = 0; i < outputs.size(); ++i) {
        EXPECT_TRUE(outputs[i].is_inference());
        EXPECT_LT(relative_error(outputs[i], c.expected[i]), 1e-10) << name << " output " << i;
      }
    }
  }
}

}  // namespace

// Parity with the authors' implementation: every case of the reference manifest, float64 and float32,
// plus tiny_cls's intermediates, EMA weights and the other copies of its weights.
#include <gtest/gtest.h>

#include "reference.h"
#include "rmt/rmt.h"

namespace {

using rmt::test::data_path;
using rmt::test::manifest_case;
using rmt::test::relative_error;

using LoadedCase = rmt::test::ReferenceCase;
using rmt::test::build_manifest_model;

LoadedCase load_case(const std::string& name) { return rmt::test::load_manifest_case(name); }

// Runs the case in `dtype` with the given attention backend and returns the worst relative error.
double worst_error(LoadedCase& c, at::ScalarType dtype, rmt::nn::Backend backend) {
  c.model.to(torch::kCPU, dtype);
  c.model.set_backend(backend);
  torch::NoGradGuard no_grad;
  auto outputs = c.model.forward(c.input.to(dtype));
  EXPECT_EQ(outputs.size(), c.expected.size());
  double worst = 0;
  for (size_t i = 0; i < outputs.size() && i < c.expected.size(); ++i) {
    EXPECT_EQ(outputs[i].sizes(), c.expected[i].sizes()) << "output " << i;
    EXPECT_EQ(outputs[i].scalar_type(), dtype);
    worst = std::max(worst, relative_error(outputs[i], c.expected[i]));
  }
  return worst;
}

class ManifestCase : public ::testing::TestWithParam<std::string> {};

TEST_P(ManifestCase, MatchesTheAuthorsInFloat64AndFloat32) {
  const auto name = GetParam();
  auto entry = manifest_case(name);
  const std::string checkpoint = entry.at("checkpoint");
  if (name == "rmt_t" && !rmt::test::reference_available(checkpoint)) {
    GTEST_SKIP() << checkpoint << " (57 MB) is not in " << RMT_REFERENCE_DIR;
  }
  auto c = load_case(name);
  for (auto backend : {rmt::nn::Backend::Fused, rmt::nn::Backend::Reference}) {
    const auto tag = backend == rmt::nn::Backend::Fused ? "fused" : "reference";
    const double e64 = worst_error(c, at::kDouble, backend);
    EXPECT_LT(e64, 1e-10) << name << " float64 " << tag;
    const double e32 = worst_error(c, at::kFloat, backend);
    EXPECT_LT(e32, 1e-5) << name << " float32 " << tag;
    std::cout << "[ parity   ] " << name << " " << tag << ": float64 " << e64 << ", float32 " << e32
              << "\n";
  }
}

INSTANTIATE_TEST_SUITE_P(Reference, ManifestCase,
                         ::testing::Values("tiny_cls", "tiny_ls", "tiny_token_label", "tiny_dense",
                                           "rmt_t"));

// At inference a batch runs a few images at a time, each chunk through the stem and the first
// stages before the next (VisRetNetImpl::run_stages), the last stage's small images several a chunk:
// every image still gets its own numbers. RMT-T at 224x224, the reference image between two others,
// float32, on 1 thread (chunks in order) and 2 (side by side).
TEST(RmtT, EachImageOfABatchGetsItsOwnNumbers) {
  const std::string checkpoint = manifest_case("rmt_t").at("checkpoint");
  if (!rmt::test::reference_available(checkpoint)) {
    GTEST_SKIP() << checkpoint << " (57 MB) is not in " << RMT_REFERENCE_DIR;
  }
  auto c = load_case("rmt_t");
  c.model.to(torch::kCPU, at::kFloat);
  torch::NoGradGuard no_grad;
  torch::manual_seed(7);
  const auto others = torch::randn({2, 3, 224, 224});
  const auto batch = at::cat({others.narrow(0, 0, 1), c.input.to(at::kFloat), others.narrow(0, 1, 1)});
  const int threads_before = at::get_num_threads();
  for (const int threads : {1, 2}) {
    at::set_num_threads(threads);
    const auto out = c.model.forward(batch)[0];
    EXPECT_LT(relative_error(out.narrow(0, 1, 1), c.expected[0]), 1e-5) << threads << " threads";
    for (const int64_t i : {0, 2}) {
      const auto alone = c.model.forward(batch.narrow(0, i, 1))[0];
      EXPECT_LT(relative_error(out.narrow(0, i, 1), alone), 1e-6)
          << "image " << i << ", " << threads << " threads";
    }
  }
  at::set_num_threads(threads_before);
}

TEST(TinyCls, IntermediatesMatch) {
  auto c = load_case("tiny_cls");
  c.model.to(torch::kCPU, at::kDouble);
  auto net = c.model.classifier();
  torch::NoGradGuard no_grad;
  auto x = net->forward_stem(c.input);
  EXPECT_LT(relative_error(x, rmt::read_npy(data_path("tiny_cls.stage_in.npy"))), 1e-12);
  for (int i = 0; i < 4; ++i) {
    x = net->layers[i]->as<rmt::nn::BasicLayerImpl>()->forward(x);
    auto expected = rmt::read_npy(data_path("tiny_cls.stage" + std::to_string(i) + ".npy"));
    ASSERT_EQ(x.sizes(), expected.sizes()) << "stage " << i;
    EXPECT_LT(relative_error(x, expected), 1e-11) << "stage " << i;
  }
}

TEST(TinyCls, RelativePositionTensorsMatch) {
  auto c = load_case("tiny_cls");
  c.model.to(torch::kCPU, at::kDouble);
  auto net = c.model.classifier();
  auto relpos0 = net->layers[0]->as<rmt::nn::BasicLayerImpl>()->Relpos;
  auto [sin, cos] = relpos0->sin_cos(16, 16);
  EXPECT_LT(relative_error(sin, rmt::read_npy(data_path("tiny_cls.relpos0.sin.npy"))), 1e-14);
  EXPECT_LT(relative_error(cos, rmt::read_npy(data_path("tiny_cls.relpos0.cos.npy"))), 1e-14);
  EXPECT_LT(relative_error(relpos0->mask_1d(16), rmt::read_npy(data_path("tiny_cls.relpos0.mask_h.npy"))),
            1e-15);
  auto relpos3 = net->layers[3]->as<rmt::nn::BasicLayerImpl>()->Relpos;
  EXPECT_LT(relative_error(relpos3->mask_2d(2, 2), rmt::read_npy(data_path("tiny_cls.relpos3.mask.npy"))),
            1e-15);
}

TEST(TinyCls, EmaWeightsGiveTheEmaOutput) {
  auto entry = manifest_case("tiny_cls");
  auto model = build_manifest_model(entry);
  rmt::WeightsSelection s;
  s.weights_key = "model_ema";
  model.load(data_path("tiny_cls.pth"), s);
  model.eval();
  model.to(torch::kCPU, at::kDouble);
  torch::NoGradGuard no_grad;
  auto out = model.forward(rmt::read_npy(data_path("tiny_cls.input.npy")))[0];
  auto ema = rmt::read_npy(data_path("tiny_cls.ema_output.npy"));
  EXPECT_LT(relative_error(out, ema), 1e-10);
  // And the EMA weights really differ from the model's: the plain output must not match.
  EXPECT_GT(relative_error(out, rmt::read_npy(data_path("tiny_cls.output.npy"))), 1e-6);
}

class SameWeights : public ::testing::TestWithParam<std::pair<std::string, double>> {};

TEST_P(SameWeights, GiveTheReferenceOutput) {
  const auto [file, tolerance] = GetParam();
  auto model = build_manifest_model(manifest_case("tiny_cls"));
  model.load(data_path(file));  // auto weights key, `module.` stripped
  model.eval();
  model.to(torch::kCPU, at::kDouble);
  torch::NoGradGuard no_grad;
  auto out = model.forward(rmt::read_npy(data_path("tiny_cls.input.npy")))[0];
  const double error = relative_error(out, rmt::read_npy(data_path("tiny_cls.output.npy")));
  EXPECT_LT(error, tolerance) << file;
  std::cout << "[ parity   ] " << file << ": float64 " << error << "\n";
}

INSTANTIATE_TEST_SUITE_P(
    TinyCls, SameWeights,
    ::testing::Values(std::make_pair(std::string("tiny_cls.module_prefix.pth"), 1e-10),
                      std::make_pair(std::string("tiny_cls.safetensors"), 1e-10),
                      std::make_pair(std::string("tiny_cls.legacy.pth"), 1e-10),
                      // float16 weights: about 2^-11 relative per weight.
                      std::make_pair(std::string("tiny_cls.fp16.pth"), 1e-2)));

}  // namespace

// The whole model on CUDA against the authors' numbers. Skips cleanly without a GPU.
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "reference.h"
#include "rmt/rmt.h"

namespace {

using rmt::test::find_reference_file;
using rmt::test::manifest_case;
using rmt::test::relative_error;

struct CudaCase {
  const char* name;
  at::ScalarType dtype;
  double tolerance;
};

class CudaModel : public ::testing::TestWithParam<CudaCase> {};

TEST_P(CudaModel, MatchesTheAuthors) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  // cuDNN convolutions default to TF32 (10-bit mantissa) in float32: off for float32 parity.
  at::globalContext().setAllowTF32CuDNN(false);
  const auto param = GetParam();
  auto entry = manifest_case(param.name);
  const std::string checkpoint = entry.at("checkpoint");
  if (!rmt::test::reference_available(checkpoint) &&
      find_reference_file(checkpoint) == rmt::test::reference_path(checkpoint)) {
    GTEST_SKIP() << checkpoint << " is not available";
  }
  const auto kind = rmt::model_kind_from_string(entry.at("kind"));
  rmt::Model model = entry.at("config").is_string()
                         ? rmt::Model::from_preset(entry.at("config").get<std::string>())
                         : rmt::Model(rmt::config_from_json(entry.at("config").dump()), kind);
  rmt::WeightsSelection selection;
  selection.weights_key = entry.at("weights_key");
  if (entry.contains("key_prefix")) selection.key_prefix = entry.at("key_prefix");
  model.load(find_reference_file(checkpoint), selection);
  model.eval();
  model.to(torch::kCUDA, param.dtype);
  auto input = rmt::read_npy(find_reference_file(entry.at("input")));
  torch::NoGradGuard no_grad;
  // Both the fused CUDA kernels and the authors' op chain on the GPU.
  for (auto backend : {rmt::nn::Backend::Fused, rmt::nn::Backend::Reference}) {
    model.set_backend(backend);
    const char* tag = backend == rmt::nn::Backend::Fused ? "fused" : "reference";
    auto outputs = model.forward(input.to(torch::kCUDA, param.dtype));
    const auto& files = entry.at("outputs");
    ASSERT_EQ(outputs.size(), files.size());
    for (size_t i = 0; i < outputs.size(); ++i) {
      EXPECT_EQ(outputs[i].device().type(), torch::kCUDA);
      EXPECT_EQ(outputs[i].scalar_type(), param.dtype);
      const double error = relative_error(outputs[i], rmt::read_npy(find_reference_file(files[i])));
      EXPECT_LT(error, param.tolerance) << param.name << " " << tag << " output " << i;
      std::cout << "[ cuda     ] " << param.name << " " << tag << " " << param.dtype << ": " << error
                << "\n";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Reference, CudaModel,
    ::testing::Values(CudaCase{"tiny_cls", at::kFloat, 1e-4}, CudaCase{"tiny_ls", at::kFloat, 1e-4},
                      CudaCase{"tiny_token_label", at::kFloat, 1e-4},
                      CudaCase{"tiny_dense", at::kFloat, 1e-4}, CudaCase{"rmt_t", at::kFloat, 1e-4},
                      // half precision: activations rounded to 2^-11 (fp16) / 2^-8 (bf16) per op
                      CudaCase{"rmt_t", at::kHalf, 2e-2}, CudaCase{"rmt_t", at::kBFloat16, 6e-2},
                      CudaCase{"tiny_dense", at::kHalf, 2e-2}));

}  // namespace

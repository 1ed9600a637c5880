// The MaSA CUDA kernels against float64 on the CPU (skipped without a GPU).
//
// References: the authors' op chain (rmt::ops::reference) for small shapes; for the batch-64 shapes
// the fused CPU operator in float64, which tests/test_ops.cpp holds to 1e-12 of the chain and which
// never forms an L x L matrix. Inputs are drawn in float64, rounded to the tested dtype, and the
// reference runs on those rounded values, so the error measured is the kernel's alone.
// Every output is poisoned: the caching allocator's free memory is filled with NaN before each run,
// so an element the kernel fails to write shows up as NaN.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#ifdef RMT_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif
#include <torch/autograd.h>
#include <torch/cuda.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>

#include "masa_cases.h"
#include "reference.h"
#include "rmt/ops/masa.h"

namespace {

using namespace rmt::test::masa;
using rmt::test::relative_error;

#define RMT_REQUIRE_GPU()                                                   \
  do {                                                                      \
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";     \
  } while (0)

// Drawn in float64 and rounded to `dtype`, kept in float64 on the CPU: the float64 reference runs
// on exactly the values the kernel gets.
Inputs rounded_inputs(const Shape& s, at::ScalarType dtype, uint64_t seed) {
  return make_inputs(s, dtype, seed).to(at::kDouble, at::kCPU);
}

// Fills the caching allocator's free memory with NaN, so that the next allocations start poisoned.
void poison_allocator(int64_t bytes) {
#ifdef RMT_WITH_CUDA  // else there are no CUDA kernels to test
  c10::cuda::CUDACachingAllocator::emptyCache();
#endif
  auto poison = at::full({std::max<int64_t>(bytes / 4, 1 << 20)},
                         std::numeric_limits<float>::quiet_NaN(),
                         at::TensorOptions().device(at::kCUDA).dtype(at::kFloat));
  torch::cuda::synchronize();
}

int64_t bytes_of(const Shape& s) {
  return 4 * s.b * s.h * s.w * s.heads * (2 * s.d + 2 * s.dv) * 4;
}

bool small(const Shape& s) { return s.b * s.heads * s.h * s.w * s.h * s.w <= (int64_t{1} << 26); }

// The float64 reference: the chain for small shapes, the validated fused CPU kernel otherwise.
at::Tensor reference(const Variant& var, const Shape& s, const Inputs& in64) {
  return small(s) ? run(var.reference, in64) : run(var.fused, in64);
}

double tolerance(at::ScalarType t, bool backward) {
  if (t == at::kFloat) return backward ? 1e-4 : 2e-5;
  if (t == at::kHalf) return backward ? 4e-3 : 2e-3;
  return backward ? 2e-2 : 1.2e-2;  // bfloat16
}

const at::ScalarType kTypes[] = {at::kFloat, at::kHalf, at::kBFloat16};

const Shape kShapes[] = {
    {1, 7, 9, 2, 16, 16},      // odd sizes, fast path 16
    {3, 57, 31, 1, 32, 32},    // odd, non-square, fast path 32, several tiles
    {2, 5, 7, 2, 8, 8},        // generic path
    {2, 4, 5, 2, 8, 12},       // d_v != d
    {1, 3, 130, 1, 64, 64},    // generic path, rows over one thread block
    {1, 1, 1, 1, 2, 2},        // one token
    {64, 14, 14, 8, 32, 32},   // RMT stage 3 at 224, batch 64
    {64, 7, 7, 16, 32, 32},    // RMT stage 4 at 224, batch 64
};

TEST(MasaOpsCuda, ForwardMatchesFloat64) {
  RMT_REQUIRE_GPU();
  uint64_t seed = 1;
  for (auto dtype : kTypes)
    for (const auto& s : kShapes)
      for (const auto& var : kVariants) {
        const auto in64 = rounded_inputs(s, dtype, seed++);
        const auto ref = reference(var, s, in64);
        poison_allocator(bytes_of(s));
        const auto out = run(var.fused, in64.to(dtype, at::kCUDA));
        ASSERT_EQ(out.scalar_type(), dtype);
        ASSERT_TRUE(out.is_cuda());
        const auto host = out.to(at::kCPU, at::kDouble);
        EXPECT_FALSE(host.isnan().any().item<bool>()) << var.name << " " << dtype << " " << str(s);
        EXPECT_LT(relative_error(host, ref), tolerance(dtype, false))
            << var.name << " " << dtype << " " << str(s);
      }
}

TEST(MasaOpsCuda, DecomposedStage1Batch64) {
  RMT_REQUIRE_GPU();
  const Shape s{64, 56, 56, 4, 16, 16};
  const auto in64 = rounded_inputs(s, at::kFloat, 77);
  const auto ref = run(&rmt::ops::masa_decomposed, in64);  // fused CPU, float64
  poison_allocator(bytes_of(s));
  const auto out = run(&rmt::ops::masa_decomposed, in64.to(at::kFloat, at::kCUDA));
  EXPECT_LT(relative_error(out, ref), tolerance(at::kFloat, false));
}

TEST(MasaOpsCuda, BackwardMatchesFloat64) {
  RMT_REQUIRE_GPU();
  const Shape shapes[] = {{1, 7, 9, 2, 16, 16}, {3, 13, 11, 1, 32, 32}, {2, 5, 7, 2, 8, 12},
                          {1, 3, 130, 1, 16, 16}, {64, 7, 7, 16, 32, 32}};
  uint64_t seed = 1000;
  for (auto dtype : kTypes)
    for (const auto& s : shapes)
      for (const auto& var : kVariants) {
        const auto in64 = rounded_inputs(s, dtype, seed++);
        const auto weight = at::randn({s.b, s.h, s.w, s.heads * s.dv}, at::kDouble);
        const auto ref = grads_of(small(s) ? var.reference : var.fused, in64, weight);
        poison_allocator(bytes_of(s));
        const auto got = grads_of(var.fused, in64.to(dtype, at::kCUDA), weight);
        const std::pair<const at::Tensor*, const at::Tensor*> pairs[] = {
            {&got.q, &ref.q}, {&got.k, &ref.k}, {&got.v, &ref.v}};
        const char* names = "qkv";
        for (int i = 0; i < 3; ++i) {
          const auto host = pairs[i].first->to(at::kCPU, at::kDouble);
          EXPECT_FALSE(host.isnan().any().item<bool>())
              << var.name << " d" << names[i] << " " << dtype << " " << str(s);
          EXPECT_LT(relative_error(host, *pairs[i].second), tolerance(dtype, true))
              << var.name << " d" << names[i] << " " << dtype << " " << str(s);
        }
      }
}

// No atomics anywhere: two runs must agree bit for bit (a race would show up here).
TEST(MasaOpsCuda, Deterministic) {
  RMT_REQUIRE_GPU();
  const Shape s{4, 28, 28, 4, 32, 32};
  const auto in = rounded_inputs(s, at::kFloat, 5).to(at::kFloat, at::kCUDA);
  const auto weight = at::randn({s.b, s.h, s.w, s.heads * s.dv}, at::kDouble);
  for (const auto& var : kVariants) {
    EXPECT_TRUE(at::equal(run(var.fused, in), run(var.fused, in))) << var.name;
    const auto a = grads_of(var.fused, in, weight), b = grads_of(var.fused, in, weight);
    EXPECT_TRUE(at::equal(a.q, b.q) && at::equal(a.k, b.k) && at::equal(a.v, b.v)) << var.name;
  }
}

TEST(MasaOpsCuda, NonContiguousInputs) {
  RMT_REQUIRE_GPU();
  const Shape s{2, 9, 7, 2, 16, 16};
  const auto in64 = rounded_inputs(s, at::kFloat, 9);
  const auto in = in64.to(at::kFloat, at::kCUDA);
  auto qkv = at::cat({in.q, in.k, in.v}, -1);
  auto parts = qkv.split(s.heads * s.d, -1);
  Inputs view{parts[0], parts[1], parts[2], in.sin, in.cos, in.decay, in.scale};
  for (const auto& var : kVariants)
    EXPECT_LT(relative_error(run(var.fused, view), run(var.reference, in64)), 2e-5) << var.name;
}

TEST(MasaOpsCuda, RejectsWhatItCannotRun) {
  RMT_REQUIRE_GPU();
  auto expect_error = [](const std::function<void()>& f, const std::string& substring) {
    try {
      f();
      ADD_FAILURE() << "expected an error containing \"" << substring << "\"";
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find(substring), std::string::npos) << e.what();
    }
  };
  const auto in64 = rounded_inputs({1, 3, 4, 2, 4, 4}, at::kFloat, 3);
  for (const auto& var : kVariants) {
    const auto dbl = in64.to(at::kDouble, at::kCUDA);
    expect_error([&] { run(var.fused, dbl); }, "take float32, float16 or bfloat16");
    auto mixed = in64.to(at::kFloat, at::kCUDA);
    mixed.k = mixed.k.cpu();
    expect_error([&] { run(var.fused, mixed); }, "must be on q's device");
    const auto big =
        rounded_inputs({1, 2, 2, 1, 258, 258}, at::kFloat, 4).to(at::kFloat, at::kCUDA);
    expect_error([&] { run(var.fused, big); }, "head dims up to 256");
  }
}

}  // namespace

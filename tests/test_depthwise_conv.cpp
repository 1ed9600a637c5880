// The channels-last depthwise convolution (rmt/ops/depthwise_conv.h) against ATen's conv2d on the
// (B, C, H, W) view, computed in float64 as the yardstick: every kernel size, channel count (whole
// vectors and tails), image sizes down to smaller than the kernel, the fused residual, the
// fallback path taken under autograd, the operator in the dispatcher, and the error messages.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/version.h>

#include <string>

#include "reference.h"
#include "rmt/ops/depthwise_conv.h"

namespace {

using rmt::test::relative_error;

struct Case {
  int64_t batch, height, width, channels, k;
};

at::Tensor expected(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                    const at::Tensor& residual) {
  const auto x64 = x.to(at::kDouble), w64 = w.to(at::kDouble), b64 = b.to(at::kDouble);
  auto y = at::conv2d(x64.permute({0, 3, 1, 2}), w64, b64, 1, w.size(2) / 2, 1, x.size(3))
               .permute({0, 2, 3, 1});
  return residual.defined() ? y + residual.to(at::kDouble) : y;
}

class DepthwiseConv : public ::testing::TestWithParam<Case> {};

TEST_P(DepthwiseConv, MatchesATenConv2d) {
  const auto c = GetParam();
  at::NoGradGuard no_grad;
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
    const auto opt = at::TensorOptions().dtype(dtype);
    const auto x = at::randn({c.batch, c.height, c.width, c.channels}, gen, opt);
    const auto w = at::randn({c.channels, 1, c.k, c.k}, gen, opt);
    const auto b = at::randn({c.channels}, gen, opt);
    const auto r = at::randn({c.batch, c.height, c.width, c.channels}, gen, opt);
    const double tol = dtype == at::kDouble ? 1e-13 : 1e-6;
    const auto plain = rmt::ops::depthwise_conv2d_nhwc(x, w, b, 1, c.k / 2);
    const auto fused = rmt::ops::depthwise_conv2d_nhwc(x, w, b, 1, c.k / 2, r);
    ASSERT_EQ(plain.sizes(), x.sizes());
    EXPECT_TRUE(plain.is_contiguous());
    EXPECT_LT(relative_error(plain, expected(x, w, b, {})), tol) << at::toString(dtype);
    EXPECT_LT(relative_error(fused, expected(x, w, b, r)), tol) << at::toString(dtype);
    // A weight held tap-major ((k, k, C) memory viewed (C, 1, k, k), as DWConv2d keeps it) is
    // read in place; the same numbers.
    const auto tap_major = w.permute({2, 3, 1, 0}).contiguous().permute({3, 2, 0, 1});
    const auto from_tap_major = rmt::ops::depthwise_conv2d_nhwc(x, tap_major, b, 1, c.k / 2, r);
    EXPECT_LT(relative_error(from_tap_major, expected(x, w, b, r)), tol) << at::toString(dtype);
    // No bias, and a strided (non-contiguous) input.
    const auto xt = x.transpose(1, 2).contiguous().transpose(1, 2);
    const auto nobias = rmt::ops::depthwise_conv2d_nhwc(xt, w, {}, 1, c.k / 2);
    EXPECT_LT(relative_error(nobias, expected(x, w, at::zeros_like(b), {})), tol);
    // Channels [C, 2C) of a (B, H, W, 3C) tensor (the v of a fused q/k/v projection): read in
    // place with its pixel stride.
    const auto wide = at::randn({c.batch, c.height, c.width, 3 * c.channels}, gen, opt);
    const auto slice = wide.narrow(3, c.channels, c.channels);
    const auto sliced = rmt::ops::depthwise_conv2d_nhwc(slice, w, b, 1, c.k / 2, r);
    EXPECT_LT(relative_error(sliced, expected(slice.contiguous(), w, b, r)), tol);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, DepthwiseConv,
    ::testing::Values(Case{1, 7, 9, 16, 3}, Case{2, 5, 4, 13, 3}, Case{1, 8, 8, 24, 5},
                      Case{2, 3, 6, 7, 5}, Case{1, 1, 1, 8, 3}, Case{1, 2, 3, 9, 5},
                      Case{1, 6, 5, 12, 7}, Case{3, 4, 4, 1, 3},
                      // Whole vectors of channels (AVX-512's 16 floats): the edges' clipped
                      // blocks, narrower and shorter than a block and a kernel, and at a 7 x 7
                      // stage's size.
                      Case{1, 3, 2, 32, 5}, Case{2, 7, 7, 32, 5}, Case{1, 7, 6, 16, 3},
                      // RMT's channel counts (the kernel's copies with C fixed at compile time
                      // for them): interior and clipped blocks, both kernel sizes.
                      Case{2, 6, 9, 64, 3}, Case{1, 5, 10, 64, 5}, Case{1, 4, 7, 768, 3},
                      // At least 8 channels a pixel of width (strips of channels across the
                      // row): interior and clipped blocks, two vectors then one at 5x5.
                      Case{1, 5, 9, 96, 3}, Case{1, 6, 10, 80, 5}),
    [](const auto& info) {
      const auto& c = info.param;
      return std::to_string(c.batch) + "x" + std::to_string(c.height) + "x" +
             std::to_string(c.width) + "x" + std::to_string(c.channels) + "_k" +
             std::to_string(c.k);
    });

// The in-place forms (the FFN's middle) under every thread count: each splits the rows into
// shares whose edges (and the images' edges) the halo logic must get right. Calls
// check(x, weight, bias, tolerance, label) for float and double, 1, 2, 3 and 5 threads.
template <class Check>
void for_every_split(const Case& c, uint64_t seed, double x_scale, Check check) {
  at::NoGradGuard no_grad;
  const int threads = at::get_num_threads();
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    for (const int t : {1, 2, 3, 5}) {
      at::set_num_threads(t);
      auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
      const auto opt = at::TensorOptions().dtype(dtype);
      const auto x = at::randn({c.batch, c.height, c.width, c.channels}, gen, opt) * x_scale;
      const auto w = at::randn({c.channels, 1, c.k, c.k}, gen, opt);
      const auto b = at::randn({c.channels}, gen, opt);
      check(x, w, b, dtype == at::kDouble ? 1e-13 : 1e-6,
            std::string(at::toString(dtype)) + " threads " + std::to_string(t));
    }
  }
  at::set_num_threads(threads);
}

TEST_P(DepthwiseConv, GeluConvAddInPlaceMatchesATen) {
  const auto c = GetParam();
  for_every_split(c, 11, 2.0, [&](const at::Tensor& h, const at::Tensor& w, const at::Tensor& b,
                                  double tol, const std::string& label) {
    const auto g = at::gelu(h.to(at::kDouble));
    const auto want = expected(g, w, b, g);
    const auto kept = h.clone();
    const auto copy = rmt::ops::gelu_depthwise_conv2d_add(h, w, b, c.k / 2, false);
    EXPECT_TRUE(at::equal(h, kept)) << "reuse_input = false must leave h alone";
    auto work = h.clone();
    const auto in_place = rmt::ops::gelu_depthwise_conv2d_add(work, w, b, c.k / 2, true);
    EXPECT_EQ(in_place.data_ptr(), work.data_ptr());
    EXPECT_LT(relative_error(copy, want), tol) << label;
    EXPECT_LT(relative_error(in_place, want), tol) << label;
  });
}

// The same without the GELU (fc1 applied it): g <- conv(g) + g in place.
TEST_P(DepthwiseConv, ConvAddSelfInPlaceMatchesATen) {
  const auto c = GetParam();
  for_every_split(c, 13, 1.0, [&](const at::Tensor& g, const at::Tensor& w, const at::Tensor& b,
                                  double tol, const std::string& label) {
    const auto want = expected(g, w, b, g);
    auto work = g.clone();
    const auto in_place = rmt::ops::depthwise_conv2d_add_self(work, w, b, c.k / 2);
    EXPECT_EQ(in_place.data_ptr(), work.data_ptr());
    EXPECT_LT(relative_error(in_place, want), tol) << label;
    // A strided g takes the operator and is left alone.
    const auto strided = g.transpose(1, 2).contiguous().transpose(1, 2);
    const auto copy = rmt::ops::depthwise_conv2d_add_self(strided, w, b, c.k / 2);
    if (!strided.is_contiguous()) EXPECT_TRUE(at::equal(strided, g));
    EXPECT_LT(relative_error(copy, want), tol) << label;
  });
}

TEST(DepthwiseConvFallback, AutogradAndOtherConfigurations) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const auto x = at::randn({2, 6, 5, 8}, gen, at::kDouble).requires_grad_();
  const auto w = at::randn({8, 1, 3, 3}, gen, at::kDouble).requires_grad_();
  const auto b = at::randn({8}, gen, at::kDouble);
  // Under autograd the composite path runs and gradients flow (checked against finite
  // differences by gradcheck-like central differences on one element).
  auto y = rmt::ops::depthwise_conv2d_nhwc(x, w, b, 1, 1, x);
  ASSERT_TRUE(y.requires_grad());
  y.sum().backward();
  ASSERT_TRUE(x.grad().defined());
  ASSERT_TRUE(w.grad().defined());
  const double eps = 1e-6;
  auto f = [&](double delta) {
    at::NoGradGuard no_grad;
    auto w2 = w.detach().clone();
    w2[3][0][1][2] += delta;
    return rmt::ops::depthwise_conv2d_nhwc(x.detach(), w2, b, 1, 1, x.detach()).sum().item<double>();
  };
  EXPECT_NEAR(w.grad()[3][0][1][2].item<double>(), (f(eps) - f(-eps)) / (2 * eps), 1e-6);
  // Stride 2 and float16 take at::conv2d.
  at::NoGradGuard no_grad;
  const auto xs = x.detach();
  const auto strided = rmt::ops::depthwise_conv2d_nhwc(xs, w.detach(), b, 2, 1);
  const auto expect = at::conv2d(xs.permute({0, 3, 1, 2}), w.detach(), b, 2, 1, 1, 8)
                          .permute({0, 2, 3, 1});
  EXPECT_EQ(strided.sizes(), expect.sizes());
  EXPECT_LT(relative_error(strided, expect), 1e-15);
}

// The operator rmt::depthwise_conv2d_nhwc: the CPU kernel through the dispatcher (float64: the
// vectorized kernel; float16: the composite inside it), and a composite kernel registered for
// the backends without one of their own (CUDA, ...).
TEST(DepthwiseConvOperator, CallableThroughTheDispatcher) {
  at::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const auto x = at::randn({2, 6, 5, 8}, gen, at::kDouble);
  const auto w = at::randn({8, 1, 3, 3}, gen, at::kDouble);
  const auto b = at::randn({8}, gen, at::kDouble);
  const auto handle =
      c10::Dispatcher::singleton().findSchemaOrThrow("rmt::depthwise_conv2d_nhwc", "");
  auto op = handle.typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                    const c10::optional<at::Tensor>&, int64_t, int64_t,
                                    const c10::optional<at::Tensor>&)>();
  EXPECT_LT(relative_error(op.call(x, w, b, 1, 1, x), expected(x, w, b, x)), 1e-13);
  EXPECT_TRUE(handle.hasKernelForDispatchKey(c10::DispatchKey::CompositeExplicitAutograd));
}

// A dtype without a CPU kernel of ours (Half) reaches the composite path, which is ATen's conv.
TEST(DepthwiseConvOperator, OtherDtypesTakeTheCompositePath) {
  at::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const auto x = at::randn({2, 6, 5, 8}, gen, at::kDouble);
  const auto w = at::randn({8, 1, 3, 3}, gen, at::kDouble);
  try {  // LibTorch 1.13 has no Half convolution on the CPU at all
    at::conv2d(at::ones({1, 1, 3, 3}, at::kHalf), at::ones({1, 1, 3, 3}, at::kHalf));
  } catch (const c10::Error&) {
    GTEST_SKIP() << "this LibTorch (" << TORCH_VERSION << ") has no Half convolution on the CPU";
  }
  const auto h = rmt::ops::depthwise_conv2d_nhwc(x.to(at::kHalf), w.to(at::kHalf), {}, 1, 1);
  EXPECT_EQ(h.scalar_type(), at::kHalf);
  EXPECT_LT(relative_error(h, expected(x, w, at::zeros({8}, at::kDouble), {})), 2e-3);
}

TEST(DepthwiseConvErrors, SayWhatWasExpected) {
  at::NoGradGuard no_grad;
  const auto x = at::randn({1, 4, 4, 8});
  auto message = [](auto&& call) -> std::string {
    try {
      call();
    } catch (const c10::Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_NE(message([&] { rmt::ops::depthwise_conv2d_nhwc(x[0], at::randn({8, 1, 3, 3}), {}, 1, 1); })
                .find("expected x of shape (B, H, W, C)"),
            std::string::npos);
  EXPECT_NE(message([&] { rmt::ops::depthwise_conv2d_nhwc(x, at::randn({4, 1, 3, 3}), {}, 1, 1); })
                .find("expected weight of shape (8, 1, k, k)"),
            std::string::npos);
  EXPECT_NE(message([&] { rmt::ops::depthwise_conv2d_nhwc(x, at::randn({8, 1, 3, 3}), at::randn({4}), 1, 1); })
                .find("expected bias of shape (8)"),
            std::string::npos);
  EXPECT_NE(message([&] {
              rmt::ops::depthwise_conv2d_nhwc(x, at::randn({8, 1, 3, 3}), {}, 1, 1,
                                              at::randn({1, 4, 3, 8}));
            }).find("expected residual of the output's shape"),
            std::string::npos);
  EXPECT_NE(message([&] {
              rmt::ops::depthwise_conv2d_nhwc(x, at::randn({8, 1, 3, 3}), {}, 1, 1,
                                              at::randn({1, 4, 4, 8}, at::kDouble));
            }).find("residual must be a Float tensor"),
            std::string::npos);
}

}  // namespace

// The MaSA operators on the CPU: forward parity with the authors' op chain (reference::), backward
// against autograd through that chain and against central differences, and input validation.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/InferenceMode.h>
#include <torch/autograd.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "masa_cases.h"
#include "reference.h"
#include "rmt/ops/layer_norm.h"
#include "rmt/ops/masa.h"

namespace {

using namespace rmt::test::masa;
using rmt::test::relative_error;

const Shape kShapes[] = {
    {1, 7, 9, 2, 16, 16},   // odd sizes
    {3, 5, 4, 3, 8, 8},     // batch 3, non-square
    {1, 57, 31, 1, 16, 16}, // odd, several key blocks for the full operator
    {2, 3, 150, 2, 4, 4},   // rows longer than one key block
    {1, 6, 6, 2, 32, 32},   // head dim 32
    {2, 4, 5, 2, 8, 12},    // d_v != d
    {1, 1, 1, 1, 2, 2},     // one token
    {2, 6, 1, 2, 16, 16},   // one column: the column pass steps down the grid's rows
    {2, 1, 6, 2, 16, 16},   // one row
    {1, 48, 45, 1, 8, 8},   // 2160 tokens: the full operator's float forward past the lanes kernel
};

void forward_parity(at::ScalarType dtype, double tolerance, uint64_t seed) {
  double worst[2] = {0, 0};
  for (const auto& s : kShapes)
    for (int v = 0; v < 2; ++v) {
      const auto& var = kVariants[v];
      const auto in = make_inputs(s, dtype, seed++);
      const auto out = run(var.fused, in);
      const auto ref = run(var.reference, in);
      ASSERT_EQ(out.sizes(), ref.sizes());
      ASSERT_EQ(out.scalar_type(), dtype);
      const double err = relative_error(out, ref);
      EXPECT_LT(err, tolerance) << var.name << " " << str(s);
      worst[v] = std::max(worst[v], err);
    }
  std::printf("  %s: worst relative error vs the reference chain: decomposed %.3g, full %.3g\n",
              c10::toString(dtype), worst[0], worst[1]);
}

TEST(MasaOps, ForwardParityFloat64) { forward_parity(at::kDouble, 1e-12, 1); }

TEST(MasaOps, ForwardParityFloat32) { forward_parity(at::kFloat, 1e-6, 100); }

// Half and bfloat16 compute in float: compare with float64 on the same (rounded) inputs.
TEST(MasaOps, ForwardReducedPrecision) {
  const Shape s{2, 7, 9, 2, 16, 16};
  uint64_t seed = 200;
  for (auto dtype : {at::kHalf, at::kBFloat16})
    for (const auto& var : kVariants) {
      const auto in = make_inputs(s, dtype, seed++);
      const auto out = run(var.fused, in);
      ASSERT_EQ(out.scalar_type(), dtype);
      Inputs up{in.q.to(at::kDouble), in.k.to(at::kDouble), in.v.to(at::kDouble),
                in.sin.to(at::kDouble), in.cos.to(at::kDouble), in.decay.to(at::kDouble),
                in.scale};
      const double err = relative_error(out, run(var.reference, up));
      EXPECT_LT(err, dtype == at::kHalf ? 2e-3 : 1.5e-2) << var.name << " " << dtype;
      std::printf("  %s %s: relative error vs float64 %.3g\n", c10::toString(dtype), var.name,
                  err);
    }
}

TEST(MasaOps, NonContiguousInputs) {
  // Float takes the kernels that read q, k and v in place through their token strides.
  for (const auto& [dtype, tol] : {std::pair{at::kDouble, 1e-12}, std::pair{at::kFloat, 1e-6}}) {
    for (const Shape& s : {Shape{2, 5, 7, 2, 8, 8}, Shape{1, 6, 1, 2, 16, 16}}) {
      for (const auto& var : kVariants) {
        auto in = make_inputs(s, dtype, 300);
        const auto want = run(var.reference, in);
        // q, k, v as views of one fused projection, as a qkv linear layer would give them.
        auto qkv = at::cat({in.q, in.k, in.v}, -1);
        auto parts = qkv.split(s.heads * s.d, -1);
        Inputs view{parts[0], parts[1], parts[2], in.sin, in.cos, in.decay, in.scale};
        ASSERT_FALSE(view.q.is_contiguous());
        EXPECT_LT(relative_error(run(var.fused, view), want), tol) << var.name << " " << str(s);
        // A transposed (H, W) layout.
        Inputs t = in;
        t.q = in.q.transpose(1, 2).contiguous().transpose(1, 2);
        EXPECT_LT(relative_error(run(var.fused, t), want), tol) << var.name << " " << str(s);
        // Contiguous, with any stride on a size-1 dimension (W = 1 here).
        if (s.w == 1) {
          Inputs odd = in;
          odd.k = in.k.as_strided(in.k.sizes(), {in.k.stride(0), in.k.stride(1), 999, 1});
          ASSERT_TRUE(odd.k.is_contiguous());
          EXPECT_LT(relative_error(run(var.fused, odd), want), tol) << var.name << " odd stride";
        }
      }
    }
  }
}

// The float forward's row pass splits its (sequence, head) tasks between threads wherever the
// split falls, also inside a sequence's heads (41 rows x 3 heads = 123 tasks: 3 threads begin at
// tasks 0, 41 and 82, heads 0, 2 and 1), and rotates q and k for each thread's own heads: the
// output must not depend on the thread count.
TEST(MasaOps, SameOutputOnAnyThreadCount) {
  const Shape s{1, 41, 40, 3, 16, 16};
  const int threads = at::get_num_threads();
  for (const auto& var : kVariants) {
    const auto in = make_inputs(s, at::kFloat, 400);
    at::set_num_threads(1);
    const auto one = run(var.fused, in);
    at::set_num_threads(3);
    const auto three = run(var.fused, in);
    at::set_num_threads(threads);
    EXPECT_TRUE(at::equal(one, three)) << var.name;
    EXPECT_LT(relative_error(three, run(var.reference, in)), 1e-6) << var.name;
  }
}

TEST(MasaOps, EmptyBatch) {
  const Shape s{0, 3, 4, 2, 4, 4};
  for (const auto& var : kVariants) {
    const auto in = make_inputs(s, at::kFloat, 1);
    EXPECT_EQ(run(var.fused, in).sizes(), at::IntArrayRef({0, 3, 4, 8})) << var.name;
  }
}

TEST(MasaOps, CallableThroughTheDispatcher) {
  const Shape s{1, 3, 4, 2, 4, 4};
  const auto in = make_inputs(s, at::kDouble, 7);
  for (const auto& var : kVariants) {
    auto op = c10::Dispatcher::singleton()
                  .findSchemaOrThrow((std::string("rmt::masa_") + var.name).c_str(), "")
                  .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                    const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                    double)>();
    auto out = op.call(in.q, in.k, in.v, in.sin, in.cos, in.decay, in.scale);
    EXPECT_LT(relative_error(out, run(var.reference, in)), 1e-12);
  }
  c10::InferenceMode guard;
  for (const auto& var : kVariants) EXPECT_EQ(run(var.fused, in).dim(), 4);
}

// ---- backward ----------------------------------------------------------------------------------

TEST(MasaOps, BackwardMatchesAutogradThroughReference) {
  const Shape shapes[] = {{1, 7, 9, 2, 8, 8}, {3, 5, 4, 3, 4, 4}, {1, 4, 150, 1, 4, 6},
                          {2, 13, 11, 1, 16, 16}};
  uint64_t seed = 400;
  double worst[2] = {0, 0};
  for (const auto& s : shapes)
    for (int v = 0; v < 2; ++v) {
      const auto& var = kVariants[v];
      const auto in = make_inputs(s, at::kDouble, seed++);
      const auto weight = at::randn({s.b, s.h, s.w, s.heads * s.dv}, at::kDouble);
      const auto fused = grads_of(var.fused, in, weight);
      const auto ref = grads_of(var.reference, in, weight);
      const double eq = relative_error(fused.q, ref.q), ek = relative_error(fused.k, ref.k),
                   ev = relative_error(fused.v, ref.v);
      EXPECT_LT(eq, 1e-11) << var.name << " q " << str(s);
      EXPECT_LT(ek, 1e-11) << var.name << " k " << str(s);
      EXPECT_LT(ev, 1e-11) << var.name << " v " << str(s);
      worst[v] = std::max({worst[v], eq, ek, ev});
    }
  std::printf("  Double gradients: worst relative error vs autograd through the chain: "
              "decomposed %.3g, full %.3g\n", worst[0], worst[1]);
}

TEST(MasaOps, BackwardFloat32) {
  const Shape s{2, 9, 7, 2, 16, 16};
  for (const auto& var : kVariants) {
    const auto in = make_inputs(s, at::kFloat, 500);
    const auto weight = at::randn({s.b, s.h, s.w, s.heads * s.dv});
    const auto fused = grads_of(var.fused, in, weight);
    const auto ref = grads_of(var.reference, in, weight);
    const double eq = relative_error(fused.q, ref.q), ek = relative_error(fused.k, ref.k),
                 ev = relative_error(fused.v, ref.v);
    EXPECT_LT(eq, 1e-5) << var.name;
    EXPECT_LT(ek, 1e-5) << var.name;
    EXPECT_LT(ev, 1e-5) << var.name;
    std::printf("  Float gradients, %s: relative error dq %.3g dk %.3g dv %.3g\n", var.name, eq, ek,
                ev);
  }
}

// Central differences of loss = sum(out * weight), every element of q, k and v.
TEST(MasaOps, BackwardFiniteDifferences) {
  const Shape s{1, 3, 4, 2, 4, 2};
  uint64_t seed = 600;
  for (const auto& var : kVariants) {
    auto in = make_inputs(s, at::kDouble, seed++);
    const auto weight = at::randn({s.b, s.h, s.w, s.heads * s.dv}, at::kDouble);
    const auto analytic = grads_of(var.fused, in, weight);
    at::NoGradGuard no_grad;
    auto loss = [&] { return (run(var.fused, in) * weight).sum().item<double>(); };
    const double eps = 1e-6;
    const std::pair<at::Tensor*, at::Tensor> pairs[] = {
        {&in.q, analytic.q}, {&in.k, analytic.k}, {&in.v, analytic.v}};
    int which = 0;
    for (const auto& [x, g] : pairs) {
      auto flat = x->view({-1});
      auto gflat = g.reshape({-1});
      double max_err = 0, max_g = 0;
      for (int64_t i = 0; i < flat.numel(); ++i) {
        const double x0 = flat[i].item<double>();
        flat[i] = x0 + eps;
        const double up = loss();
        flat[i] = x0 - eps;
        const double down = loss();
        flat[i] = x0;
        const double numeric = (up - down) / (2 * eps);
        max_err = std::max(max_err, std::abs(numeric - gflat[i].item<double>()));
        max_g = std::max(max_g, std::abs(numeric));
      }
      EXPECT_LT(max_err, 1e-7 * std::max(1.0, max_g)) << var.name << " input " << "qkv"[which];
      std::printf("  %s d%c: max |central difference - analytic| %.3g (max |grad| %.3g)\n",
                  var.name, "qkv"[which], max_err, max_g);
      ++which;
    }
  }
}

TEST(MasaOps, BackwardOnlySomeInputsRequireGrad) {
  const Shape s{1, 4, 5, 2, 4, 4};
  for (const auto& var : kVariants) {
    auto in = make_inputs(s, at::kDouble, 700);
    auto v = in.v.clone().requires_grad_(true);
    auto out = var.fused(in.q, in.k, v, in.sin, in.cos, in.decay, in.scale);
    ASSERT_TRUE(out.requires_grad());
    auto g = torch::autograd::grad({out.sum()}, {v})[0];
    auto v2 = in.v.clone().requires_grad_(true);
    auto r = torch::autograd::grad({var.reference(in.q, in.k, v2, in.sin, in.cos, in.decay,
                                                  in.scale).sum()},
                                   {v2})[0];
    EXPECT_LT(relative_error(g, r), 1e-12) << var.name;
  }
}

// ---- validation --------------------------------------------------------------------------------

void expect_error(const std::function<void()>& f, const std::string& substring) {
  try {
    f();
    ADD_FAILURE() << "expected an error containing \"" << substring << "\"";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find(substring), std::string::npos)
        << "message was: " << e.what_without_backtrace();
  }
}

TEST(MasaOps, RejectsBadInputs) {
  const Shape s{1, 3, 4, 2, 4, 4};
  for (const auto& var : kVariants) {
    const auto in = make_inputs(s, at::kFloat, 800);
    auto call = [&](const Inputs& x) { return [=] { run(var.fused, x); }; };
    Inputs bad = in;
    bad.q = in.q.flatten(1, 2);
    expect_error(call(bad), "q must be 4-D");
    bad = in;
    bad.k = in.k.narrow(3, 0, 6);
    expect_error(call(bad), "k must have the shape of q");
    bad = in;
    bad.v = in.v.narrow(1, 0, 2);
    expect_error(call(bad), "v must be (B, H, W, heads*d_v)");
    bad = in;
    bad.decay = at::zeros({3});
    expect_error(call(bad), "must be divisible by the number of heads");
    bad = in;
    bad.decay = in.decay.reshape({1, 2});
    expect_error(call(bad), "decay must be 1-D");
    bad = in;
    bad.q = at::randn({1, 3, 4, 6});
    bad.k = at::randn({1, 3, 4, 6});
    expect_error(call(bad), "head dim must be even");
    bad = in;
    bad.sin = in.sin.narrow(0, 0, 2);
    expect_error(call(bad), "sin and cos must be (H, W, d)");
    bad = in;
    bad.v = in.v.to(at::kDouble);
    expect_error(call(bad), "must share q's dtype");
    bad = in;
    bad.q = in.q.to(at::kInt);
    expect_error(call(bad), "q must be floating point");
    bad = in;
    bad.k = at::empty(in.k.sizes(), in.k.options().device(at::kMeta));
    expect_error(call(bad), "must be on q's device");
  }
}

TEST(MasaOps, BackwardRejectsBadGradShape) {
  const Shape s{1, 3, 4, 2, 4, 4};
  const auto in = make_inputs(s, at::kDouble, 900);
  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow("rmt::_masa_full_backward", "")
                .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                    const at::Tensor&, const at::Tensor&, const at::Tensor&, double)>();
  expect_error([&] { op.call(at::zeros({1, 3, 4, 4}, at::kDouble), in.q, in.k, in.v, in.sin,
                             in.cos, in.decay, in.scale); },
               "grad_out must have the output's shape");
}

// The block's residual step and LayerNorm in one pass: x + branch stored into x, its LayerNorm
// returned, against LibTorch's add then at::layer_norm computed in double from the same inputs
// (for float too: LibTorch's own float LayerNorm is off by ~1e-6 at 3 channels, and by a
// different amount on each CPU and LibTorch version), for widths with and without a SIMD tail,
// with and without a branch, in both precisions of the kernel and on the fallback (autograd).
TEST(LayerNormOps, AddLayerNormMatchesAddThenLayerNorm) {
  for (const auto dtype : {at::kDouble, at::kFloat}) {
    const double tol = dtype == at::kDouble ? 1e-13 : 1e-6;
    for (const int64_t channels : {64, 37, 3}) {
      for (const bool with_branch : {true, false}) {
        const auto opt = at::TensorOptions().dtype(dtype);
        const auto x0 = at::randn({2, 5, 3, channels}, opt) * 3 + 1;
        const auto branch = with_branch ? at::randn({2, 5, 3, channels}, opt) : at::Tensor();
        const auto weight = at::randn({channels}, opt), bias = at::randn({channels}, opt);
        const auto sum = with_branch ? x0 + branch : x0.clone();
        const auto expected = at::layer_norm(sum.to(at::kDouble), {channels},
                                             weight.to(at::kDouble), bias.to(at::kDouble), 1e-6);
        for (const bool grad : {false, true}) {
          at::AutoGradMode mode(grad);
          auto x = x0.clone();
          const auto y = rmt::ops::add_layer_norm_(x, branch, weight, bias, 1e-6);
          EXPECT_LT(rmt::test::relative_error(y, expected), tol) << channels << " " << with_branch;
          EXPECT_TRUE(at::equal(x, sum)) << "x must hold x + branch";
        }
      }
    }
  }
  auto x = at::randn({2, 4});
  EXPECT_THROW(rmt::ops::add_layer_norm_(x, at::randn({2, 3}), at::ones({4}), at::zeros({4}), 1e-6),
               c10::Error);
  EXPECT_THROW(rmt::ops::add_layer_norm_(x, {}, at::ones({3}), at::zeros({3}), 1e-6), c10::Error);
}

}  // namespace

#pragma once
// The cases of the MaSA operator tests (tests/test_ops.cpp on the CPU, tests/test_ops_cuda.cpp on
// a GPU): shapes, inputs with RelPos2d's tables, each operator next to the authors' op chain, and
// the gradients of a weighted sum through either.

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "rmt/ops/masa.h"

namespace rmt::test::masa {

struct Shape {
  int64_t b, h, w, heads, d, dv;
};

inline std::string str(const Shape& s) {
  return std::to_string(s.b) + "x" + std::to_string(s.h) + "x" + std::to_string(s.w) + " heads " +
         std::to_string(s.heads) + " d " + std::to_string(s.d) + " dv " + std::to_string(s.dv);
}

struct Inputs {
  at::Tensor q, k, v, sin, cos, decay;
  double scale;

  Inputs to(at::ScalarType t, at::Device dev) const {
    return {q.to(dev, t), k.to(dev, t), v.to(dev, t), sin.to(dev, t), cos.to(dev, t),
            decay.to(dev, t), scale};
  }
};

// q, k, v ~ N(0, 1) and RelPos2d's tables (theta-shift angles over the flattened position, the
// per-head log decay), drawn in float64 from `seed` and rounded to `dtype`; scale = d^-1/2.
inline Inputs make_inputs(const Shape& s, at::ScalarType dtype, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  Inputs in;
  in.q = at::randn({s.b, s.h, s.w, s.heads * s.d}, gen, f64).to(dtype);
  in.k = at::randn({s.b, s.h, s.w, s.heads * s.d}, gen, f64).to(dtype);
  in.v = at::randn({s.b, s.h, s.w, s.heads * s.dv}, gen, f64).to(dtype);
  auto angle = 1.0 / at::pow(10000.0, at::linspace(0, 1, s.d / 2, f64));
  angle = angle.unsqueeze(-1).repeat({1, 2}).flatten();
  auto phase = at::arange(s.h * s.w, f64).unsqueeze(-1) * angle.unsqueeze(0);
  in.sin = at::sin(phase).reshape({s.h, s.w, s.d}).to(dtype);
  in.cos = at::cos(phase).reshape({s.h, s.w, s.d}).to(dtype);
  in.decay = at::log(1 - at::pow(2.0, -2.0 - 4.0 * at::arange(s.heads, f64) / s.heads)).to(dtype);
  in.scale = 1.0 / std::sqrt(static_cast<double>(s.d));
  return in;
}

using Op = at::Tensor (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                          const at::Tensor&, const at::Tensor&, const at::Tensor&, double);

// An operator (through the dispatcher: CPU or CUDA kernel by the inputs' device) and the authors'
// op chain it must match.
struct Variant {
  const char* name;
  Op fused;
  Op reference;
};

inline const Variant kVariants[] = {
    {"decomposed", &rmt::ops::masa_decomposed, &rmt::ops::reference::masa_decomposed},
    {"full", &rmt::ops::masa_full, &rmt::ops::reference::masa_full},
};

inline at::Tensor run(Op op, const Inputs& in) {
  return op(in.q, in.k, in.v, in.sin, in.cos, in.decay, in.scale);
}

struct Grads {
  at::Tensor q, k, v;
};

// The gradients with respect to q, k and v of sum(op(q, k, v) * weight), weight taken to the
// output's device and dtype.
inline Grads grads_of(Op op, const Inputs& in, const at::Tensor& weight) {
  auto q = in.q.detach().clone().requires_grad_(true);
  auto k = in.k.detach().clone().requires_grad_(true);
  auto v = in.v.detach().clone().requires_grad_(true);
  auto out = op(q, k, v, in.sin, in.cos, in.decay, in.scale);
  auto g = torch::autograd::grad({(out * weight.to(out.device(), out.scalar_type())).sum()},
                                 {q, k, v});
  return {g[0], g[1], g[2]};
}

}  // namespace rmt::test::masa

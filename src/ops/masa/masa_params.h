#pragma once
// The setup of one MaSA call, written once for the CPU drivers (cpu/masa_kernel.cpp) and the CUDA
// launchers (cuda/masa_launch.cuh): the checks, the contiguous inputs, the sizes, where the tokens
// of each attention pass sit, and the check of the incoming gradient. Host code; nvcc compiles it
// too.

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <array>

#include "ops/token_layout.h"
#include "rmt/ops/masa.h"
#include "runtime/tensor_text.h"

namespace rmt::ops::masa {

// Sizes of one call: batch, height, width, heads, head dim of q and k, head dim of v, and the
// number of tokens l = H * W.
struct Dims {
  int64_t b, h, w, n, d, dv, l;
  // Elements between neighbouring tokens of q, k and v: n * d, n * d, n * dv (contiguous), or more
  // for views that make_params kept (keep_token_views).
  int64_t qs, ks, vs;

  // (B, H, W, heads * d_v): the output, and the gradient that comes back for it.
  std::array<int64_t, 4> out_sizes() const { return {b, h, w, n * dv}; }
  // (B, H, W, heads * d): q, k and their gradients.
  std::array<int64_t, 4> qk_sizes() const { return {b, h, w, n * d}; }
  // Where element (b, pos, head, 0) of a (B, H, W, heads * dim) tensor sits (pos = y * W + x).
  int64_t offset(int64_t bi, int64_t pos, int64_t head, int64_t dim) const {
    return ((bi * l + pos) * n + head) * dim;
  }
};

// The tokens of one attention pass. Per (batch, head) a pass has `nseq` sequences of `len` tokens;
// token t of sequence s is grid position s * sbase + t * tstride, and for the decay mask it sits at
// (t / coord_w, t % coord_w) (coord_w = len: a 1-D sequence). Every tensor the kernels touch,
// inputs, intermediates and outputs, holds element (b, pos, head, c) at Dims::offset(b, pos, head,
// dim) + c, so one kernel serves every pass.
struct Pass {
  int64_t nseq, len, sbase, tstride, coord_w;

  int64_t position(int64_t seq, int64_t t) const { return seq * sbase + t * tstride; }
};

// The decomposed operator: along each row (H sequences of W tokens), then along each column on
// the row pass's output (W sequences of H tokens).
inline Pass row_pass(const Dims& s) { return {s.h, s.w, s.w, 1, s.w}; }
inline Pass column_pass(const Dims& s) { return {s.w, s.h, 1, s.w, s.h}; }
// The full operator: one sequence of all H * W tokens, with 2-D coordinates.
inline Pass full_pass(const Dims& s) { return {1, s.l, 0, 1, s.w}; }

// The inputs of one call, checked (check_masa_inputs) and contiguous, and their sizes.
struct Params {
  at::Tensor q, k, v, sin, cos, decay;
  double scale;
  Dims dims;
};

// keep_token_views: q, k and v that have a token_stride (ops/token_layout.h) stay views (for the
// kernels that read Dims' token strides); otherwise every input is made contiguous.
inline Params make_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const at::Tensor& sin, const at::Tensor& cos, const at::Tensor& decay,
                          double scale, bool keep_token_views = false) {
  check_masa_inputs(q, k, v, sin, cos, decay);
  const int64_t n = decay.size(0);
  auto kept_stride = [&](const at::Tensor& t) { return keep_token_views ? token_stride(t) : 0; };
  auto arrange = [&](const at::Tensor& t) { return kept_stride(t) > 0 ? t : t.contiguous(); };
  // A contiguous tensor's token stride is its channel count (its stride(2) may be anything when
  // W = 1).
  auto stride_of = [&](const at::Tensor& t) {
    const int64_t kept = kept_stride(t);
    return kept > 0 ? kept : t.size(3);
  };
  Params p{arrange(q),       arrange(k),         arrange(v), sin.contiguous(),
           cos.contiguous(), decay.contiguous(), scale,      {}};
  p.dims = Dims{q.size(0),       q.size(1),        q.size(2),       n,
                q.size(3) / n,   v.size(3) / n,    q.size(1) * q.size(2),
                stride_of(q),    stride_of(k),     stride_of(v)};
  return p;
}

// The data of Params as element pointers (T: the element type of the kernels for its dtype).
template <class T>
struct Inputs {
  const T* q;
  const T* k;
  const T* v;
  const T* sn;
  const T* cs;
  const T* decay;
};

template <class T>
Inputs<T> inputs_of(const Params& p) {
  return {p.q.data_ptr<T>(),   p.k.data_ptr<T>(),   p.v.data_ptr<T>(),
          p.sin.data_ptr<T>(), p.cos.data_ptr<T>(), p.decay.data_ptr<T>()};
}

// The backward operators' grad_out: it must have the output's shape and sit on q's device.
// Returned in q's dtype, contiguous.
inline at::Tensor checked_grad(const at::Tensor& grad, const Params& p) {
  const auto want = p.dims.out_sizes();
  TORCH_CHECK(grad.sizes() == at::IntArrayRef(want),
              fmt::format("MaSA backward: grad_out must have the output's shape {}, found {}",
                          text::shape(want), text::shape(grad.sizes())));
  TORCH_CHECK(grad.device() == p.q.device(),
              fmt::format("MaSA backward: grad_out must be on q's device {}, found {}",
                          p.q.device().str(), grad.device().str()));
  return grad.to(p.q.scalar_type()).contiguous();
}

}  // namespace rmt::ops::masa

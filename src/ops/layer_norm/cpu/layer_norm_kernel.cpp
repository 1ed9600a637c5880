// The CPU kernel of rmt::ops::add_layer_norm_ (rmt/ops/layer_norm.h).
//
// Why a kernel of our own: LibTorch's CPU LayerNorm reduces each row with a generic moments
// routine that is slow for the short rows of RMT (64 to 512 channels: about 2 GB/s at 64 in
// LibTorch 2.11), and the residual add before it is one more pass over memory. Here each row is
// added, stored, reduced (mean, then the centered variance: two passes over a row that sits in
// L1) and normalized in one visit.

#include "ops/layer_norm/cpu/layer_norm_kernel.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>

#include "ops/cpu/cpu_simd.h"

namespace rmt::ops::layer_norm {
namespace {

// Rows [row0, row1) of width C: x[r] += branch[r] (when branch), y[r] = norm(x[r]) * w + b, in
// vectors of Bytes bytes (the variant's: 16, 32 or 64).
template <class A, int Bytes>
RMT_ALWAYS_INLINE void rows_impl(A* __restrict x, const A* __restrict branch, const A* __restrict w,
                                 const A* __restrict b, A* __restrict y, int64_t C, A eps,
                                 int64_t row0, int64_t row1) {
  using V = cpu::VecN<A, Bytes>;
  constexpr int W = Bytes / sizeof(A);
  const int64_t Cv = C / W * W;
  for (int64_t r = row0; r < row1; ++r) {
    A* xr = x + r * C;
    A* yr = y + r * C;
    V vs = {};
    A sum = 0;
    if (branch) {
      const A* br = branch + r * C;
      for (int64_t c = 0; c < Cv; c += W) {
        const V v = cpu::vload<A, V>(xr + c) + cpu::vload<A, V>(br + c);
        cpu::vstore(xr + c, v);
        vs += v;
      }
      for (int64_t c = Cv; c < C; ++c) sum += (xr[c] = xr[c] + br[c]);
    } else {
      for (int64_t c = 0; c < Cv; c += W) vs += cpu::vload<A, V>(xr + c);
      for (int64_t c = Cv; c < C; ++c) sum += xr[c];
    }
    const A mean = (cpu::lane_sum<A, V>(vs) + sum) / static_cast<A>(C);
    const V vmean = V{} + mean;
    V vq = {};
    A sq = 0;
    for (int64_t c = 0; c < Cv; c += W) {
      const V d = cpu::vload<A, V>(xr + c) - vmean;
      vq += d * d;
    }
    for (int64_t c = Cv; c < C; ++c) sq += (xr[c] - mean) * (xr[c] - mean);
    const A rstd = A(1) / std::sqrt((cpu::lane_sum<A, V>(vq) + sq) / static_cast<A>(C) + eps);
    const V vrstd = V{} + rstd;
    for (int64_t c = 0; c < Cv; c += W) {
      const V n = (cpu::vload<A, V>(xr + c) - vmean) * vrstd;
      cpu::vstore(yr + c, n * cpu::vload<A, V>(w + c) + cpu::vload<A, V>(b + c));
    }
    for (int64_t c = Cv; c < C; ++c) yr[c] = (xr[c] - mean) * rstd * w[c] + b[c];
  }
}

// Baseline, AVX2 and AVX-512 variants (cpu_simd.h); W: their float lanes.
#define RMT_DEFINE_VARIANT(SUFFIX, ATTR, W)                                                        \
  template <class A>                                                                               \
  ATTR RMT_FLATTEN void rows_##SUFFIX(A* x, const A* branch, const A* w, const A* b, A* y,         \
                                      int64_t C, A eps, int64_t row0, int64_t row1) {              \
    rows_impl<A, 4 * W>(x, branch, w, b, y, C, eps, row0, row1);                                   \
  }
RMT_DEFINE_LANE_VARIANTS(RMT_DEFINE_VARIANT)
#undef RMT_DEFINE_VARIANT

}  // namespace

bool cpu_kernel_applies(const at::Tensor& x, const at::Tensor& branch, const at::Tensor& weight,
                        const at::Tensor& bias) {
  auto fits = [&](const at::Tensor& t) {
    return t.device().is_cpu() && t.scalar_type() == x.scalar_type() && t.is_contiguous();
  };
  return x.device().is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble) &&
         x.is_contiguous() && x.dim() >= 1 && x.size(-1) > 0 && fits(weight) &&
         (!bias.defined() || fits(bias)) && (!branch.defined() || fits(branch));
}

at::Tensor add_layer_norm_cpu(const at::Tensor& x, const at::Tensor& branch,
                              const at::Tensor& weight, const at::Tensor& bias, double eps) {
  auto y = at::empty_like(x);
  const int64_t C = x.size(-1), rows = x.numel() / C;
  const auto b = bias.defined() ? bias : at::zeros_like(weight);
  if (rows == 0) return y;
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / C);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "add_layer_norm_", [&] {
    scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* bp = branch.defined() ? branch.data_ptr<scalar_t>() : nullptr;
    const scalar_t* wp = weight.data_ptr<scalar_t>();
    const scalar_t* bb = b.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    const auto e = static_cast<scalar_t>(eps);
    at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
      RMT_CALL_LANE_VARIANT(rows, xp, bp, wp, bb, yp, C, e, r0, r1);
    });
  });
  return y;
}

}  // namespace rmt::ops::layer_norm

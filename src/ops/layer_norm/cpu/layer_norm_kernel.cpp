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
#include "runtime/guided_parallel.h"

namespace rmt::ops::layer_norm {
namespace {

// Rows r .. r + R - 1 of width C: x[r] += branch[r] (when branch), y[r] = norm(x[r]) * w + b, in
// vectors of Bytes bytes (the variant's: 16, 32 or 64). Each row's sums are a chain of dependent
// adds, then a lane reduction, a square root and a division: R rows side by side keep R chains in
// flight (one row at a time left the core waiting on that latency: ~29 cycles a vector at 64 to
// 256 channels). Each row's arithmetic is the same, in the same order, whatever R.
template <class A, int Bytes, int R>
RMT_ALWAYS_INLINE void rows_block(A* __restrict x, const A* __restrict branch,
                                  const A* __restrict w, const A* __restrict b, A* __restrict y,
                                  int64_t C, A eps, int64_t r) {
  using V = cpu::VecN<A, Bytes>;
  constexpr int W = Bytes / sizeof(A);
  const int64_t Cv = C / W * W;
  A* xr[R];
  A* yr[R];
  const A* br[R];
  for (int i = 0; i < R; ++i) {
    xr[i] = x + (r + i) * C;
    yr[i] = y + (r + i) * C;
    br[i] = branch ? branch + (r + i) * C : nullptr;
  }
  V vs[R] = {};
  A sum[R] = {};
  if (branch) {
    for (int64_t c = 0; c < Cv; c += W) {
      for (int i = 0; i < R; ++i) {
        const V v = cpu::vload<A, V>(xr[i] + c) + cpu::vload<A, V>(br[i] + c);
        cpu::vstore(xr[i] + c, v);
        vs[i] += v;
      }
    }
    for (int i = 0; i < R; ++i) {
      for (int64_t c = Cv; c < C; ++c) sum[i] += (xr[i][c] = xr[i][c] + br[i][c]);
    }
  } else {
    for (int64_t c = 0; c < Cv; c += W) {
      for (int i = 0; i < R; ++i) vs[i] += cpu::vload<A, V>(xr[i] + c);
    }
    for (int i = 0; i < R; ++i) {
      for (int64_t c = Cv; c < C; ++c) sum[i] += xr[i][c];
    }
  }
  A mean[R];
  V vmean[R], vq[R] = {};
  A sq[R] = {};
  for (int i = 0; i < R; ++i) {
    mean[i] = (cpu::lane_sum<A, V>(vs[i]) + sum[i]) / static_cast<A>(C);
    vmean[i] = V{} + mean[i];
  }
  for (int64_t c = 0; c < Cv; c += W) {
    for (int i = 0; i < R; ++i) {
      const V d = cpu::vload<A, V>(xr[i] + c) - vmean[i];
      vq[i] += d * d;
    }
  }
  A rstd[R];
  V vrstd[R];
  for (int i = 0; i < R; ++i) {
    for (int64_t c = Cv; c < C; ++c) sq[i] += (xr[i][c] - mean[i]) * (xr[i][c] - mean[i]);
    rstd[i] = A(1) / std::sqrt((cpu::lane_sum<A, V>(vq[i]) + sq[i]) / static_cast<A>(C) + eps);
    vrstd[i] = V{} + rstd[i];
  }
  for (int64_t c = 0; c < Cv; c += W) {
    const V wc = cpu::vload<A, V>(w + c), bc = cpu::vload<A, V>(b + c);
    for (int i = 0; i < R; ++i) {
      const V n = (cpu::vload<A, V>(xr[i] + c) - vmean[i]) * vrstd[i];
      cpu::vstore(yr[i] + c, n * wc + bc);
    }
  }
  for (int i = 0; i < R; ++i) {
    for (int64_t c = Cv; c < C; ++c) yr[i][c] = (xr[i][c] - mean[i]) * rstd[i] * w[c] + b[c];
  }
}

// Rows [row0, row1): four at a time, then one by one.
template <class A, int Bytes>
RMT_ALWAYS_INLINE void rows_impl(A* x, const A* branch, const A* w, const A* b, A* y, int64_t C,
                                 A eps, int64_t row0, int64_t row1) {
  constexpr int kRows = 4;
  int64_t r = row0;
  for (; r + kRows <= row1; r += kRows) rows_block<A, Bytes, kRows>(x, branch, w, b, y, C, eps, r);
  for (; r < row1; ++r) rows_block<A, Bytes, 1>(x, branch, w, b, y, C, eps, r);
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

void layer_norm_rows(const float* x, const float* weight, const float* bias, float* y, int64_t C,
                     float eps, int64_t rows) {
  // x is only read: without a branch the kernel never writes through its x.
  RMT_CALL_LANE_VARIANT(rows, const_cast<float*>(x), static_cast<const float*>(nullptr), weight,
                        bias, y, C, eps, int64_t{0}, rows);
}

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
    // Home shares that balance themselves (runtime/guided_parallel.h): each thread keeps to its
    // own rows, and the threads of a shared host run at uneven speeds.
    runtime::parallel_for_guided(0, rows, grain, 1, [&](int64_t r0, int64_t r1) {
      RMT_CALL_LANE_VARIANT(rows, xp, bp, wp, bb, yp, C, e, r0, r1);
    });
  });
  return y;
}

}  // namespace rmt::ops::layer_norm

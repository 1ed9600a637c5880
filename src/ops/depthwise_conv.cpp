// Depthwise convolution on channels-last tensors (rmt/depthwise_conv.h).
//
// Why a kernel of our own: LibTorch's CPU convolution takes the (B, C, H, W) view of a
// channels-last tensor through oneDNN, which reorders it to a blocked layout and back, and the
// residual adds of the block are one more pass over memory each. Here every output vector of
// channels is bias + sum over the k*k taps + residual, read straight from the (B, H, W, C) input:
// one read of x (its rows stay in cache across the k output rows that use them), one write of y.

#include "rmt/depthwise_conv.h"

#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>

#include "ops/cpu_simd.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")  // a*b+c may be an FMA: far inside parity tolerances
#endif

namespace rmt::ops {
namespace {

struct ConvShape {
  int64_t batch, height, width, channels, k;
};

// One output pixel: bias + the taps (ki, kj) in [ki0, ki1) x [kj0, kj1) (+ residual), every block
// of channels. wt: (k * k, C), tap-major so that a tap's weights are one vector load per block of
// channels; `origin` indexes input pixel (h - pad, w - pad) (an index, not a pointer: it may lie
// before the tensor when the taps that would read there are skipped). With FULL, every tap of a
// compile-time K is used and the tap loops unroll.
template <int K, bool FULL, bool RES, class A>
RMT_ALWAYS_INLINE void conv_pixel(const A* __restrict x, const A* __restrict wt,
                                  const A* __restrict bias, const A* __restrict res,
                                  A* __restrict y, int64_t C, int64_t k, int64_t row_stride,
                                  int64_t origin, int64_t at, int64_t ki0, int64_t ki1,
                                  int64_t kj0, int64_t kj1) {
  using V = cpu::VecT<A>;
  constexpr int W = cpu::Simd<A>::W;
  if (FULL) {
    ki0 = kj0 = 0;
    ki1 = kj1 = k = K;
  }
  const int64_t Cv = C / W * W;
  for (int64_t c = 0; c < Cv; c += W) {
    V acc = cpu::vload(bias + c);
    for (int64_t ki = ki0; ki < ki1; ++ki) {
      for (int64_t kj = kj0; kj < kj1; ++kj) {
        acc += cpu::vload(wt + (ki * k + kj) * C + c) *
               cpu::vload(x + (origin + ki * row_stride + kj * C + c));
      }
    }
    if (RES) acc += cpu::vload(res + at + c);
    cpu::vstore(y + at + c, acc);
  }
  for (int64_t c = Cv; c < C; ++c) {
    A acc = bias[c];
    for (int64_t ki = ki0; ki < ki1; ++ki) {
      for (int64_t kj = kj0; kj < kj1; ++kj) {
        acc += wt[(ki * k + kj) * C + c] * x[origin + ki * row_stride + kj * C + c];
      }
    }
    if (RES) acc += res[at + c];
    y[at + c] = acc;
  }
}

// kPixels neighbouring output pixels whose taps all fall inside the image: each tap's weights are
// loaded once for all of them (loads, not FMAs, bound this loop).
constexpr int kPixels = 4;

template <int K, bool RES, class A>
RMT_ALWAYS_INLINE void conv_pixels(const A* __restrict x, const A* __restrict wt,
                                   const A* __restrict bias, const A* __restrict res,
                                   A* __restrict y, int64_t C, int64_t row_stride, int64_t origin,
                                   int64_t at) {
  using V = cpu::VecT<A>;
  constexpr int W = cpu::Simd<A>::W, P = kPixels;
  const int64_t Cv = C / W * W;
  for (int64_t c = 0; c < Cv; c += W) {
    V acc[P];
    for (int u = 0; u < P; ++u) acc[u] = cpu::vload(bias + c);
    for (int ki = 0; ki < K; ++ki) {
      for (int kj = 0; kj < K; ++kj) {
        const V wv = cpu::vload(wt + (ki * K + kj) * C + c);
        const A* src = x + (origin + ki * row_stride + kj * C + c);
        for (int u = 0; u < P; ++u) acc[u] += wv * cpu::vload(src + u * C);
      }
    }
    for (int u = 0; u < P; ++u) {
      if (RES) acc[u] += cpu::vload(res + at + u * C + c);
      cpu::vstore(y + at + u * C + c, acc[u]);
    }
  }
  for (int64_t c = Cv; c < C; ++c) {
    for (int u = 0; u < P; ++u) {
      A acc = bias[c];
      for (int ki = 0; ki < K; ++ki) {
        for (int kj = 0; kj < K; ++kj) {
          acc += wt[(ki * K + kj) * C + c] * x[origin + ki * row_stride + (kj + u) * C + c];
        }
      }
      if (RES) acc += res[at + u * C + c];
      y[at + u * C + c] = acc;
    }
  }
}

// Output rows [row0, row1) of the flattened (batch * height) index. K > 0 fixes the kernel size
// at compile time (3 and 5 in RMT), and pixels whose taps all fall inside the image take the
// unrolled path; K == 0 reads the size from the shape.
template <int K, bool RES, class A>
RMT_ALWAYS_INLINE void conv_rows(const ConvShape& s, const A* x, const A* wt, const A* bias,
                                 const A* res, A* y, int64_t row0, int64_t row1) {
  const int64_t k = K > 0 ? K : s.k, pad = (k - 1) / 2, C = s.channels;
  const int64_t row_stride = s.width * C;
  for (int64_t row = row0; row < row1; ++row) {
    const int64_t b = row / s.height, h = row % s.height;
    const int64_t ki0 = std::max<int64_t>(0, pad - h), ki1 = std::min(k, s.height + pad - h);
    const bool full_rows = K > 0 && ki0 == 0 && ki1 == k;
    for (int64_t w = 0; w < s.width;) {
      const int64_t kj0 = std::max<int64_t>(0, pad - w), kj1 = std::min(k, s.width + pad - w);
      const int64_t at = (row * s.width + w) * C;
      const int64_t origin = ((b * s.height + h - pad) * s.width + w - pad) * C;
      if (full_rows && kj0 == 0 && w + kPixels - 1 + pad < s.width) {
        conv_pixels<K, RES>(x, wt, bias, res, y, C, row_stride, origin, at);
        w += kPixels;
      } else if (full_rows && kj0 == 0 && kj1 == k) {
        conv_pixel<K, true, RES>(x, wt, bias, res, y, C, k, row_stride, origin, at, 0, k, 0, k);
        ++w;
      } else {
        conv_pixel<K, false, RES>(x, wt, bias, res, y, C, k, row_stride, origin, at, ki0, ki1,
                                  kj0, kj1);
        ++w;
      }
    }
  }
}

template <class A>
RMT_ALWAYS_INLINE void conv_rows_any(const ConvShape& s, const A* x, const A* wt, const A* bias,
                                     const A* res, A* y, int64_t row0, int64_t row1) {
  if (res) {
    if (s.k == 3) return conv_rows<3, true>(s, x, wt, bias, res, y, row0, row1);
    if (s.k == 5) return conv_rows<5, true>(s, x, wt, bias, res, y, row0, row1);
    return conv_rows<0, true>(s, x, wt, bias, res, y, row0, row1);
  }
  if (s.k == 3) return conv_rows<3, false>(s, x, wt, bias, res, y, row0, row1);
  if (s.k == 5) return conv_rows<5, false>(s, x, wt, bias, res, y, row0, row1);
  conv_rows<0, false>(s, x, wt, bias, res, y, row0, row1);
}

template <class A>
RMT_FLATTEN void conv_rows_base(const ConvShape& s, const A* x, const A* wt, const A* bias,
                                const A* res, A* y, int64_t row0, int64_t row1) {
  conv_rows_any(s, x, wt, bias, res, y, row0, row1);
}

#if RMT_HAVE_AVX2_VARIANT
template <class A>
RMT_TARGET_AVX2 RMT_FLATTEN void conv_rows_avx2(const ConvShape& s, const A* x, const A* wt,
                                                const A* bias, const A* res, A* y, int64_t row0,
                                                int64_t row1) {
  conv_rows_any(s, x, wt, bias, res, y, row0, row1);
}
#endif

template <class A>
void conv_cpu(const ConvShape& s, const at::Tensor& x, const at::Tensor& weight,
              const at::Tensor& bias, const at::Tensor& residual, at::Tensor& y) {
  // (C, 1, k, k) -> (k * k, C)
  const auto wt = weight.reshape({s.channels, s.k * s.k}).t().contiguous();
  const A* xp = x.data_ptr<A>();
  const A* wp = wt.data_ptr<A>();
  const auto b = bias.defined() ? bias : at::zeros({s.channels}, x.options());
  const A* bp = b.data_ptr<A>();
  const A* rp = residual.defined() ? residual.data_ptr<A>() : nullptr;
  A* yp = y.data_ptr<A>();
  const int64_t row_cost = s.width * s.channels * s.k * s.k;
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, row_cost));
  at::parallel_for(0, s.batch * s.height, grain, [&](int64_t row0, int64_t row1) {
#if RMT_HAVE_AVX2_VARIANT
    if (cpu::use_avx2()) return conv_rows_avx2(s, xp, wp, bp, rp, yp, row0, row1);
#endif
    conv_rows_base(s, xp, wp, bp, rp, yp, row0, row1);
  });
}

bool records_gradient(std::initializer_list<const at::Tensor*> ts) {
  if (!at::GradMode::is_enabled()) return false;
  for (const auto* t : ts) {
    if (t->defined() && t->requires_grad()) return true;
  }
  return false;
}

}  // namespace

at::Tensor depthwise_conv2d_nhwc(const at::Tensor& x, const at::Tensor& weight,
                                 const at::Tensor& bias, int64_t stride, int64_t padding,
                                 const at::Tensor& residual) {
  TORCH_CHECK(x.dim() == 4, "depthwise_conv2d_nhwc: expected x of shape (B, H, W, C), got ",
              x.sizes());
  const int64_t channels = x.size(3);
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == channels && weight.size(1) == 1 &&
                  weight.size(2) == weight.size(3),
              "depthwise_conv2d_nhwc: expected weight of shape (", channels,
              ", 1, k, k) for x with ", channels, " channels, got ", weight.sizes());
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == channels),
              "depthwise_conv2d_nhwc: expected bias of shape (", channels, "), got ", bias.sizes());
  const int64_t k = weight.size(2);
  const bool fast = x.device().is_cpu() && (x.scalar_type() == at::kFloat ||
                                            x.scalar_type() == at::kDouble) &&
                    stride == 1 && k % 2 == 1 && padding == (k - 1) / 2 &&
                    weight.scalar_type() == x.scalar_type() && weight.device() == x.device() &&
                    (!bias.defined() ||
                     (bias.scalar_type() == x.scalar_type() && bias.device() == x.device())) &&
                    !records_gradient({&x, &weight, &bias, &residual});
  auto check_residual = [&](at::IntArrayRef out) {
    TORCH_CHECK(!residual.defined() || residual.sizes() == out,
                "depthwise_conv2d_nhwc: expected residual of the output's shape ", out, ", got ",
                residual.sizes());
  };
  if (!fast) {
    auto y = at::conv2d(x.permute({0, 3, 1, 2}), weight, bias, stride, padding, 1, channels)
                 .permute({0, 2, 3, 1});
    check_residual(y.sizes());
    return residual.defined() ? y + residual : y;
  }
  check_residual(x.sizes());
  TORCH_CHECK(!residual.defined() || (residual.scalar_type() == x.scalar_type() &&
                                      residual.device() == x.device()),
              "depthwise_conv2d_nhwc: residual must be a ", x.scalar_type(), " tensor on ",
              x.device(), ", got ", residual.scalar_type(), " on ", residual.device());
  const ConvShape s{x.size(0), x.size(1), x.size(2), channels, k};
  const auto xc = x.contiguous();
  const auto rc = residual.defined() ? residual.contiguous() : residual;
  const auto bc = bias.defined() ? bias.contiguous() : bias;
  auto y = at::empty(x.sizes(), x.options());
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "depthwise_conv2d_nhwc", [&] {
    conv_cpu<scalar_t>(s, xc, weight, bc, rc, y);
  });
  return y;
}

}  // namespace rmt::ops

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

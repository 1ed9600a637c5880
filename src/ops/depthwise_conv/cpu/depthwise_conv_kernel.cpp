// The CPU kernel of rmt::depthwise_conv2d_nhwc (the op: ../depthwise_conv.cpp) and the in-place
// FFN middle of rmt::ops::gelu_depthwise_conv2d_add.
//
// Why a kernel of our own: LibTorch's CPU convolution takes the (B, C, H, W) view of a
// channels-last tensor through oneDNN, which reorders it to a blocked layout and back, and the
// residual adds (and the FFN's GELU) of the block are one more pass over memory each. Here every
// output vector of channels is bias + sum over the k*k taps + residual, read straight from
// (B, H, W, C) rows: one read of the input (its rows stay in cache across the k output rows that
// use them), one write of the output.

#include "ops/depthwise_conv/cpu/depthwise_conv_kernel.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "ops/cpu/cpu_simd.h"
#include "ops/depthwise_conv/depthwise_conv_ops.h"
#include "ops/token_layout.h"
#include "runtime/guided_parallel.h"
#include "runtime/tensor_text.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math", "fp-contract=fast")  // far inside parity tolerances
#endif

#include "ops/cpu/cpu_math.h"  // after the pragma: its functions take this file's options

namespace rmt::ops {
namespace {

struct ConvShape {
  int64_t batch, height, width, channels, k;
  int64_t in_pixel;  // elements between neighbouring input pixels (channels, or more for a view)
};

// Neighbouring output pixels computed together where all their taps fall inside the image: each
// tap's weights are loaded once for all of them.
constexpr int kPixels = 4;

// The kernels below take VB, the bytes of their vectors: 16 (SSE, the baseline build), 32 (AVX2)
// or 64 (AVX-512), one variant each (RMT_DEFINE_LANE_VARIANTS).

// Channels [c, c + N vectors) of output pixels [w, w + kPixels) of one row: N * kPixels
// independent sums, enough to hide the FMA latency (N = 2: 8 chains). Each input row's
// kPixels + K - 1 vectors are loaded once for its K taps (a sliding window): 0.75 loads an FMA at
// 3x3 instead of 1.25, where the loads bound the loop. Every sum takes its taps in the same order
// as before (ki, then kj). Every tap inside the image, unless CLIP (a block at an edge): then input
// rows outside the image (null) and input columns outside [0, width) are zeros, and only the
// pixels left of `width` are stored; adding a zero product leaves a sum as it was, so the sums are
// conv_pixel's, which skips those taps.
template <int VB, int K, int N, bool RES, bool CLIP, class A>
RMT_ALWAYS_INLINE void conv_pixels_block(const A* const* rows, const A* __restrict wt,
                                         const A* __restrict bias, const A* __restrict res,
                                         A* __restrict out, int64_t C, int64_t IP, int64_t width,
                                         int64_t w, int64_t c) {
  using V = cpu::VecN<A, VB>;
  constexpr int W = VB / sizeof(A), P = kPixels, pad = (K - 1) / 2;
  V acc[N][P];
  for (int n = 0; n < N; ++n)
    for (int u = 0; u < P; ++u) acc[n][u] = cpu::vload<A, V>(bias + c + n * W);
#pragma GCC unroll 8
  for (int ki = 0; ki < K; ++ki) {
    if (CLIP && !rows[ki]) continue;
    const A* src = rows[ki] + c;
#pragma GCC unroll 8
    for (int n = 0; n < N; ++n) {
      V in[P + K - 1];
      for (int j = 0; j < P + K - 1; ++j) {
        const int64_t x = w - pad + j;  // input pixel
        in[j] = !CLIP || (x >= 0 && x < width) ? cpu::vload<A, V>(src + x * IP + n * W) : V{};
      }
      for (int kj = 0; kj < K; ++kj) {
        const V wv = cpu::vload<A, V>(wt + (ki * K + kj) * C + c + n * W);
        for (int u = 0; u < P; ++u) acc[n][u] += wv * in[u + kj];
      }
    }
  }
  // Every u tested against `stored` inside unrolled loops of fixed count: with `stored` as the
  // loop's bound (or the loops not unrolled) the accumulators were indexed at run time and went
  // through the stack, each vector stored and reassembled from integer registers (RMT-S's 14 x 14
  // 3x3 convolutions, half of whose blocks are clipped: 0.107 -> 0.084 ms at 768 channels on a
  // Zen 3 core).
  const int64_t stored = CLIP ? width - w : P;
#pragma GCC unroll 8
  for (int n = 0; n < N; ++n) {
#pragma GCC unroll 8
    for (int u = 0; u < P; ++u) {
      if (u >= stored) continue;
      if (RES) acc[n][u] += cpu::vload<A, V>(res + (w + u) * C + c + n * W);
      cpu::vstore(out + (w + u) * C + c + n * W, acc[n][u]);
    }
  }
}

// Vectors of channels a block of pixels takes at a time (conv_pixels_block's N). Two pay for 5x5,
// and for 3x3 with AVX2 (8 sums hide the FMA's latency where 4 do not; 15 of the 16 registers);
// 3x3 with AVX-512 measured slower with them (level on an Intel Xeon, session 42).
template <int VB, int K>
constexpr int kChannelVectors = K > 3 || VB == 32 ? 2 : 1;

// Output pixels [w, w + kPixels) of one row, every tap inside the image unless CLIP (then C is a
// multiple of the vector width). rows[ki]: input row h + ki - pad; wt: (K * K, C), tap-major so
// that a tap's weights are one vector load per block of channels.
template <int VB, int K, bool RES, bool CLIP, class A>
RMT_ALWAYS_INLINE void conv_pixels(const A* const* rows, const A* __restrict wt,
                                   const A* __restrict bias, const A* __restrict res,
                                   A* __restrict out, int64_t C, int64_t IP, int64_t width,
                                   int64_t w) {
  constexpr int W = VB / sizeof(A), P = kPixels, pad = (K - 1) / 2;
  const int64_t Cv = C / W * W, first = (w - pad) * IP;
  int64_t c = 0;
  if (kChannelVectors<VB, K> == 2) {
    for (; c + 2 * W <= Cv; c += 2 * W)
      conv_pixels_block<VB, K, 2, RES, CLIP>(rows, wt, bias, res, out, C, IP, width, w, c);
  }
  for (; c < Cv; c += W)
    conv_pixels_block<VB, K, 1, RES, CLIP>(rows, wt, bias, res, out, C, IP, width, w, c);
  if (CLIP) return;
  for (c = Cv; c < C; ++c) {
    for (int u = 0; u < P; ++u) {
      A acc = bias[c];
      for (int ki = 0; ki < K; ++ki) {
        for (int kj = 0; kj < K; ++kj) {
          acc += wt[(ki * K + kj) * C + c] * rows[ki][first + (kj + u) * IP + c];
        }
      }
      if (RES) acc += res[(w + u) * C + c];
      out[(w + u) * C + c] = acc;
    }
  }
}

// Channels [c, c + N vectors) of one output pixel w, any kernel size, taps outside the image (null
// rows, columns past the edges) skipped: N independent sums (N = 4 hides the FMA latency that one
// sum would wait on at every tap).
template <int VB, int N, bool RES, class A>
RMT_ALWAYS_INLINE void conv_pixel_block(const A* const* rows, const A* __restrict wt,
                                        const A* __restrict bias, const A* __restrict res,
                                        A* __restrict out, int64_t C, int64_t IP, int64_t k,
                                        int64_t kj0, int64_t kj1, int64_t w, int64_t c) {
  using V = cpu::VecN<A, VB>;
  constexpr int W = VB / sizeof(A);
  const int64_t first = (w - (k - 1) / 2) * IP;
  V acc[N];
  for (int n = 0; n < N; ++n) acc[n] = cpu::vload<A, V>(bias + c + n * W);
  for (int64_t ki = 0; ki < k; ++ki) {
    if (!rows[ki]) continue;
    for (int64_t kj = kj0; kj < kj1; ++kj) {
      const A* wp = wt + (ki * k + kj) * C + c;
      const A* src = rows[ki] + (first + kj * IP + c);
      for (int n = 0; n < N; ++n)
        acc[n] += cpu::vload<A, V>(wp + n * W) * cpu::vload<A, V>(src + n * W);
    }
  }
  for (int n = 0; n < N; ++n) {
    if (RES) acc[n] += cpu::vload<A, V>(res + w * C + c + n * W);
    cpu::vstore(out + w * C + c + n * W, acc[n]);
  }
}

// One output pixel w, any kernel size, taps outside the image skipped.
template <int VB, bool RES, class A>
RMT_ALWAYS_INLINE void conv_pixel(const A* const* rows, const A* __restrict wt,
                                  const A* __restrict bias, const A* __restrict res,
                                  A* __restrict out, int64_t C, int64_t IP, int64_t width,
                                  int64_t k, int64_t w) {
  constexpr int W = VB / sizeof(A);
  const int64_t pad = (k - 1) / 2, Cv = C / W * W;
  const int64_t kj0 = std::max<int64_t>(0, pad - w), kj1 = std::min(k, width + pad - w);
  const int64_t first = (w - pad) * IP;
  int64_t c = 0;
  for (; c + 4 * W <= Cv; c += 4 * W)
    conv_pixel_block<VB, 4, RES>(rows, wt, bias, res, out, C, IP, k, kj0, kj1, w, c);
  for (; c < Cv; c += W)
    conv_pixel_block<VB, 1, RES>(rows, wt, bias, res, out, C, IP, k, kj0, kj1, w, c);
  for (c = Cv; c < C; ++c) {
    A acc = bias[c];
    for (int64_t ki = 0; ki < k; ++ki) {
      if (!rows[ki]) continue;
      for (int64_t kj = kj0; kj < kj1; ++kj)
        acc += wt[(ki * k + kj) * C + c] * rows[ki][first + kj * IP + c];
    }
    if (RES) acc += res[w * C + c];
    out[w * C + c] = acc;
  }
}

// The pixels of one output row (conv_row's): blocks of kPixels where every tap is inside the image
// (all k input rows and the columns), clipped blocks at the edges where the channels are whole
// vectors (RMT-S's 14 x 14 and 7 x 7 stages have most of their pixels within 2 of an edge), else a
// pixel at a time. CC > 0: the channel count and pixel stride, known at compile time.
template <int VB, int K, bool RES, int64_t CC, class A>
RMT_ALWAYS_INLINE void conv_row_blocks(const ConvShape& s, const A* const* rows, const A* wt,
                                       const A* bias, const A* res, A* out) {
  constexpr int W = VB / sizeof(A);
  const int64_t k = K > 0 ? K : s.k, pad = (k - 1) / 2, C = CC > 0 ? CC : s.channels;
  const int64_t IP = CC > 0 ? CC : s.in_pixel;
  constexpr int KK = K > 0 ? K : 1;
  bool all_rows = K > 0;
  for (int64_t ki = 0; ki < k; ++ki) all_rows = all_rows && rows[ki];
  const bool clipped_blocks = K > 0 && C % W == 0;
  // Whether the block of pixels from w has every tap inside the image.
  auto inside = [&](int64_t w) { return all_rows && w >= pad && w + kPixels - 1 + pad < s.width; };
  // Many channels on a narrow row (C >= 8 x width: RMT-S's 14 x 14 and 7 x 7 stages, its 28 x 28
  // FFN): a strip of one block of channels across the row at a time, each sum's taps in the same
  // order as below. The pixel-major order streams every tap's weights for all C channels at each
  // block of pixels (27 KiB at 3x3, 768 channels), which evict the input rows from L1; a strip
  // reuses its block's weights across the row. Xeon (AVX-512), 1 thread, the op alone: 14 x 14 x
  // 768 3x3 1.33x, 14 x 14 x 256 3x3 and 5x5 1.08x and 1.13x, 7 x 7 0.99-1.13x, 28 x 28 x 384 3x3
  // 1.15x; wider rows lose (56 x 56 x 192 3x3 0.85x, 56 x 56 x 64 3x3 0.73x). The AVX2 variant
  // there: 14 x 14 1.10-1.34x, 7 x 7 0.95-1.05x. RMT-S batch 1: 84.0 -> 83.3 ms on 1 thread.
  if (clipped_blocks && C >= 8 * s.width) {
    constexpr int N = kChannelVectors<VB, KK>;
    auto strip = [&](auto vectors, int64_t c0) {
      constexpr int NV = decltype(vectors)::value;
      for (int64_t w = 0; w < s.width; w += kPixels) {
        if (inside(w)) {
          conv_pixels_block<VB, KK, NV, RES, false>(rows, wt, bias, res, out, C, IP, s.width, w,
                                                    c0);
        } else {
          conv_pixels_block<VB, KK, NV, RES, true>(rows, wt, bias, res, out, C, IP, s.width, w,
                                                   c0);
        }
      }
    };
    int64_t c = 0;
    for (; c + N * W <= C; c += N * W) strip(std::integral_constant<int, N>{}, c);
    for (; c < C; c += W) strip(std::integral_constant<int, 1>{}, c);
    return;
  }
  for (int64_t w = 0; w < s.width;) {
    if (inside(w)) {
      conv_pixels<VB, KK, RES, false>(rows, wt, bias, res, out, C, IP, s.width, w);
      w += kPixels;
    } else if (clipped_blocks) {
      conv_pixels<VB, KK, RES, true>(rows, wt, bias, res, out, C, IP, s.width, w);
      w += kPixels;
    } else {
      conv_pixel<VB, RES>(rows, wt, bias, res, out, C, IP, s.width, k, w);
      ++w;
    }
  }
}

// The channel counts conv_row runs with C fixed at compile time (RMT-T's and RMT-S's).
using FixedChannelCounts = std::integer_sequence<int64_t, 64, 128, 256, 512, 768, 1536>;

// conv_row_blocks with CC = C where C is one of Counts (then true), else nothing (false).
template <int VB, int K, bool RES, class A, int64_t... Counts>
RMT_ALWAYS_INLINE bool conv_row_blocks_fixed(std::integer_sequence<int64_t, Counts...>, int64_t C,
                                             const ConvShape& s, const A* const* rows,
                                             const A* wt, const A* bias, const A* res, A* out) {
  return ((C == Counts && (conv_row_blocks<VB, K, RES, Counts>(s, rows, wt, bias, res, out), true)) ||
          ...);
}

// One output row from its k input rows (rows[ki] = input row h + ki - pad, null outside the image)
// and, with RES, the residual row. K > 0 fixes the kernel size at compile time (3 and 5 in RMT) and
// lets the interior take conv_pixels; K == 0 reads it from the shape.
template <int VB, int K, bool RES, bool FIXED_C, class A>
RMT_ALWAYS_INLINE void conv_row(const ConvShape& s, const A* const* rows, const A* wt,
                                const A* bias, const A* res, A* out) {
  // RMT-T's and RMT-S's channel counts, contiguous pixels (IP == C), float, AVX2 or AVX-512: a
  // copy with C known at compile time. A 3x3 block's 18 input and 9 weight addresses are then a
  // few base registers plus constant displacements; with C in a register the compiler kept a
  // pointer for each and spilled most of them, a stack load every few multiply-adds (AVX2, Zen 3,
  // 1 thread: 3x3 at 36-42 -> 43-62 GFLOP/s, 5x5 at 36-63 -> 50-75). Other counts (RMT-B's,
  // RMT-L's), double and the baseline build read C at run time: these copies are 0.7 MB of code
  // and double this file's compile time (69 -> 139 s).
  if constexpr (FIXED_C && RES && K > 0 && VB >= 32 && std::is_same_v<A, float>) {
    const int64_t fixed = s.channels == s.in_pixel ? s.channels : 0;
    if (conv_row_blocks_fixed<VB, K, RES>(FixedChannelCounts{}, fixed, s, rows, wt, bias, res,
                                          out)) {
      return;
    }
  }
  conv_row_blocks<VB, K, RES, 0>(s, rows, wt, bias, res, out);
}

// FIXED_C: RMT's channel counts take conv_row's compile-time copies (the paths the model runs: the
// op with a residual, CPE's and LePE's, and the FFN's row pipeline; the in-place FFN middle, its
// fallback, reads C at run time: a copy for every path would triple this file's compile time).
template <int VB, bool FIXED_C, class A>
RMT_ALWAYS_INLINE void conv_row_any(const ConvShape& s, const A* const* rows, const A* wt,
                                    const A* bias, const A* res, A* out) {
  if (res) {
    if (s.k == 3) return conv_row<VB, 3, true, FIXED_C>(s, rows, wt, bias, res, out);
    if (s.k == 5) return conv_row<VB, 5, true, FIXED_C>(s, rows, wt, bias, res, out);
    return conv_row<VB, 0, true, false>(s, rows, wt, bias, res, out);
  }
  if (s.k == 3) return conv_row<VB, 3, false, false>(s, rows, wt, bias, res, out);
  if (s.k == 5) return conv_row<VB, 5, false, false>(s, rows, wt, bias, res, out);
  conv_row<VB, 0, false, false>(s, rows, wt, bias, res, out);
}

// The input rows of output row h of image b, read from a (B, H, W, C) tensor whose flattened
// (batch * height) rows from `first` on lie at x (first = 0: the whole tensor).
template <class A>
RMT_ALWAYS_INLINE void rows_of(const ConvShape& s, const A* x, int64_t b, int64_t h,
                               const A** rows, int64_t first = 0) {
  const int64_t pad = (s.k - 1) / 2;
  for (int64_t ki = 0; ki < s.k; ++ki) {
    const int64_t hh = h + ki - pad;
    rows[ki] = hh >= 0 && hh < s.height
                   ? x + (b * s.height + hh - first) * s.width * s.in_pixel
                   : nullptr;
  }
}

// y rows [row0, row1) of the flattened (batch * height) index, out of place.
template <int VB, class A>
RMT_ALWAYS_INLINE void conv_rows(const ConvShape& s, const A* x, const A* wt, const A* bias,
                                 const A* res, A* y, int64_t row0, int64_t row1) {
  const int64_t row_size = s.width * s.channels;
  std::vector<const A*> rows(s.k);
  for (int64_t row = row0; row < row1; ++row) {
    rows_of(s, x, row / s.height, row % s.height, rows.data());
    conv_row_any<VB, true>(s, rows.data(), wt, bias, res ? res + row * row_size : nullptr,
                           y + row * row_size);
  }
}

// One thread's share of the in-place FFN middle, h <- conv(gelu(h)) + gelu(h) (ACTIVATE) or
// h <- conv(h) + h, for the rows [row0, row1): the k rows of the window live (activated) in a
// ring, and output row h overwrites input row h, which the ring already holds; rows past either
// end of the share come from `halo` (taken before any thread wrote), since the neighbouring
// shares overwrite them.
template <int VB, bool ACTIVATE, class A>
RMT_ALWAYS_INLINE void conv_rows_in_place(const ConvShape& s, A* h_data, const A* wt,
                                               const A* bias, int64_t row0, int64_t row1,
                                               const A* halo_above, const A* halo_below) {
  const int64_t k = s.k, pad = (k - 1) / 2, row_size = s.width * s.channels;
  const std::unique_ptr<A[]> ring_rows(new A[k * row_size]);  // every row written before it is read
  A* const ring = ring_rows.get();
  std::vector<const A*> rows(k);
  // Activated image row hh of image b into its ring slot.
  auto load = [&](int64_t b, int64_t hh) {
    A* slot = ring + (hh % k) * row_size;
    const int64_t flat = b * s.height + hh;
    if (flat < row0) {
      std::memcpy(slot, halo_above + (row0 - flat - 1) * row_size, row_size * sizeof(A));
    } else if (flat >= row1) {
      std::memcpy(slot, halo_below + (flat - row1) * row_size, row_size * sizeof(A));
    } else if (ACTIVATE) {
      cpu::gelu<VB>(h_data + flat * row_size, slot, row_size);
    } else {
      std::memcpy(slot, h_data + flat * row_size, row_size * sizeof(A));
    }
  };
  for (int64_t row = row0; row < row1; ++row) {
    const int64_t b = row / s.height, h = row % s.height;
    if (row == row0 || h == 0) {  // a new window: every row of it
      for (int64_t hh = std::max<int64_t>(0, h - pad); hh <= std::min(s.height - 1, h + pad); ++hh)
        load(b, hh);
    } else if (h + pad < s.height) {  // the window slides by one row
      load(b, h + pad);
    }
    for (int64_t ki = 0; ki < k; ++ki) {
      const int64_t hh = h + ki - pad;
      rows[ki] = hh >= 0 && hh < s.height ? ring + (hh % k) * row_size : nullptr;
    }
    conv_row_any<VB, false>(s, rows.data(), wt, bias, ring + (h % k) * row_size,
                            h_data + row * row_size);
  }
}

// Output rows [row0, row1) of conv(h) + h for one image whose rows of h from `first` on
// lie in `slab`, one after the other (the FFN's row pipeline, nn/ffn_rows.h); out: the output
// rows, one after the other. Rows outside the image are the zero padding.
template <int VB, class A>
RMT_ALWAYS_INLINE void conv_slab_add_self(const ConvShape& s, const A* slab, int64_t first,
                                          const A* wt, const A* bias, int64_t row0, int64_t row1,
                                          A* out) {
  const int64_t row_size = s.width * s.channels;
  std::vector<const A*> rows(s.k);
  for (int64_t h = row0; h < row1; ++h) {
    rows_of(s, slab, 0, h, rows.data(), first);
    conv_row_any<VB, true>(s, rows.data(), wt, bias, slab + (h - first) * row_size,
                           out + (h - row0) * row_size);
  }
}

// Baseline, AVX2 and AVX-512 variants of the drivers, picked once at run time (cpu_simd.h); W:
// their float lanes.
#define RMT_DEFINE_VARIANT(SUFFIX, ATTR, W)                                                        \
  template <class A>                                                                               \
  ATTR RMT_FLATTEN void conv_rows_##SUFFIX(const ConvShape& s, const A* x, const A* wt,            \
                                           const A* bias, const A* res, A* y, int64_t row0,        \
                                           int64_t row1) {                                         \
    conv_rows<4 * W>(s, x, wt, bias, res, y, row0, row1);                                          \
  }                                                                                                \
  template <class A>                                                                               \
  ATTR RMT_FLATTEN void conv_in_place_##SUFFIX(const ConvShape& s, A* h, const A* wt,              \
                                               const A* bias, int64_t row0, int64_t row1,          \
                                               const A* above, const A* below, bool activate) {    \
    if (activate) {                                                                                \
      conv_rows_in_place<4 * W, true>(s, h, wt, bias, row0, row1, above, below);                   \
    } else {                                                                                       \
      conv_rows_in_place<4 * W, false>(s, h, wt, bias, row0, row1, above, below);                  \
    }                                                                                              \
  }                                                                                                \
  template <class A>                                                                               \
  ATTR RMT_FLATTEN void conv_slab_##SUFFIX(const ConvShape& s, const A* slab, int64_t first,       \
                                           const A* wt, const A* bias, int64_t row0, int64_t row1, \
                                           A* out) {                                               \
    conv_slab_add_self<4 * W>(s, slab, first, wt, bias, row0, row1, out);                          \
  }                                                                                                \
  template <class A>                                                                               \
  ATTR RMT_FLATTEN void gelu_##SUFFIX(const A* in, A* out, int64_t n) {                            \
    cpu::gelu<4 * W>(in, out, n);                                                                  \
  }

RMT_DEFINE_LANE_VARIANTS(RMT_DEFINE_VARIANT)
#undef RMT_DEFINE_VARIANT

// The kernels' weights (k * k, C), tap-major, and bias (zeros when there is none), as plain
// arrays. A weight whose memory is tap-major already (a (k, k, C) tensor viewed as (C, 1, k, k):
// what DWConv2d keeps at inference) is read where it is; any other is transposed here, one loop
// per call instead of ATen's reshape, transpose and copy (about 87 calls in an RMT-S forward).
template <class A>
class KernelWeights {
 public:
  KernelWeights(const at::Tensor& weight, const at::Tensor& bias, int64_t channels) {
    const int64_t width = weight.size(3), taps = weight.size(2) * width;
    if (weight.stride(0) == 1 && weight.stride(3) == channels &&
        weight.stride(2) == width * channels) {
      wt_ = weight.data_ptr<A>();
    } else {
      const auto w = weight.contiguous();  // (C, 1, k, k)
      const A* src = w.data_ptr<A>();
      transposed_.resize(taps * channels);
      for (int64_t t = 0; t < taps; ++t)  // writes in order: the strided reads cost less
        for (int64_t c = 0; c < channels; ++c) transposed_[t * channels + c] = src[c * taps + t];
      wt_ = transposed_.data();
    }
    if (bias.defined() && bias.is_contiguous()) {
      bias_ = bias.data_ptr<A>();
    } else {
      zeros_or_copy_.assign(channels, A(0));
      if (bias.defined()) {
        std::copy_n(bias.contiguous().data_ptr<A>(), channels, zeros_or_copy_.begin());
      }
      bias_ = zeros_or_copy_.data();
    }
  }
  const A* wt() const { return wt_; }
  const A* bias() const { return bias_; }

 private:
  const A* wt_;
  const A* bias_;
  std::vector<A> transposed_, zeros_or_copy_;
};

at::Tensor depthwise_conv2d_nhwc_cpu(const at::Tensor& x, const at::Tensor& weight,
                                     const c10::optional<at::Tensor>& bias_opt, int64_t stride,
                                     int64_t padding,
                                     const c10::optional<at::Tensor>& residual_opt) {
  const at::Tensor bias = bias_opt.value_or(at::Tensor());
  const at::Tensor residual = residual_opt.value_or(at::Tensor());
  depthwise_conv::check_arguments("depthwise_conv2d_nhwc", x, weight, bias);
  if (!depthwise_conv::cpu_kernel_applies(x, weight, bias, stride, padding)) {
    return depthwise_conv::composite(x, weight, bias, stride, padding, residual);
  }
  TORCH_CHECK(!residual.defined() || residual.sizes() == x.sizes(),
              fmt::format("depthwise_conv2d_nhwc: expected residual of the output's shape {}, got "
                          "{}",
                          text::shape(x.sizes()), text::shape(residual.sizes())));
  TORCH_CHECK(!residual.defined() || (residual.scalar_type() == x.scalar_type() &&
                                      residual.device() == x.device()),
              fmt::format("depthwise_conv2d_nhwc: residual must be a {} tensor on {}, got {} on {}",
                          c10::toString(x.scalar_type()), x.device().str(),
                          c10::toString(residual.scalar_type()), residual.device().str()));
  // A view whose pixels sit a fixed stride apart (the v of a fused q/k/v projection) is read in
  // place; anything else is made contiguous first.
  const int64_t pixel_stride = token_stride(x);
  const auto xc = pixel_stride > 0 ? x : x.contiguous();
  const ConvShape s{x.size(0), x.size(1),     x.size(2),
                    x.size(3), weight.size(2), pixel_stride > 0 ? pixel_stride : x.size(3)};
  const auto rc = residual.defined() ? residual.contiguous() : residual;
  auto y = at::empty(x.sizes(), x.options());
  if (y.numel() == 0) return y;
  const int64_t row_cost = s.width * s.channels * s.k * s.k;
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, row_cost));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "depthwise_conv2d_nhwc", [&] {
    const KernelWeights<scalar_t> kw(weight, bias, s.channels);
    const scalar_t* rp = rc.defined() ? rc.data_ptr<scalar_t>() : nullptr;
    auto body = [&](int64_t row0, int64_t row1) {
      RMT_CALL_LANE_VARIANT(conv_rows, s, xc.data_ptr<scalar_t>(), kw.wt(), kw.bias(),
                            rp, y.data_ptr<scalar_t>(), row0, row1);
    };
    // Rows in home shares that balance themselves: each thread keeps to its own rows, and the
    // threads of a shared host run at uneven speeds (runtime/guided_parallel.h).
    runtime::parallel_for_guided(0, s.batch * s.height, grain, 1, body);
  });
  return y;
}

}  // namespace

namespace depthwise_conv {

bool cpu_kernel_applies(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                        int64_t stride, int64_t padding) {
  const int64_t k = weight.size(2);
  auto same = [&](const at::Tensor& t) {
    return !t.defined() || (t.scalar_type() == x.scalar_type() && t.device() == x.device());
  };
  return x.device().is_cpu() &&
         (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble) && stride == 1 &&
         k % 2 == 1 && padding == (k - 1) / 2 && same(weight) && same(bias);
}

void conv_add_in_place_cpu(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& bias,
                           bool activate) {
  const ConvShape s{h.size(0), h.size(1), h.size(2), h.size(3), weight.size(2), h.size(3)};
  if (h.numel() == 0) return;
  const int64_t rows = s.batch * s.height, row_size = s.width * s.channels;
  const int64_t pad = (s.k - 1) / 2;
  // Contiguous shares of rows, one per thread, and each share's halo: the activated rows just
  // outside it (same image only) that a neighbour will overwrite, taken before anyone writes.
  const int64_t shares = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows));
  const int64_t per_share = (rows + shares - 1) / shares;
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "gelu_depthwise_conv2d_add", [&] {
    const KernelWeights<scalar_t> kw(weight, bias, s.channels);
    scalar_t* data = h.data_ptr<scalar_t>();
    // Not zeroed: only the rows taken below are read.
    const std::unique_ptr<scalar_t[]> above(new scalar_t[shares * pad * row_size]);
    const std::unique_ptr<scalar_t[]> below(new scalar_t[shares * pad * row_size]);
    auto take_row = [&](const scalar_t* row, scalar_t* into) {
      if (activate) {
        RMT_CALL_LANE_VARIANT(gelu, row, into, row_size);
      } else {
        std::copy_n(row, row_size, into);
      }
    };
    for (int64_t i = 0; i < shares; ++i) {
      const int64_t r0 = std::min(rows, i * per_share), r1 = std::min(rows, r0 + per_share);
      for (int64_t d = 1; d <= pad && r0 < r1; ++d) {  // rows r0 - d and r1 - 1 + d
        if ((r0 % s.height) - d >= 0) {
          take_row(data + (r0 - d) * row_size, above.get() + (i * pad + d - 1) * row_size);
        }
        if (((r1 - 1) % s.height) + d < s.height) {
          take_row(data + (r1 - 1 + d) * row_size, below.get() + (i * pad + d - 1) * row_size);
        }
      }
    }
    at::parallel_for(0, shares, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t r0 = std::min(rows, i * per_share), r1 = std::min(rows, r0 + per_share);
        if (r0 >= r1) continue;
        const scalar_t* halo_above = above.get() + i * pad * row_size;
        const scalar_t* halo_below = below.get() + i * pad * row_size;
        RMT_CALL_LANE_VARIANT(conv_in_place, s, data, kw.wt(), kw.bias(), r0, r1,
                              halo_above, halo_below, activate);
      }
    });
  });
}

void conv_add_self_rows_cpu(const float* slab, int64_t first, int64_t height, int64_t width,
                            int64_t channels, const at::Tensor& weight, const at::Tensor& bias,
                            int64_t row0, int64_t row1, float* out) {
  const ConvShape s{1, height, width, channels, weight.size(2), channels};
  const KernelWeights<float> kw(weight, bias, channels);
  RMT_CALL_LANE_VARIANT(conv_slab, s, slab, first, kw.wt(), kw.bias(), row0, row1, out);
}

}  // namespace depthwise_conv
}  // namespace rmt::ops

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

TORCH_LIBRARY_IMPL(rmt, CPU, m) {
  m.impl("depthwise_conv2d_nhwc", TORCH_FN(rmt::ops::depthwise_conv2d_nhwc_cpu));
}

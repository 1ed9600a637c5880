// The float forward with the queries across the lanes (see attend_lanes.h).
//
// Per block of R vectors of W queries, three sweeps over the keys, each with independent chains:
//   1. scores: kKeysPerStep keys at a time, R query channel vectors times a broadcast key channel;
//      the mask added, the running maximum kept lane by lane, the score vectors stored (n x R W);
//   2. exponentials of the scores less the maximum, and their sum, lane by lane;
//   3. outputs: a few channels at a time, R weight vectors times a broadcast value channel.
// The same file options as attend.cpp (no-trapping-math, fp-contract=fast), for this file's own
// functions only.

#include "ops/masa/cpu/attend_lanes.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "ops/cpu/cpu_simd.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math", "fp-contract=fast")
#endif

#include "ops/cpu/cpu_math.h"  // after the pragma: its functions take this file's options

namespace rmt::ops::cpu {
namespace {

// Vectors of W floats: 4 (SSE, the baseline build), 8 (AVX2) or 16 (AVX-512).
template <int W>
using LV = VecN<float, 4 * W>;
template <int W>
using LI = VecN<int32_t, 4 * W>;

template <int W>
RMT_ALWAYS_INLINE LV<W> load(const float* p) {
  return vload<float, LV<W>>(p);
}
// A block of queries is R vectors of W lanes: R = 2 on AVX2 and AVX-512, so that each broadcast key
// or value channel (a load) feeds two multiply-adds instead of one, the baseline R = 1. Lane l of
// vector r is query i0 + r * W + l; each query's arithmetic is the same for every R.
template <int W>
constexpr int kVectorsPerBlock = W >= 8 ? 2 : 1;

// The widest block's queries (AVX-512's two vectors): the scores' space in the workspace.
constexpr int64_t kMaxBlockLanes = 2 * kQueryLanes;

// Keys per step of the score sweep: R x kKeysPerStep chains of d dependent FMAs, enough to hide
// the FMA latency (8 with R = 1; with R = 2, 4 keys on AVX2 (12 of its 16 registers), 8 on
// AVX-512 (16 of its 32)).
template <int W, int R>
constexpr int kKeysPerStep = R == 1 || W == 16 ? 8 : 4;

// Sweep 1 for queries [i0, i0 + R * W): S[j * R * W + lane] = q . k_j + decay * distance(i, j);
// mx: the maximum over j, lane by lane. D > 0: d fixed at compile time. GRID: the distance on the
// tokens' grid (p.y, p.x), else |i - j|, whose mask terms `line` holds (mask_line).
template <int W, int R, int D, bool GRID>
RMT_ALWAYS_INLINE void masked_scores(const LaneProblem& p, int64_t i0, const float* line,
                                     float* __restrict S, LV<W>* mx) {
  using V = LV<W>;
  const int64_t d = D > 0 ? D : p.d, ldq = p.ldq, ks = p.k_stride;
  const float* __restrict qt = p.qt + i0;
  V xq[R] = {}, yq[R] = {};
  if (GRID) {
    for (int r = 0; r < R; ++r) {
      xq[r] = load<W>(p.x + i0 + r * W);
      yq[r] = load<W>(p.y + i0 + r * W);
    }
  }
  const V decay = V{} + p.decay * kLog2e;  // broadcasts (p.decay < 0, never -0); base 2
  for (int r = 0; r < R; ++r) mx[r] = V{} - std::numeric_limits<float>::infinity();
  // 1-D: key j's mask for queries i0.. is line[i0 - j + n - 1 ..] (see mask_line), an operand
  // read from memory instead of a subtraction, an absolute value and a multiply-add.
  const float* line_i0 = line + i0 + p.n - 1;
  auto keep = [&](V s, int r, int64_t j) {
    if (GRID) {
      const V x = xq[r] - p.x[j], y = yq[r] - p.y[j];
      s += decay * ((x < 0 ? -x : x) + (y < 0 ? -y : y));
    } else {
      s += load<W>(line_i0 + r * W - j);
    }
    mx[r] = s > mx[r] ? s : mx[r];
    vstore(S + (j * R + r) * W, s);
  };
  constexpr int J = kKeysPerStep<W, R>;
  // acc[u][r] = the R query vectors . key u, for the J keys key(u) points at (d channels each).
  auto dot_keys = [&](auto key, V (&acc)[J][R]) {
    for (int64_t c = 0; c < d; ++c) {
      V qc[R];
      for (int r = 0; r < R; ++r) qc[r] = load<W>(qt + c * ldq + r * W);
      for (int u = 0; u < J; ++u) {
        const float kc = key(u)[c];
        for (int r = 0; r < R; ++r) acc[u][r] += qc[r] * kc;
      }
    }
  };
  int64_t j = 0;
  for (; j + J <= p.n; j += J) {
    const float* __restrict kj = p.k + j * ks;
    V acc[J][R] = {};
    dot_keys([&](int u) { return kj + u * ks; }, acc);
    for (int u = 0; u < J; ++u)
      for (int r = 0; r < R; ++r) keep(acc[u][r], r, j + u);
  }
  if (j < p.n) {
    // The last keys in one step too, the missing ones repeating the last key (computed, not
    // kept): J chains of d dependent multiply-adds at once instead of one chain per key, each
    // waiting out the FMA's latency (RMT-S's 14-token rows at 8 keys a step: 8, then the last 6
    // in one more step instead of 6 alone).
    const float* __restrict kp[J];
    for (int u = 0; u < J; ++u) kp[u] = p.k + std::min<int64_t>(j + u, p.n - 1) * ks;
    V acc[J][R] = {};
    dot_keys([&](int u) { return kp[u]; }, acc);
    for (int u = 0; u < J; ++u) {
      if (u < p.n - j) {
        for (int r = 0; r < R; ++r) keep(acc[u][r], r, j + u);
      }
    }
  }
}

// The sums over the keys run in blocks of this many keys, each block's sum then added to the
// total: the rounding error grows with the block length plus the block count, not with n (the
// full operator sums over every token of the image: 1767 keys in a test, 3136 at 224x224).
constexpr int64_t kSumBlock = 64;

// Sweep 2: S <- 2^(S - mx) lane by lane (the scores are in base 2); sum: the sums.
template <int W, int R>
RMT_ALWAYS_INLINE void exp_and_sum(float* __restrict S, int64_t n, const LV<W>* mx, LV<W>* sum) {
  using V = LV<W>;
  for (int r = 0; r < R; ++r) sum[r] = V{};
  for (int64_t j0 = 0; j0 < n; j0 += kSumBlock) {
    V block[R] = {};
    for (int64_t j = j0; j < std::min(n, j0 + kSumBlock); ++j) {
      for (int r = 0; r < R; ++r) {
        float* s = S + (j * R + r) * W;
        const V e = vexp2_nonpos_of<V, LI<W>>(load<W>(s) - mx[r]);
        vstore(s, e);
        block[r] += e;
      }
    }
    for (int r = 0; r < R; ++r) sum[r] += block[r];
  }
}

// Sweep 3 for channels [c0, c0 + CB): ot[c * ldq + i] = sum_j S[j][i] v_j[c] * inverse[i]
// (inverse: 1 / the sum of query i's weights); a block's partial sums are added into ot (the
// totals live there, not in registers).
template <int W, int R, int CB>
RMT_ALWAYS_INLINE void weighted_values(const LaneProblem& p, const float* __restrict S,
                                       const LV<W>* inverse, int64_t c0, float* __restrict ot) {
  using V = LV<W>;
  for (int64_t j0 = 0; j0 < p.n; j0 += kSumBlock) {
    V acc[CB][R] = {};
    for (int64_t j = j0; j < std::min(p.n, j0 + kSumBlock); ++j) {
      V w[R];
      for (int r = 0; r < R; ++r) w[r] = load<W>(S + (j * R + r) * W);
      const float* __restrict vj = p.v + j * p.v_stride + c0;
      for (int cc = 0; cc < CB; ++cc) {
        const float vc = vj[cc];
        for (int r = 0; r < R; ++r) acc[cc][r] += w[r] * vc;
      }
    }
    const bool last = j0 + kSumBlock >= p.n;
    for (int cc = 0; cc < CB; ++cc) {
      for (int r = 0; r < R; ++r) {
        float* o = ot + (c0 + cc) * p.ldq + r * W;
        const V total = j0 == 0 ? acc[cc][r] : load<W>(o) + acc[cc][r];
        vstore(o, last ? total * inverse[r] : total);
      }
    }
  }
}

// Queries [i0, i0 + R * W) (columns past m are padding).
template <int W, int R, int D, bool GRID>
RMT_ALWAYS_INLINE void forward_block(const LaneProblem& p, int64_t i0, const float* line,
                                     float* ot, float* work) {
  LV<W> mx[R], inverse[R];
  masked_scores<W, R, D, GRID>(p, i0, line, work, mx);
  // One division for the block's queries, then a product per channel vector: the division a
  // channel vector was 3.5% of the kernel's samples at RMT-S's stage 3 on AVX2 (Zen 3).
  exp_and_sum<W, R>(work, p.n, mx, inverse);
  for (int r = 0; r < R; ++r) inverse[r] = 1.0f / inverse[r];
  float* o = ot + i0;
  // Channels per step: W vectors of accumulators with R = 1; with R = 2, 4 x 2 on AVX2, 8 x 2 on
  // AVX-512 (the broadcast channel and the R weight vectors take the other registers).
  constexpr int CB = R == 1 ? W : W == 16 ? 8 : 4;
  int64_t c = 0;
  for (; c + CB <= p.dv; c += CB) weighted_values<W, R, CB>(p, work, inverse, c, o);
  for (; c + 4 <= p.dv; c += 4) weighted_values<W, R, 4>(p, work, inverse, c, o);
  for (; c < p.dv; ++c) weighted_values<W, R, 1>(p, work, inverse, c, o);
}

// The 1-D mask by offset: line[t] = decay * log2(e) * |t - (n - 1)| for t < lanes_padded(m) + n
// - 1, so that query i and key j read line[i - j + n - 1]: the product rounded before it is added
// to the score instead of fused into the addition (one more rounding, of the mask term).
RMT_ALWAYS_INLINE void mask_line(const LaneProblem& p, float* line) {
  const float decay = p.decay * kLog2e;
  for (int64_t t = 0; t < lanes_padded(p.m) + p.n - 1; ++t) {
    line[t] = decay * static_cast<float>(t > p.n - 1 ? t - (p.n - 1) : p.n - 1 - t);
  }
}

template <int W, int D, bool GRID>
RMT_ALWAYS_INLINE void forward_impl(const LaneProblem& p, float* ot, float* work) {
  float* line = work + p.n * kMaxBlockLanes;
  if (!GRID) mask_line(p, line);
  constexpr int R = kVectorsPerBlock<W>;
  for (int64_t i0 = 0; i0 < p.m; i0 += R * W) {
    // A last block of at most W queries in one vector; of at most W / 2 in vectors half as wide:
    // half the cost where wide operations issue at half the rate (AVX-512 on AMD's Zen 4), the
    // same elsewhere. More than W left: R vectors, the last one partly padding (RMT-S's 56-token
    // rows on AVX-512: 32 + 32, faster than 16 + 16 + 16 + 8 on a Xeon).
    if constexpr (W >= 8) {
      if (p.m - i0 <= W / 2) return forward_block<W / 2, 1, D, GRID>(p, i0, line, ot, work);
    }
    if constexpr (R > 1) {
      if (p.m - i0 <= W) return forward_block<W, 1, D, GRID>(p, i0, line, ot, work);
    }
    forward_block<W, R, D, GRID>(p, i0, line, ot, work);
  }
}

// RMT's head dims are 16 and 32; other d run the same code with d read at run time.
template <int W, bool GRID>
RMT_ALWAYS_INLINE void forward_any_d(const LaneProblem& p, float* ot, float* work) {
  if (p.d == 16) return forward_impl<W, 16, GRID>(p, ot, work);
  if (p.d == 32) return forward_impl<W, 32, GRID>(p, ot, work);
  forward_impl<W, 0, GRID>(p, ot, work);
}

// In-register transpose of a W x W tile (rows[r][c] -> rows[c][r]): log2(W) rounds of
// interleaving rows k and k + W/2 (the perfect shuffle), W two-input shuffles a round.
template <int W>
struct Interleave;
template <>
struct Interleave<4> {
  static constexpr LI<4> lo = {0, 4, 1, 5}, hi = {2, 6, 3, 7};
  static constexpr int rounds = 2;
};
template <>
struct Interleave<8> {
  static constexpr LI<8> lo = {0, 8, 1, 9, 2, 10, 3, 11}, hi = {4, 12, 5, 13, 6, 14, 7, 15};
  static constexpr int rounds = 3;
};
template <>
struct Interleave<16> {
  static constexpr LI<16> lo = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
  static constexpr LI<16> hi = {8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  static constexpr int rounds = 4;
};

template <int W>
RMT_ALWAYS_INLINE void transpose_tile(LV<W>* rows) {
  using T = Interleave<W>;
  for (int round = 0; round < T::rounds; ++round) {
    LV<W> next[W];
    for (int k = 0; k < W / 2; ++k) {
      next[2 * k] = __builtin_shuffle(rows[k], rows[k + W / 2], T::lo);
      next[2 * k + 1] = __builtin_shuffle(rows[k], rows[k + W / 2], T::hi);
    }
    for (int k = 0; k < W; ++k) rows[k] = next[k];
  }
}

// Whole tiles of W channels; a tile of tokens may be short (missing rows are zeros in, skipped
// out). Other channel counts go element by element.
template <int W>
RMT_ALWAYS_INLINE void to_lanes_impl(const float* src, int64_t src_stride, int64_t rows,
                                     int64_t cols, float* dst, int64_t ldd) {
  if (cols % W != 0) {
    const int64_t padded = lanes_padded(rows);
    for (int64_t c = 0; c < cols; ++c) {
      for (int64_t t = 0; t < rows; ++t) dst[c * ldd + t] = src[t * src_stride + c];
      for (int64_t t = rows; t < padded; ++t) dst[c * ldd + t] = 0.0f;
    }
    return;
  }
  for (int64_t t0 = 0; t0 < rows; t0 += W) {
    const int64_t n = std::min<int64_t>(W, rows - t0);
    for (int64_t c0 = 0; c0 < cols; c0 += W) {
      LV<W> tile[W];
#pragma GCC unroll 16
      for (int u = 0; u < W; ++u)
        tile[u] = u < n ? load<W>(src + (t0 + u) * src_stride + c0) : LV<W>{};
      transpose_tile<W>(tile);
#pragma GCC unroll 16
      for (int c = 0; c < W; ++c) vstore(dst + (c0 + c) * ldd + t0, tile[c]);
    }
  }
  // Columns past the last tile up to lanes_padded(rows) (W < kQueryLanes).
  const int64_t done = (rows + W - 1) / W * W, padded = lanes_padded(rows);
  for (int64_t c = 0; c < cols; ++c)
    for (int64_t t = done; t < padded; ++t) dst[c * ldd + t] = 0.0f;
}

template <int W>
RMT_ALWAYS_INLINE void from_lanes_impl(const float* src, int64_t lds, int64_t rows, int64_t cols,
                                       float* dst, int64_t dst_stride) {
  if (cols % W != 0) {
    for (int64_t t = 0; t < rows; ++t)
      for (int64_t c = 0; c < cols; ++c) dst[t * dst_stride + c] = src[c * lds + t];
    return;
  }
  for (int64_t t0 = 0; t0 < rows; t0 += W) {
    const int64_t n = std::min<int64_t>(W, rows - t0);
    for (int64_t c0 = 0; c0 < cols; c0 += W) {
      LV<W> tile[W];
#pragma GCC unroll 16
      for (int c = 0; c < W; ++c) tile[c] = load<W>(src + (c0 + c) * lds + t0);
      transpose_tile<W>(tile);
      // A fixed count, unrolled, each row tested: with n as the bound the tile was indexed at run
      // time and copied through the stack.
#pragma GCC unroll 16
      for (int u = 0; u < W; ++u) {
        if (u < n) vstore(dst + (t0 + u) * dst_stride + c0, tile[u]);
      }
    }
  }
}

template <int W>
struct PairSwap;
template <>
struct PairSwap<4> {
  static constexpr LI<4> mask = {1, 0, 3, 2};
};
template <>
struct PairSwap<8> {
  static constexpr LI<8> mask = {1, 0, 3, 2, 5, 4, 7, 6};
};
template <>
struct PairSwap<16> {
  static constexpr LI<16> mask = {1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14};
};

template <int W>
RMT_ALWAYS_INLINE void theta_shift_impl(const float* x, int64_t xs, const float* sn,
                                        const float* cs, int64_t tokens, int64_t heads, int64_t d,
                                        float scale, float* out, int64_t out_stride) {
  const bool scaled = scale != 1.0f;
  LV<W> sign;  // -1 on the even lanes (x0 * cos - x1 * sin), built once: a product, not a lane loop
  for (int u = 0; u < W; ++u) sign[u] = u % 2 == 0 ? -1.0f : 1.0f;
  const int64_t whole = d / W * W;  // W is even: the pairs never straddle two vectors
  for (int64_t t = 0; t < tokens; ++t) {
    const float* sr = sn + t * d;
    const float* cr = cs + t * d;
    const float* xt = x + t * xs;
    float* ot = out + t * out_stride;
    // A channel vector of every head at a time: the token's cos and signed sin vectors are loaded
    // once for all its heads (they share the position's tables), not once a head (RMT-S's 14 x 14
    // stage: 16 heads of one vector each).
    for (int64_t c = 0; c < whole; c += W) {
      const LV<W> cv = load<W>(cr + c), sv = load<W>(sr + c) * sign;
      for (int64_t h = 0; h < heads; ++h) {
        LV<W> v = load<W>(xt + h * d + c);
        if (scaled) v = v * scale;
        const LV<W> swapped = __builtin_shuffle(v, PairSwap<W>::mask);
        vstore(ot + h * d + c, v * cv + swapped * sv);
      }
    }
    for (int64_t h = 0; whole < d && h < heads; ++h) {  // a last part narrower than a vector
      const float* xr = xt + h * d;
      float* o = ot + h * d;
      for (int64_t c = whole; c + 1 < d; c += 2) {  // d is even (the operator checks it)
        const float x0 = scaled ? xr[c] * scale : xr[c], x1 = scaled ? xr[c + 1] * scale : xr[c + 1];
        o[c] = x0 * cr[c] - x1 * sr[c];
        o[c + 1] = x1 * cr[c + 1] + x0 * sr[c + 1];
      }
    }
  }
}

// One compiled copy of each entry point per ISA, with its lane count.
#define RMT_DEFINE_VARIANT(SUFFIX, ATTR, W)                                                     \
  ATTR RMT_FLATTEN void forward_##SUFFIX(const LaneProblem& p, float* ot, float* work) {         \
    if (p.y) {                                                                                  \
      forward_any_d<W, true>(p, ot, work);                                                      \
    } else {                                                                                    \
      forward_any_d<W, false>(p, ot, work);                                                     \
    }                                                                                           \
  }                                                                                             \
  ATTR RMT_FLATTEN void theta_shift_##SUFFIX(const float* x, int64_t xs, const float* sn,       \
                                             const float* cs, int64_t tokens, int64_t heads,    \
                                             int64_t d, float scale, float* out, int64_t os) {  \
    theta_shift_impl<W>(x, xs, sn, cs, tokens, heads, d, scale, out, os);                       \
  }                                                                                             \
  ATTR RMT_FLATTEN void to_lanes_##SUFFIX(const float* src, int64_t ss, int64_t rows,           \
                                          int64_t cols, float* dst, int64_t ldd) {              \
    to_lanes_impl<W>(src, ss, rows, cols, dst, ldd);                                            \
  }                                                                                             \
  ATTR RMT_FLATTEN void from_lanes_##SUFFIX(const float* src, int64_t lds, int64_t rows,        \
                                            int64_t cols, float* dst, int64_t ds) {             \
    from_lanes_impl<W>(src, lds, rows, cols, dst, ds);                                          \
  }

RMT_DEFINE_LANE_VARIANTS(RMT_DEFINE_VARIANT)
#undef RMT_DEFINE_VARIANT

}  // namespace

int64_t lanes_workspace_size(int64_t m, int64_t n) {
  return n * kMaxBlockLanes + lanes_padded(m) + n;  // the scores, then the 1-D mask's line
}

void attend_forward_lanes(const LaneProblem& p, float* ot, float* work) {
  RMT_CALL_LANE_VARIANT(forward, p, ot, work);
}

void theta_shift_tokens(const float* x, int64_t x_stride, const float* sn, const float* cs,
                        int64_t tokens, int64_t heads, int64_t d, float scale, float* out,
                        int64_t out_stride) {
  RMT_CALL_LANE_VARIANT(theta_shift, x, x_stride, sn, cs, tokens, heads, d, scale, out,
                        out_stride);
}

void transpose_to_lanes(const float* src, int64_t src_stride, int64_t rows, int64_t cols,
                        float* dst, int64_t ldd) {
  RMT_CALL_LANE_VARIANT(to_lanes, src, src_stride, rows, cols, dst, ldd);
}

void transpose_from_lanes(const float* src, int64_t lds, int64_t rows, int64_t cols, float* dst,
                          int64_t dst_stride) {
  RMT_CALL_LANE_VARIANT(from_lanes, src, lds, rows, cols, dst, dst_stride);
}

}  // namespace rmt::ops::cpu

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

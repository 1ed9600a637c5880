// CPU kernel core of MaSA (see attend.h).
//
// Vectorization: explicit SIMD through GCC's vector extensions (ops/cpu/cpu_simd.h) running across
// keys (score rows against transposed keys, exp, max) or across channels (the value
// accumulators), with a polynomial exp of our own, so nothing depends on -ffast-math or on libm's
// vector entry points. Two options are applied to this file's own functions only (the pragma comes
// after every #include, so no inline function of another header is compiled differently here and
// the ODR holds):
//   - no-trapping-math: lets the scalar clamp in exp() be a max instead of a branch;
//   - fp-contract=fast: a*b+c may become an FMA (one rounding less than the reference chain, far
//     inside the parity tolerances).
// Each entry point is compiled twice, for the baseline ISA and for AVX2+FMA, and the variant is
// chosen once at run time (cpu_simd.h).

#include "ops/masa/cpu/attend.h"

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

constexpr int64_t kBQ = 16;   // queries sharing one key block while it sits in L1
constexpr int64_t kBK = 128;  // keys per block: one score row of kBK values per query

// out[j] = sum_c x[c] * mt[c * ld + j] for j < nbv (a multiple of the vector width): a row of dot
// products against the columns of a transposed matrix. Up to U vectors of keys accumulate at once
// (independent FMA chains); the rest of the row goes by U/2, U/4, ... vectors.
template <int U, class A>
RMT_ALWAYS_INLINE int64_t dot_columns_by(A* __restrict out, const A* __restrict x,
                                         const A* __restrict mt, int64_t ld, int64_t len,
                                         int64_t j, int64_t nbv) {
  using V = VecT<A>;
  constexpr int W = Simd<A>::W;
  for (; j + U * W <= nbv; j += U * W) {
    V acc[U] = {};
    for (int64_t c = 0; c < len; ++c) {
      const V xc = vbcast(x[c]);
      const A* row = mt + c * ld + j;
      for (int u = 0; u < U; ++u) acc[u] += xc * vload(row + u * W);
    }
    for (int u = 0; u < U; ++u) vstore(out + j + u * W, acc[u]);
  }
  return j;
}

template <class A>
RMT_ALWAYS_INLINE void dot_columns(A* __restrict out, const A* __restrict x, const A* __restrict mt,
                                   int64_t ld, int64_t len, int64_t nbv) {
  int64_t j = dot_columns_by<8>(out, x, mt, ld, len, 0, nbv);
  j = dot_columns_by<4>(out, x, mt, ld, len, j, nbv);
  j = dot_columns_by<2>(out, x, mt, ld, len, j, nbv);
  dot_columns_by<1>(out, x, mt, ld, len, j, nbv);
}

// Keys of a block rounded up to whole vectors (the problem's arrays are padded that far).
template <class A>
RMT_ALWAYS_INLINE int64_t whole_vectors(int64_t nb) {
  constexpr int64_t W = Simd<A>::W;
  return (nb + W - 1) / W * W;
}

// s[j] += decay * distance(query i, key kb + j) over s[0, nbv) (dot products already there); the
// padding past nb gets -inf (zero weight).
template <class A>
RMT_ALWAYS_INLINE void add_mask(A* __restrict s, const Problem<A>& p, int64_t i, int64_t kb,
                                int64_t nb) {
  using V = VecT<A>;
  constexpr int W = Simd<A>::W;
  const int64_t nbv = whole_vectors<A>(nb);
  const A* __restrict ky = p.ky + kb;
  const A* __restrict kx = p.kx + kb;
  const V vqy = vbcast(p.qy[i]), vqx = vbcast(p.qx[i]), vdecay = vbcast(p.decay);
  for (int64_t j = 0; j < nbv; j += W) {
    const V dist = vabs<A>(vqy - vload(ky + j)) + vabs<A>(vqx - vload(kx + j));
    vstore(s + j, vload(s + j) + vdecay * dist);
  }
  for (int64_t j = nb; j < nbv; ++j) s[j] = -std::numeric_limits<A>::infinity();
}

// Scores of query i against keys [kb, kb + nb) of the problem, mask included, into s[0, nbv).
template <class A>
RMT_ALWAYS_INLINE void masked_scores(A* __restrict s, const Problem<A>& p, int64_t i, int64_t kb,
                                     int64_t nb) {
  dot_columns(s, p.q + i * p.d, p.kt + kb, p.ldk, p.d, whole_vectors<A>(nb));
  add_mask(s, p, i, kb, nb);
}

// Over s[0, nbv), nbv a multiple of the vector width.
template <class A>
RMT_ALWAYS_INLINE A max_of(const A* __restrict s, int64_t nbv) {
  using V = VecT<A>;
  constexpr int W = Simd<A>::W;
  V vm = vload(s);
  for (int64_t j = W; j < nbv; j += W) {
    const V x = vload(s + j);
    vm = x > vm ? x : vm;
  }
  return hmax<A>(vm);
}

// s[j] <- exp(s[j] - shift) over s[0, nbv); returns the sum. A -inf (padding) becomes 0 (float)
// or e^-708 (double, the clamp), nothing next to the row maximum's 1.
template <class A>
RMT_ALWAYS_INLINE A exp_and_sum(A* __restrict s, A shift, int64_t nbv) {
  using V = VecT<A>;
  constexpr int W = Simd<A>::W;
  const V vshift = vbcast(shift);
  V acc = {};
  for (int64_t j = 0; j < nbv; j += W) {
    const V e = vexp_nonpos(vload(s + j) - vshift);
    vstore(s + j, e);
    acc += e;
  }
  return hsum<A>(acc);
}

// s[j] <- exp(s[j] - shift) * (dp[j] - D) over [0, nbv): the softmax backward dS from the scores.
template <class A>
RMT_ALWAYS_INLINE void softmax_grad(A* __restrict s, const A* __restrict dp, A shift, A D,
                                    int64_t nbv) {
  using V = VecT<A>;
  constexpr int W = Simd<A>::W;
  const V vshift = vbcast(shift), vD = vbcast(D);
  for (int64_t j = 0; j < nbv; j += W)
    vstore(s + j, vexp_nonpos(vload(s + j) - vshift) * (vload(dp + j) - vD));
}

// acc[c] = acc[c] * corr + sum_j w[j] * rows[j * dv + c]. The block's sum is formed on its own
// before it meets the running total, so rounding error grows with the block length (<= kBK) rather
// than with the sequence length, as in a blocked matrix product. Fixed widths keep the block sum
// in registers (two interleaved sets of accumulators for independent FMA chains); other widths use
// `tmp` (dv elements).
template <int DV, class A>
RMT_ALWAYS_INLINE void block_update_fixed(A* __restrict acc, A corr, const A* __restrict w,
                                          const A* __restrict rows, int64_t nb) {
  using V = VecT<A>;
  constexpr int W = Simd<A>::W, K = DV / W;
  V r0[K] = {}, r1[K] = {};
  int64_t j = 0;
  for (; j + 2 <= nb; j += 2) {
    const V w0 = vbcast(w[j]), w1 = vbcast(w[j + 1]);
    const A* row = rows + j * DV;
    for (int k = 0; k < K; ++k) {
      r0[k] += w0 * vload(row + k * W);
      r1[k] += w1 * vload(row + DV + k * W);
    }
  }
  if (j < nb) {
    const V w0 = vbcast(w[j]);
    for (int k = 0; k < K; ++k) r0[k] += w0 * vload(rows + j * DV + k * W);
  }
  const V vcorr = vbcast(corr);
  for (int k = 0; k < K; ++k) vstore(acc + k * W, vload(acc + k * W) * vcorr + (r0[k] + r1[k]));
}

template <class A>
RMT_ALWAYS_INLINE void block_update(A* __restrict acc, A corr, const A* __restrict w,
                                    const A* __restrict rows, int64_t dv, int64_t nb,
                                    A* __restrict tmp) {
  if (dv == 16) return block_update_fixed<16>(acc, corr, w, rows, nb);
  if (dv == 32) return block_update_fixed<32>(acc, corr, w, rows, nb);
  for (int64_t c = 0; c < dv; ++c) tmp[c] = 0;
  for (int64_t j = 0; j < nb; ++j) {
    const A wj = w[j];
    const A* __restrict row = rows + j * dv;
    for (int64_t c = 0; c < dv; ++c) tmp[c] += wj * row[c];
  }
  for (int64_t c = 0; c < dv; ++c) acc[c] = acc[c] * corr + tmp[c];
}

// Queries that go through the forward together: the score tile and the value update of a group
// load each key (column of kt) and each value row once for all G queries, with G independent
// accumulator chains per vector; 4 x 2 vectors of accumulators fit the 16 ymm registers of AVX2.
constexpr int kGroup = 4;

// Scores of the g <= kGroup queries [i, i + g) against keys [kb, kb + nb), mask included, into
// s[r * kBK + j]; the padding past nb gets -inf. The same sums in the same order as
// masked_scores, query by query.
template <class A>
RMT_ALWAYS_INLINE void masked_scores_group(A* __restrict s, const Problem<A>& p, int64_t i, int g,
                                           int64_t kb, int64_t nb) {
  using V = VecT<A>;
  constexpr int W = Simd<A>::W, G = kGroup;
  const int64_t nbv = whole_vectors<A>(nb), d = p.d;
  const A* q[G];
  for (int r = 0; r < G; ++r) q[r] = p.q + (i + std::min(r, g - 1)) * d;  // short group: repeat
  const A* kt = p.kt + kb;
  int64_t j = 0;
  for (; j + 2 * W <= nbv; j += 2 * W) {
    V a0[G] = {}, a1[G] = {};
    for (int64_t c = 0; c < d; ++c) {
      const V k0 = vload(kt + c * p.ldk + j), k1 = vload(kt + c * p.ldk + j + W);
      for (int r = 0; r < G; ++r) {
        const V qc = vbcast(q[r][c]);
        a0[r] += qc * k0;
        a1[r] += qc * k1;
      }
    }
    for (int r = 0; r < G; ++r) {  // constant indices keep a0 and a1 in registers
      if (r < g) {
        vstore(s + r * kBK + j, a0[r]);
        vstore(s + r * kBK + j + W, a1[r]);
      }
    }
  }
  for (; j < nbv; j += W) {
    V a0[G] = {};
    for (int64_t c = 0; c < d; ++c) {
      const V k0 = vload(kt + c * p.ldk + j);
      for (int r = 0; r < G; ++r) a0[r] += vbcast(q[r][c]) * k0;
    }
    for (int r = 0; r < G; ++r) {
      if (r < g) vstore(s + r * kBK + j, a0[r]);
    }
  }
  for (int r = 0; r < g; ++r) add_mask(s + r * kBK, p, i + r, kb, nb);
}

// acc[r * dv + c] = acc[r * dv + c] * corr[r] + sum_j w[r * kBK + j] * rows[j * dv + c] for the
// g <= kGroup queries of a group, dv a multiple of the vector width: block_update for G queries at
// once, two vectors of channels at a time.
template <class A>
RMT_ALWAYS_INLINE void block_update_group(A* __restrict acc, const A* __restrict corr,
                                          const A* __restrict w, const A* __restrict rows,
                                          int64_t dv, int64_t nb, int g) {
  using V = VecT<A>;
  constexpr int W = Simd<A>::W, G = kGroup;
  int64_t c = 0;
  for (; c + 2 * W <= dv; c += 2 * W) {
    V a0[G] = {}, a1[G] = {};
    for (int64_t j = 0; j < nb; ++j) {
      const V v0 = vload(rows + j * dv + c), v1 = vload(rows + j * dv + c + W);
      for (int r = 0; r < G; ++r) {
        const V wr = vbcast(w[r * kBK + j]);
        a0[r] += wr * v0;
        a1[r] += wr * v1;
      }
    }
    for (int r = 0; r < G; ++r) {
      if (r >= g) continue;
      A* out = acc + r * dv + c;
      const V vc = vbcast(corr[r]);
      vstore(out, vload(out) * vc + a0[r]);
      vstore(out + W, vload(out + W) * vc + a1[r]);
    }
  }
  for (; c < dv; c += W) {
    V a0[G] = {};
    for (int64_t j = 0; j < nb; ++j) {
      const V v0 = vload(rows + j * dv + c);
      for (int r = 0; r < G; ++r) a0[r] += vbcast(w[r * kBK + j]) * v0;
    }
    for (int r = 0; r < G; ++r) {
      if (r >= g) continue;
      A* out = acc + r * dv + c;
      vstore(out, vload(out) * vbcast(corr[r]) + a0[r]);
    }
  }
}

template <class A>
RMT_ALWAYS_INLINE void forward_impl(const Problem<A>& p, int64_t i0, int64_t i1, A* o, A* lse,
                                    A* work) {
  constexpr int G = kGroup;
  const int64_t dv = p.dv;
  // Values in whole vectors go a group of queries at a time; other widths query by query.
  const bool grouped = dv % Simd<A>::W == 0;
  A* s = work;  // G score rows of kBK
  A* acc = s + G * kBK;
  A* mrow = acc + kBQ * dv;
  A* lrow = mrow + kBQ;
  A* corr = lrow + kBQ;
  A* tmp = corr + kBQ;
  for (int64_t ib = i0; ib < i1; ib += kBQ) {
    const int64_t mq = std::min(kBQ, i1 - ib);
    for (int64_t r = 0; r < mq; ++r) {
      mrow[r] = -std::numeric_limits<A>::infinity();
      lrow[r] = 0;
    }
    std::fill(acc, acc + mq * dv, A(0));
    // Online softmax over key blocks: a block's keys stay in cache for all kBQ queries.
    for (int64_t kb = 0; kb < p.n; kb += kBK) {
      const int64_t nb = std::min(kBK, p.n - kb);
      const int64_t nbv = whole_vectors<A>(nb);
      const int64_t step = grouped ? G : 1;
      for (int64_t r0 = 0; r0 < mq; r0 += step) {
        const int g = static_cast<int>(std::min<int64_t>(step, mq - r0));
        if (grouped) {
          masked_scores_group(s, p, ib + r0, g, kb, nb);
        } else {
          masked_scores(s, p, ib + r0, kb, nb);
        }
        for (int u = 0; u < g; ++u) {
          const int64_t r = r0 + u;
          A* sr = s + u * kBK;
          const A bm = max_of(sr, nbv);
          const A mnew = bm > mrow[r] ? bm : mrow[r];
          // 0 for the first block (mrow = -inf): no libm call for rows of one block.
          corr[u] = mrow[r] == -std::numeric_limits<A>::infinity() ? A(0)
                                                                  : std::exp(mrow[r] - mnew);
          lrow[r] = lrow[r] * corr[u] + exp_and_sum(sr, mnew, nbv);
          mrow[r] = mnew;
        }
        if (grouped) {
          block_update_group(acc + r0 * dv, corr, s, p.v + kb * dv, dv, nb, g);
        } else {
          block_update(acc + r0 * dv, corr[0], s, p.v + kb * dv, dv, nb, tmp);
        }
      }
    }
    for (int64_t r = 0; r < mq; ++r) {
      const A* a = acc + r * dv;
      A* out = o + (ib - i0 + r) * dv;
      for (int64_t c = 0; c < dv; ++c) out[c] = a[c] / lrow[r];
      if (lse) lse[ib - i0 + r] = mrow[r] + std::log(lrow[r]);
    }
  }
}

template <class A>
RMT_ALWAYS_INLINE void dq_impl(const Problem<A>& p, int64_t i0, int64_t i1, const A* dO,
                               const A* lse, const A* D, A* dq, A* work) {
  const int64_t d = p.d, dv = p.dv;
  A* s = work;
  A* dp = s + kBK;
  A* g = dp + kBK;
  A* tmp = g + d;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t r = i - i0;
    std::fill(g, g + d, A(0));
    const A li = lse[r], Di = D[r];
    for (int64_t kb = 0; kb < p.n; kb += kBK) {
      const int64_t nb = std::min(kBK, p.n - kb);
      const int64_t nbv = whole_vectors<A>(nb);
      masked_scores(s, p, i, kb, nb);
      dot_columns(dp, dO + r * dv, p.vt + kb, p.ldvt, dv, nbv);
      softmax_grad(s, dp, li, Di, nbv);  // s <- dS
      block_update(g, A(1), s, p.k + kb * d, d, nb, tmp);
    }
    std::copy(g, g + d, dq + r * d);
  }
}

template <class A>
RMT_ALWAYS_INLINE void dkv_impl(const Problem<A>& p, int64_t j0, int64_t j1, const A* dO,
                                const A* lse, const A* D, A* dk, A* dv, A* work) {
  using V = VecT<A>;
  constexpr int W = Simd<A>::W;
  constexpr int G = 4;  // queries per rank-G update of the key block's accumulators
  const int64_t d = p.d, dvn = p.dv;
  A* prob = work;          // G x kBK: P of each query of the group
  A* grad = prob + G * kBK;  // G x kBK: dS
  // Transposed (d x kBK, dv x kBK) so that updates run across keys. Partial sums over chunks of
  // kBK queries join the totals chunk by chunk (the rounding argument of block_update).
  const int64_t tk = (d + dvn) * kBK;
  A* total = grad + G * kBK;
  A* part = total + tk;
  A* gk = part;
  A* gv = part + d * kBK;
  for (int64_t kb = j0; kb < j1; kb += kBK) {
    const int64_t nb = std::min(kBK, j1 - kb), nbv = whole_vectors<A>(nb);
    std::fill(total, total + tk, A(0));
    std::fill(part, part + tk, A(0));
    for (int64_t i0 = 0; i0 < p.m; i0 += G) {
      if (i0 > 0 && i0 % kBK == 0) {
        for (int64_t e = 0; e < tk; ++e) total[e] += part[e];
        std::fill(part, part + tk, A(0));
      }
      const int64_t g = std::min<int64_t>(G, p.m - i0);
      for (int64_t r = 0; r < G; ++r) {
        A* pr = prob + r * kBK;
        A* gr = grad + r * kBK;
        if (r >= g) {  // a short last group: zero weights
          std::fill(pr, pr + nbv, A(0));
          std::fill(gr, gr + nbv, A(0));
          continue;
        }
        const int64_t i = i0 + r;
        masked_scores(pr, p, i, kb, nb);
        dot_columns(gr, dO + i * dvn, p.vt + kb, p.ldvt, dvn, nbv);
        exp_and_sum(pr, lse[i], nbv);  // P
        const V vD = vbcast(D[i]);
        for (int64_t j = 0; j < nbv; j += W)
          vstore(gr + j, vload(pr + j) * (vload(gr + j) - vD));  // dS
      }
      // One load and one store of each accumulator row per G queries.
      auto rank_g = [&](A* rows, const A* w, int64_t len, const A* x, int64_t ldx) {
        for (int64_t c = 0; c < len; ++c) {
          V xs[G];
          for (int r = 0; r < G; ++r) xs[r] = vbcast(r < g ? x[(i0 + r) * ldx + c] : A(0));
          A* row = rows + c * kBK;
          for (int64_t j = 0; j < nbv; j += W) {
            V acc = vload(row + j);
            for (int r = 0; r < G; ++r) acc += xs[r] * vload(w + r * kBK + j);
            vstore(row + j, acc);
          }
        }
      };
      rank_g(gv, prob, dvn, dO, dvn);
      rank_g(gk, grad, d, p.q, d);
    }
    for (int64_t e = 0; e < tk; ++e) total[e] += part[e];
    for (int64_t j = 0; j < nb; ++j) {
      for (int64_t c = 0; c < d; ++c) dk[(kb - j0 + j) * d + c] = total[c * kBK + j];
      for (int64_t c = 0; c < dvn; ++c) dv[(kb - j0 + j) * dvn + c] = total[(d + c) * kBK + j];
    }
  }
}

// One compiled copy of each kernel per ISA variant.
#define RMT_DEFINE_VARIANT(SUFFIX, ATTR)                                                          \
  template <class A>                                                                              \
  ATTR RMT_FLATTEN void forward_##SUFFIX(const Problem<A>& p, int64_t i0, int64_t i1, A* o,       \
                                         A* lse, A* work) {                                       \
    forward_impl(p, i0, i1, o, lse, work);                                                        \
  }                                                                                               \
  template <class A>                                                                              \
  ATTR RMT_FLATTEN void dq_##SUFFIX(const Problem<A>& p, int64_t i0, int64_t i1, const A* dO,     \
                                    const A* lse, const A* D, A* dq, A* work) {                   \
    dq_impl(p, i0, i1, dO, lse, D, dq, work);                                                     \
  }                                                                                               \
  template <class A>                                                                              \
  ATTR RMT_FLATTEN void dkv_##SUFFIX(const Problem<A>& p, int64_t j0, int64_t j1, const A* dO,    \
                                     const A* lse, const A* D, A* dk, A* dv, A* work) {           \
    dkv_impl(p, j0, j1, dO, lse, D, dk, dv, work);                                                \
  }

RMT_DEFINE_ISA_VARIANTS(RMT_DEFINE_VARIANT)
#undef RMT_DEFINE_VARIANT

}  // namespace

int64_t workspace_size(int64_t d, int64_t dv) {
  const int64_t fwd = kGroup * kBK + kBQ * (dv + 3) + dv;
  const int64_t dq = 2 * kBK + 2 * d;
  const int64_t dkv = 8 * kBK + 2 * (d + dv) * kBK;
  return std::max({fwd, dq, dkv});
}

template <class A>
void attend_forward(const Problem<A>& p, int64_t i0, int64_t i1, A* o, A* lse, A* work) {
  RMT_CALL_ISA_VARIANT(forward, p, i0, i1, o, lse, work);
}

template <class A>
void attend_backward_dq(const Problem<A>& p, int64_t i0, int64_t i1, const A* dO, const A* lse,
                        const A* D, A* dq, A* work) {
  RMT_CALL_ISA_VARIANT(dq, p, i0, i1, dO, lse, D, dq, work);
}

template <class A>
void attend_backward_dkv(const Problem<A>& p, int64_t j0, int64_t j1, const A* dO, const A* lse,
                         const A* D, A* dk, A* dv, A* work) {
  RMT_CALL_ISA_VARIANT(dkv, p, j0, j1, dO, lse, D, dk, dv, work);
}

template void attend_forward<float>(const Problem<float>&, int64_t, int64_t, float*, float*,
                                    float*);
template void attend_forward<double>(const Problem<double>&, int64_t, int64_t, double*, double*,
                                     double*);
template void attend_backward_dq<float>(const Problem<float>&, int64_t, int64_t, const float*,
                                        const float*, const float*, float*, float*);
template void attend_backward_dq<double>(const Problem<double>&, int64_t, int64_t, const double*,
                                         const double*, const double*, double*, double*);
template void attend_backward_dkv<float>(const Problem<float>&, int64_t, int64_t, const float*,
                                         const float*, const float*, float*, float*, float*);
template void attend_backward_dkv<double>(const Problem<double>&, int64_t, int64_t, const double*,
                                          const double*, const double*, double*, double*, double*);

}  // namespace rmt::ops::cpu

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

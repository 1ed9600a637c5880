// The float forward with the queries across the lanes (see attend_lanes.h).
//
// Per block of W queries, three sweeps over the keys, each with independent vector chains:
//   1. scores: kKeysPerStep keys at a time, a query channel vector times a broadcast key channel;
//      the mask added, the running maximum kept lane by lane, the score vector stored (n x W);
//   2. exponentials of the scores less the maximum, and their sum, lane by lane;
//   3. outputs: W (or fewer) channels at a time, a weight vector times a broadcast value channel.
// The same file options as attend.cpp (no-trapping-math, fp-contract=fast), for this file's own
// functions only.

#include "ops/masa/cpu/attend_lanes.h"

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
struct Lanes;
template <>
struct Lanes<4> {
  typedef float V __attribute__((vector_size(16)));
  typedef int32_t I __attribute__((vector_size(16)));
};
template <>
struct Lanes<8> {
  typedef float V __attribute__((vector_size(32)));
  typedef int32_t I __attribute__((vector_size(32)));
};
template <>
struct Lanes<16> {
  typedef float V __attribute__((vector_size(64)));
  typedef int32_t I __attribute__((vector_size(64)));
};
template <int W>
using LV = typename Lanes<W>::V;

template <int W>
RMT_ALWAYS_INLINE LV<W> load(const float* p) {
  LV<W> v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
template <int W>
RMT_ALWAYS_INLINE void store(float* p, const LV<W>& v) {
  __builtin_memcpy(p, &v, sizeof v);
}
template <int W>  // one broadcast instruction (see vbcast in cpu_simd.h)
RMT_ALWAYS_INLINE LV<W> bcast(float x) {
  LV<W> v{};
  __builtin_memcpy(&v, &x, sizeof x);
  return __builtin_shuffle(v, typename Lanes<W>::I{});
}

// Keys per step of the score sweep: one chain of d dependent FMAs per key, so that several keys
// hide the FMA latency.
constexpr int kKeysPerStep = 8;

// Sweep 1 for queries [i0, i0 + W): S[j * W + lane] = q . k_j + decay * |i - j|; returns the
// maximum over j, lane by lane. D > 0: d fixed at compile time.
template <int W, int D>
RMT_ALWAYS_INLINE LV<W> masked_scores(const LaneProblem& p, int64_t i0, float* __restrict S) {
  using V = LV<W>;
  const int64_t d = D > 0 ? D : p.d, ldq = p.ldq, ks = p.k_stride;
  const float* __restrict qt = p.qt + i0;
  V xq;
  for (int u = 0; u < W; ++u) xq[u] = static_cast<float>(i0 + u);
  const V decay = bcast<W>(p.decay);
  V mx = bcast<W>(-std::numeric_limits<float>::infinity());
  auto keep = [&](V s, int64_t j) {
    const V x = xq - static_cast<float>(j);
    s += decay * (x < 0 ? -x : x);
    mx = s > mx ? s : mx;
    store<W>(S + j * W, s);
  };
  constexpr int J = kKeysPerStep;
  int64_t j = 0;
  for (; j + J <= p.n; j += J) {
    const float* __restrict kj = p.k + j * ks;
    V acc[J] = {};
    for (int64_t c = 0; c < d; ++c) {
      const V qc = load<W>(qt + c * ldq);
      for (int u = 0; u < J; ++u) acc[u] += qc * kj[u * ks + c];
    }
    for (int u = 0; u < J; ++u) keep(acc[u], j + u);
  }
  for (; j < p.n; ++j) {
    const float* __restrict kj = p.k + j * ks;
    V acc = {};
    for (int64_t c = 0; c < d; ++c) acc += load<W>(qt + c * ldq) * kj[c];
    keep(acc, j);
  }
  return mx;
}

// Sweep 2: S <- exp(S - mx) lane by lane; returns the sums.
template <int W>
RMT_ALWAYS_INLINE LV<W> exp_and_sum(float* __restrict S, int64_t n, const LV<W>& mx) {
  using V = LV<W>;
  V sum = {};
  for (int64_t j = 0; j < n; ++j) {
    const V e = vexp_nonpos_of<V, typename Lanes<W>::I>(load<W>(S + j * W) - mx);
    store<W>(S + j * W, e);
    sum += e;
  }
  return sum;
}

// Sweep 3 for channels [c0, c0 + CB): ot[c * ldq + i] = sum_j S[j][i] v_j[c] / sum[i].
template <int W, int CB>
RMT_ALWAYS_INLINE void weighted_values(const LaneProblem& p, const float* __restrict S,
                                       const LV<W>& sum, int64_t c0, float* __restrict ot) {
  using V = LV<W>;
  V acc[CB] = {};
  for (int64_t j = 0; j < p.n; ++j) {
    const V w = load<W>(S + j * W);
    const float* __restrict vj = p.v + j * p.v_stride + c0;
    for (int cc = 0; cc < CB; ++cc) acc[cc] += w * vj[cc];
  }
  for (int cc = 0; cc < CB; ++cc) store<W>(ot + (c0 + cc) * p.ldq, acc[cc] / sum);
}

template <int W, int D>
RMT_ALWAYS_INLINE void forward_impl(const LaneProblem& p, float* ot, float* work) {
  for (int64_t i0 = 0; i0 < p.m; i0 += W) {
    const LV<W> mx = masked_scores<W, D>(p, i0, work);
    const LV<W> sum = exp_and_sum<W>(work, p.n, mx);
    float* o = ot + i0;
    int64_t c = 0;
    for (; c + W <= p.dv; c += W) weighted_values<W, W>(p, work, sum, c, o);
    for (; c + 4 <= p.dv; c += 4) weighted_values<W, 4>(p, work, sum, c, o);
    for (; c < p.dv; ++c) weighted_values<W, 1>(p, work, sum, c, o);
  }
}

// RMT's head dims are 16 and 32; other d run the same code with d read at run time.
template <int W>
RMT_ALWAYS_INLINE void forward_any_d(const LaneProblem& p, float* ot, float* work) {
  if (p.d == 16) return forward_impl<W, 16>(p, ot, work);
  if (p.d == 32) return forward_impl<W, 32>(p, ot, work);
  forward_impl<W, 0>(p, ot, work);
}

RMT_FLATTEN void forward_base(const LaneProblem& p, float* ot, float* work) {
  forward_any_d<4>(p, ot, work);
}
#if RMT_HAVE_AVX2_VARIANT
RMT_TARGET_AVX2 RMT_FLATTEN void forward_avx2(const LaneProblem& p, float* ot, float* work) {
  forward_any_d<8>(p, ot, work);
}
RMT_TARGET_AVX512 RMT_FLATTEN void forward_avx512(const LaneProblem& p, float* ot, float* work) {
  forward_any_d<16>(p, ot, work);
}
#endif

}  // namespace

int64_t lanes_workspace_size(int64_t n) { return n * kQueryLanes; }

void attend_forward_lanes(const LaneProblem& p, float* ot, float* work) {
#if RMT_HAVE_AVX2_VARIANT
  if (use_avx512()) return forward_avx512(p, ot, work);
  if (use_avx2()) return forward_avx2(p, ot, work);
#endif
  forward_base(p, ot, work);
}

}  // namespace rmt::ops::cpu

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

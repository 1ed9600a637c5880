// CPU kernel core of MaSA (see masa_cpu_kernels.h).
//
// Vectorization: the loops run across keys (score rows, transposed keys) or across channels, never
// as floating-point reductions the compiler may not reorder, so GCC vectorizes them at -O3 without
// -ffast-math. Two things still need options, applied to this file's own functions only (the
// pragma comes after every #include, so no inline function of another header is compiled
// differently here and the ODR holds):
//   - no-trapping-math: lets the clamp in exp() become a vector max instead of a branch;
//   - fp-contract=fast: a*b+c may become an FMA (one rounding less than the reference chain,
//     far inside the parity tolerances).
// Each entry point is compiled twice, for the baseline ISA and for AVX2+FMA (GCC `target` +
// `flatten`, so the whole kernel is inlined into, and compiled for, each variant), and the
// variant is chosen once at run time from cpuid.

#include "ops/masa_cpu_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math", "fp-contract=fast")
#endif

#if defined(__GNUC__)
#define RMT_ALWAYS_INLINE inline __attribute__((always_inline))
#define RMT_FLATTEN __attribute__((flatten))
#else
#define RMT_ALWAYS_INLINE inline
#define RMT_FLATTEN
#endif

#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
#define RMT_HAVE_AVX2_VARIANT 1
#define RMT_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define RMT_HAVE_AVX2_VARIANT 0
#endif

namespace rmt::ops::cpu {
namespace {

constexpr int64_t kBQ = 16;   // queries sharing one key block while it sits in L1
constexpr int64_t kBK = 128;  // keys per block: one score row of kBK values per query

// exp(x) for x <= 0 (the only arguments softmax needs once the row maximum is subtracted),
// branch-free so that a loop over it vectorizes: Cody-Waite reduction x = n ln2 + r with
// |r| <= ln2/2, a Taylor polynomial for e^r (truncation error below one ulp), and 2^n built in the
// exponent bits. Arguments below the clamp give e^clamp (~1e-38 / 1e-308), which is zero next to
// the row maximum's term of 1. NaN propagates.
RMT_ALWAYS_INLINE float exp_nonpos(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float shift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float t = x * 1.44269504088896341f + shift;
  const float n = t - shift;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.98412698e-4f;
  p = p * r + 1.38888889e-3f;
  p = p * r + 8.33333333e-3f;
  p = p * r + 4.16666667e-2f;
  p = p * r + 1.66666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  uint32_t bits;
  std::memcpy(&bits, &t, sizeof bits);
  bits = (bits << 23) + (127u << 23);  // the low bits of t hold n
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

RMT_ALWAYS_INLINE double exp_nonpos(double x) {
  x = x < -708.0 ? -708.0 : x;
  const double shift = 6755399441055744.0;  // 1.5 * 2^52
  const double t = x * 1.4426950408889634 + shift;
  const double n = t - shift;
  double r = x - n * 6.93147180369123816490e-01;
  r = r - n * 1.90821492927058770002e-10;
  double p = 1.6059043836821613e-10;
  p = p * r + 2.08767569878681e-09;
  p = p * r + 2.505210838544172e-08;
  p = p * r + 2.755731922398589e-07;
  p = p * r + 2.7557319223985893e-06;
  p = p * r + 2.48015873015873e-05;
  p = p * r + 0.0001984126984126984;
  p = p * r + 0.001388888888888889;
  p = p * r + 0.008333333333333333;
  p = p * r + 0.041666666666666664;
  p = p * r + 0.16666666666666666;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  uint64_t bits;
  std::memcpy(&bits, &t, sizeof bits);
  bits = (bits << 52) + (uint64_t{1023} << 52);
  double scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// Independent partial results per lane keep max/sum reductions vectorizable (fixed order, so
// the result is deterministic).
template <class A>
constexpr int kLanes = static_cast<int>(64 / sizeof(A));

// out[j] = sum_c x[c] * mt[c * ld + j] for j < nb: a row of dot products against the columns of a
// transposed matrix, accumulated in registers over chunks of keys.
template <class A>
RMT_ALWAYS_INLINE void dot_columns(A* __restrict out, const A* __restrict x, const A* __restrict mt,
                                   int64_t ld, int64_t len, int64_t nb) {
  constexpr int J = 2 * kLanes<A>;
  int64_t j = 0;
  for (; j + J <= nb; j += J) {
    A acc[J] = {};
    for (int64_t c = 0; c < len; ++c) {
      const A xc = x[c];
      const A* __restrict row = mt + c * ld + j;
      for (int u = 0; u < J; ++u) acc[u] += xc * row[u];
    }
    for (int u = 0; u < J; ++u) out[j + u] = acc[u];
  }
  for (; j < nb; ++j) {
    A acc = 0;
    for (int64_t c = 0; c < len; ++c) acc += x[c] * mt[c * ld + j];
    out[j] = acc;
  }
}

// Scores of query i against keys [kb, kb + nb) of the problem, mask included.
template <class A>
RMT_ALWAYS_INLINE void masked_scores(A* __restrict s, const Problem<A>& p, int64_t i, int64_t kb,
                                     int64_t nb) {
  dot_columns(s, p.q + i * p.d, p.kt + kb, p.ldk, p.d, nb);
  const A qy = p.qy[i], qx = p.qx[i], decay = p.decay;
  const A* __restrict ky = p.ky + kb;
  const A* __restrict kx = p.kx + kb;
  for (int64_t j = 0; j < nb; ++j) s[j] += decay * (std::fabs(qy - ky[j]) + std::fabs(qx - kx[j]));
}

template <class A>
RMT_ALWAYS_INLINE A max_of(const A* __restrict s, int64_t nb) {
  constexpr int N = kLanes<A>;
  A part[N];
  for (int u = 0; u < N; ++u) part[u] = -std::numeric_limits<A>::infinity();
  int64_t j = 0;
  for (; j + N <= nb; j += N)
    for (int u = 0; u < N; ++u) part[u] = s[j + u] > part[u] ? s[j + u] : part[u];
  A m = -std::numeric_limits<A>::infinity();
  for (int u = 0; u < N; ++u) m = part[u] > m ? part[u] : m;
  for (; j < nb; ++j) m = s[j] > m ? s[j] : m;
  return m;
}

// s[j] <- exp(s[j] - shift); returns the sum.
template <class A>
RMT_ALWAYS_INLINE A exp_and_sum(A* __restrict s, A shift, int64_t nb) {
  constexpr int N = kLanes<A>;
  A part[N] = {};
  int64_t j = 0;
  for (; j + N <= nb; j += N)
    for (int u = 0; u < N; ++u) {
      const A e = exp_nonpos(s[j + u] - shift);
      s[j + u] = e;
      part[u] += e;
    }
  A sum = 0;
  for (int u = 0; u < N; ++u) sum += part[u];
  for (; j < nb; ++j) {
    s[j] = exp_nonpos(s[j] - shift);
    sum += s[j];
  }
  return sum;
}

// acc[c] += sum_j w[j] * rows[j * dv + c]. Fixed widths keep the accumulator in registers.
template <int DV, class A>
RMT_ALWAYS_INLINE void axpy_rows_fixed(A* __restrict acc, const A* __restrict w,
                                       const A* __restrict rows, int64_t nb) {
  A r[DV];
  for (int c = 0; c < DV; ++c) r[c] = acc[c];
  for (int64_t j = 0; j < nb; ++j) {
    const A wj = w[j];
    const A* __restrict row = rows + j * DV;
    for (int c = 0; c < DV; ++c) r[c] += wj * row[c];
  }
  for (int c = 0; c < DV; ++c) acc[c] = r[c];
}

template <class A>
RMT_ALWAYS_INLINE void axpy_rows(A* __restrict acc, const A* __restrict w, const A* __restrict rows,
                                 int64_t dv, int64_t nb) {
  if (dv == 16) return axpy_rows_fixed<16>(acc, w, rows, nb);
  if (dv == 32) return axpy_rows_fixed<32>(acc, w, rows, nb);
  for (int64_t j = 0; j < nb; ++j) {
    const A wj = w[j];
    const A* __restrict row = rows + j * dv;
    for (int64_t c = 0; c < dv; ++c) acc[c] += wj * row[c];
  }
}

template <class A>
RMT_ALWAYS_INLINE void forward_impl(const Problem<A>& p, int64_t i0, int64_t i1, A* o, A* lse,
                                    A* work) {
  const int64_t dv = p.dv;
  A* s = work;
  A* acc = s + kBK;
  A* mrow = acc + kBQ * dv;
  A* lrow = mrow + kBQ;
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
      for (int64_t r = 0; r < mq; ++r) {
        masked_scores(s, p, ib + r, kb, nb);
        const A bm = max_of(s, nb);
        const A mnew = bm > mrow[r] ? bm : mrow[r];
        const A corr = std::exp(mrow[r] - mnew);  // 0 for the first block (mrow = -inf)
        const A sum = exp_and_sum(s, mnew, nb);
        lrow[r] = lrow[r] * corr + sum;
        A* a = acc + r * dv;
        if (corr != A(1))
          for (int64_t c = 0; c < dv; ++c) a[c] *= corr;
        axpy_rows(a, s, p.v + kb * dv, dv, nb);
        mrow[r] = mnew;
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
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t r = i - i0;
    std::fill(g, g + d, A(0));
    const A li = lse[r], Di = D[r];
    for (int64_t kb = 0; kb < p.n; kb += kBK) {
      const int64_t nb = std::min(kBK, p.n - kb);
      masked_scores(s, p, i, kb, nb);
      dot_columns(dp, dO + r * dv, p.vt + kb, p.ldvt, dv, nb);
      for (int64_t j = 0; j < nb; ++j) s[j] = exp_nonpos(s[j] - li) * (dp[j] - Di);  // dS
      axpy_rows(g, s, p.k + kb * d, d, nb);
    }
    std::copy(g, g + d, dq + r * d);
  }
}

template <class A>
RMT_ALWAYS_INLINE void dkv_impl(const Problem<A>& p, int64_t j0, int64_t j1, const A* dO,
                                const A* lse, const A* D, A* dk, A* dv, A* work) {
  const int64_t d = p.d, dvn = p.dv;
  A* s = work;
  A* dp = s + kBK;
  A* gk = dp + kBK;       // d x kBK, transposed so that updates run across keys
  A* gv = gk + d * kBK;   // dv x kBK
  for (int64_t kb = j0; kb < j1; kb += kBK) {
    const int64_t nb = std::min(kBK, j1 - kb);
    std::fill(gk, gk + d * kBK, A(0));
    std::fill(gv, gv + dvn * kBK, A(0));
    for (int64_t i = 0; i < p.m; ++i) {
      masked_scores(s, p, i, kb, nb);
      const A* doi = dO + i * dvn;
      dot_columns(dp, doi, p.vt + kb, p.ldvt, dvn, nb);
      const A li = lse[i], Di = D[i];
      for (int64_t j = 0; j < nb; ++j) {
        const A pj = exp_nonpos(s[j] - li);
        s[j] = pj;
        dp[j] = pj * (dp[j] - Di);  // dS
      }
      for (int64_t c = 0; c < dvn; ++c) {
        const A oc = doi[c];
        A* __restrict row = gv + c * kBK;
        for (int64_t j = 0; j < nb; ++j) row[j] += oc * s[j];
      }
      const A* qi = p.q + i * d;
      for (int64_t c = 0; c < d; ++c) {
        const A qc = qi[c];
        A* __restrict row = gk + c * kBK;
        for (int64_t j = 0; j < nb; ++j) row[j] += qc * dp[j];
      }
    }
    for (int64_t j = 0; j < nb; ++j) {
      for (int64_t c = 0; c < d; ++c) dk[(kb - j0 + j) * d + c] = gk[c * kBK + j];
      for (int64_t c = 0; c < dvn; ++c) dv[(kb - j0 + j) * dvn + c] = gv[c * kBK + j];
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

RMT_DEFINE_VARIANT(base, )
#if RMT_HAVE_AVX2_VARIANT
RMT_DEFINE_VARIANT(avx2, RMT_TARGET_AVX2)
#endif
#undef RMT_DEFINE_VARIANT

bool use_avx2() {
#if RMT_HAVE_AVX2_VARIANT
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
#else
  return false;
#endif
}

}  // namespace

int64_t workspace_size(int64_t d, int64_t dv) {
  const int64_t fwd = kBK + kBQ * (dv + 2);
  const int64_t dq = 2 * kBK + d;
  const int64_t dkv = 2 * kBK + (d + dv) * kBK;
  return std::max({fwd, dq, dkv});
}

template <class A>
void attend_forward(const Problem<A>& p, int64_t i0, int64_t i1, A* o, A* lse, A* work) {
#if RMT_HAVE_AVX2_VARIANT
  if (use_avx2()) return forward_avx2(p, i0, i1, o, lse, work);
#endif
  forward_base(p, i0, i1, o, lse, work);
}

template <class A>
void attend_backward_dq(const Problem<A>& p, int64_t i0, int64_t i1, const A* dO, const A* lse,
                        const A* D, A* dq, A* work) {
#if RMT_HAVE_AVX2_VARIANT
  if (use_avx2()) return dq_avx2(p, i0, i1, dO, lse, D, dq, work);
#endif
  dq_base(p, i0, i1, dO, lse, D, dq, work);
}

template <class A>
void attend_backward_dkv(const Problem<A>& p, int64_t j0, int64_t j1, const A* dO, const A* lse,
                         const A* D, A* dk, A* dv, A* work) {
#if RMT_HAVE_AVX2_VARIANT
  if (use_avx2()) return dkv_avx2(p, j0, j1, dO, lse, D, dk, dv, work);
#endif
  dkv_base(p, j0, j1, dO, lse, D, dk, dv, work);
}

const char* isa_name() { return use_avx2() ? "avx2+fma" : "baseline"; }

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

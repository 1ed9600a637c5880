#pragma once
// Elementary functions for the CPU kernels, scalar and vector (cpu_simd.h), branch-free so that
// loops over them vectorize, with no dependence on -ffast-math or libm's vector entry points.
//
// Include it after `#pragma GCC optimize("no-trapping-math", "fp-contract=fast")` (as both kernel
// files do), and <cmath>, <cstdint>, <cstring> and cpu_simd.h before that pragma, so that only
// this header's functions take the options: its products may then contract to FMAs, identically
// in every unit that includes it.

#include <cmath>
#include <cstdint>
#include <cstring>

#include "ops/cpu/cpu_simd.h"

namespace rmt::ops::cpu {

// exp(x) for x <= 0 (the only arguments softmax needs once the row maximum is subtracted),
// branch-free so that a loop over it vectorizes: Cody-Waite reduction x = n ln2 + r with
// |r| <= ln2/2, a Taylor polynomial for e^r (truncation error below one ulp), and 2^n built in the
// exponent bits. Float arguments below -64 give 0; double arguments below the clamp give e^-708
// (~1e-308); both are nothing next to the row maximum's term of 1. NaN propagates.
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
  return x <= -64.0f ? 0.0f : p * scale;  // as the vector form
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

// The vector form of exp_nonpos (same steps, same constants), for a float vector type V of any
// width and the int32 vector type I of the same width (the kernels that put queries across the
// lanes use 64-byte vectors with AVX-512).
template <class V, class I>
RMT_ALWAYS_INLINE V vexp_nonpos_of(const V& arg) {
  const V lo = V{} + -87.0f, shift = V{} + 12582912.0f;  // broadcasts (no -0 involved)
  const V x = arg < lo ? lo : arg;
  const V t = x * 1.44269504088896341f + shift;
  const V n = t - shift;
  V r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  V p = V{} + 1.98412698e-4f;
  p = p * r + 1.38888889e-3f;
  p = p * r + 8.33333333e-3f;
  p = p * r + 4.16666667e-2f;
  p = p * r + 1.66666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const I bits = ((I)t << 23) + (127 << 23);  // vector casts are bit casts
  // Below e^-64 (1.6e-28, nothing next to the row maximum's term of 1): exactly 0, so that the
  // weighted sums that use it never form subnormal products, which cost a microcode assist each.
  return arg < -64.0f ? V{} : p * (V)bits;
}

// 2^(k / 16) for k = 0..15, rounded to float: vexp2_table_nonpos_of's table on 16 lanes; its even
// entries, 2^(k / 8), the table on 8 lanes.
inline constexpr float kExp2Sixteenths[16] = {
    1.000000000e+00f, 1.044273734e+00f, 1.090507746e+00f, 1.138788581e+00f, 1.189207077e+00f,
    1.241857767e+00f, 1.296839595e+00f, 1.354255557e+00f, 1.414213538e+00f, 1.476826191e+00f,
    1.542210817e+00f, 1.610490322e+00f, 1.681792855e+00f, 1.756252170e+00f, 1.834008098e+00f,
    1.915206552e+00f,
};
inline constexpr float kExp2Eighths[8] = {
    kExp2Sixteenths[0], kExp2Sixteenths[2],  kExp2Sixteenths[4],  kExp2Sixteenths[6],
    kExp2Sixteenths[8], kExp2Sixteenths[10], kExp2Sixteenths[12], kExp2Sixteenths[14],
};

// 2^arg for arg <= 0 on float vectors of L = 16 lanes (AVX-512) or 8 (AVX2), vexp2_nonpos_of's
// form there: arg = n + k / L + r with |r| <= 1 / (2 L), 2^(k / L) picked from the table of L
// entries by a permutation and 2^r - 1 a degree-3 polynomial (our fits, scripts/fit_exp2.py 3
// 0.03125 and 3 0.0625: 1.6e-9 and 2.5e-8 exact), 2^n added to the exponent: 3 multiply-adds, a
// product and a permutation where the degree-6 form takes 6 multiply-adds, a product and a clamp
// (8 lanes on Zen 3: 0.34 -> 0.26 ns an element). Relative error about 1 ulp (the table entry's
// rounding, then the result's; 1.1e-7 on 8 lanes).
template <class V, class I>
RMT_ALWAYS_INLINE V vexp2_table_nonpos_of(const V& arg) {
  constexpr int L = sizeof(V) / sizeof(float);
  static_assert((L == 16 || L == 8) && sizeof(arg[0]) == sizeof(float), "16 or 8 float lanes");
  using U = VecN<uint32_t, sizeof(V)>;
  // 1.5 * 2^23 / L: t's last mantissa bit is worth 1 / L, so t's bits are those of the shift plus
  // j = round(L arg) (the shift's low 23 bits are multiples of L: j mod L = k in the low bits).
  const V shift = V{} + (L == 16 ? 786432.0f : 1572864.0f);
  const V t = arg + shift;
  const V r = arg - (t - shift);
  const I j = (I)t;
  const V entry = __builtin_shuffle(vload<float, V>(L == 16 ? kExp2Sixteenths : kExp2Eighths),
                                    j);  // lane j mod L
  const V q = L == 16 ? r * (r * (r * 5.550213158130646e-02f + 2.402342855930328e-01f) +
                             6.931471824645996e-01f)
                      : r * (r * (r * 5.549620836973190e-02f + 2.402575910091400e-01f) +
                             6.931472420692444e-01f);
  const V e = entry * q + entry;  // 2^(k / L + r), in [0.95, 2)
  // n << 23 = ((shift's bits + j) >> log2 L) << 23: the shift's part leaves the 32 bits.
  const I bits = (I)e + (I)(((U)j >> (L == 16 ? 4 : 3)) << 23);
  // Below 2^-92: exactly 0 (as vexp2_nonpos_of), which also covers -inf and every argument whose
  // exponent arithmetic above would leave the normal floats.
  return arg < -92.0f ? V{} : (V)bits;
}

// 2^arg for arg <= 0, float vectors (V, I as above): for scores already in base 2 (the caller folds
// log2(e) into them), so the reduction r = arg - round(arg) is exact and costs three additions
// instead of an FMA, a subtraction and two more FMAs; then a degree-6 polynomial of our own
// (scripts/fit_exp2.py: relative error 2e-9 exact, 7.9e-8 evaluated in float, as vexp_nonpos_of's).
// Four fewer multiply-adds a vector, where the attention kernels are bound by them. 16- and 8-lane
// float vectors take vexp2_table_nonpos_of instead (a table of sixteenths or eighths and a cubic);
// 4-lane ones have no variable permutation (SSE).
template <class V, class I>
RMT_ALWAYS_INLINE V vexp2_nonpos_of(const V& arg) {
  if constexpr ((sizeof(V) == 64 || sizeof(V) == 32) && sizeof(arg[0]) == sizeof(float)) {
    return vexp2_table_nonpos_of<V, I>(arg);
  }
  const V lo = V{} + -126.0f, shift = V{} + 12582912.0f;  // broadcasts (no -0 involved)
  const V x = arg < lo ? lo : arg;
  const V t = x + shift;  // round(x) in the low mantissa bits
  const V r = x - (t - shift);
  V p = V{} + 1.535330375190824e-04f;
  p = p * r + 1.339885056950152e-03f;
  p = p * r + 9.618436917662621e-03f;
  p = p * r + 5.550332367420197e-02f;
  p = p * r + 2.402264773845673e-01f;
  p = p * r + 6.931471824645996e-01f;
  p = p * r + 1.0f;
  const I bits = ((I)t << 23) + (127 << 23);  // vector casts are bit casts
  // Below 2^-92 (e^-64, as vexp_nonpos_of): exactly 0, no subnormal products downstream.
  return arg < -92.0f ? V{} : p * (V)bits;
}

RMT_ALWAYS_INLINE VecT<float> vexp_nonpos(const VecT<float>& arg) {
  return vexp_nonpos_of<VecT<float>, Simd<float>::I>(arg);
}

RMT_ALWAYS_INLINE VecT<double> vexp_nonpos(const VecT<double>& arg) {
  using V = VecT<double>;
  using I = Simd<double>::I;
  const V lo = vbcast(-708.0), shift = vbcast(6755399441055744.0);
  const V x = arg < lo ? lo : arg;
  const V t = x * 1.4426950408889634 + shift;
  const V n = t - shift;
  V r = x - n * 6.93147180369123816490e-01;
  r = r - n * 1.90821492927058770002e-10;
  V p = vbcast(1.6059043836821613e-10);
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
  const I bits = ((I)t << 52) + (int64_t{1023} << 52);
  return p * (V)bits;
}

// The GELU's erf part for float vectors (V of any width): x / 2 erf(x / sqrt 2) = s P(s) / Q(s)
// with s = x^2 / 2 = z^2 (z = x / sqrt 2; the term is even in x), P and Q of degree 5: the odd
// rational z P(s) / Q(s) for erf, its P divided by sqrt 2, the factor x / 2 folded into s. From
// |z| = 3.92 on (s > 15.3664) erf rounds to +-1 in float (erfc(3.92) < 2^-25) and the term is
// |x| / 2: GELU is then exactly x or exactly 0, not the fit's residue times x, and the rational,
// overflowing to inf or NaN far out, is never used there (a NaN compares false and stays a NaN).
// Coefficients: a minimax fit of our own (scripts/fit_erf.py) on [0, 4]; absolute error 2e-8 in
// exact arithmetic, below 3.5e-7 evaluated in float (Abramowitz & Stegun 7.1.26, LibTorch's
// vectorized erf, is 5.3e-7 in float). One division, not a reciprocal estimate and its Newton
// step: the divider is its own unit and the multiply-add pipes, the GELU's bound, are spared
// (18 operations a vector where the form x / 2 (1 + erf) took 24: 0.69 -> 0.56 ns an element on
// AVX2, Zen 3).
template <class V>
RMT_ALWAYS_INLINE V vgelu_erf_term_of(const V& half, const V& s) {
  constexpr float r = 0.70710678118654752f;  // 1 / sqrt 2, folded into P's coefficients
  V p = V{} + 1.974668748516706e-06f * r;
  p = p * s + 2.880150859709829e-04f * r;
  p = p * s + 4.003257490694523e-03f * r;
  p = p * s + 5.346631631255150e-02f * r;
  p = p * s + 1.962423771619797e-01f * r;
  p = p * s + 1.128378987312317f * r;
  V q = V{} + 3.747777009266429e-05f;
  q = q * s + 1.216230681166053e-03f;
  q = q * s + 1.544369384646416e-02f;
  q = q * s + 1.164734214544296e-01f;
  q = q * s + 5.072464346885681e-01f;
  q = q * s + 1.0f;
  using VI = VecN<int32_t, sizeof(V)>;
  const V abs_half = (V)((VI)half & 0x7fffffff);
  return s > 15.3664f ? abs_half : s * p / q;  // q >= 1
}

// erf(z) on [0, 4) in 16 intervals of 0.25, in each a degree-5 polynomial in the position t in
// [0, 1) inside it: row k holds the intervals' coefficients of t^k, so that a 16-lane vector
// picks each lane's by a permutation. Our own fit (scripts/fit_erf_table.py): absolute error 6e-9
// in exact arithmetic, 6.3e-8 evaluated in float (the rational's: 3.5e-7). From 4 on erf is 1 in
// float.
inline constexpr float kErfTable[6][16] = {
    {2.706493030e-09f, 2.763263881e-01f, 5.204998851e-01f, 7.111556530e-01f, 8.427007794e-01f,
     9.229001403e-01f, 9.661051631e-01f, 9.866716862e-01f, 9.953222871e-01f, 9.985373020e-01f,
     9.995930195e-01f, 9.998993874e-01f, 9.999778867e-01f, 9.999957085e-01f, 9.999992847e-01f,
     9.999998808e-01f},
    {2.820945978e-01f, 2.650031149e-01f, 2.196952850e-01f, 1.607326716e-01f, 1.037770063e-01f,
     5.913047120e-02f, 2.973269857e-02f, 1.319378614e-02f, 5.166731775e-03f, 1.785553177e-03f,
     5.445515271e-04f, 1.465592795e-04f, 3.480924352e-05f, 7.295942851e-06f, 1.349498802e-06f,
     2.202756519e-07f},
    {2.040869731e-06f, -1.655779593e-02f, -2.745772153e-02f, -3.013618477e-02f, -2.594566531e-02f,
     -1.848042570e-02f, -1.115120947e-02f, -5.772725679e-03f, -2.583212918e-03f, -1.004078309e-03f,
     -3.401261056e-04f, -1.006469902e-04f, -2.606181079e-05f, -5.913211680e-06f, -1.176796900e-06f,
     -2.055845982e-07f},
    {-5.885064602e-03f, -4.851608537e-03f, -2.306856448e-03f, 4.129595181e-04f, 2.167926403e-03f,
     2.627200214e-03f, 2.174523659e-03f, 1.410798752e-03f, 7.528539281e-04f, 3.381228598e-04f,
     1.294693357e-04f, 4.260814967e-05f, 1.211726430e-05f, 2.989290806e-06f, 6.415216376e-07f,
     1.200241257e-07f},
    {1.379568675e-05f, 5.355424946e-04f, 7.513970486e-04f, 6.007893244e-04f, 2.596661507e-04f,
     -4.229507249e-05f, -1.872148277e-04f, -1.923095406e-04f, -1.334998524e-04f, -7.199819811e-05f,
     -3.170435957e-05f, -1.167823666e-05f, -3.648565553e-06f, -9.754082839e-07f, -2.244853050e-07f,
     -4.466916792e-08f},
    {1.010114211e-04f, 4.424310464e-05f, -2.634906195e-05f, -6.507611397e-05f, -5.959373448e-05f,
     -2.993087946e-05f, -2.272587608e-06f, 1.104387047e-05f, 1.214547319e-05f, 8.165050531e-06f,
     4.139692010e-06f, 1.689223382e-06f, 5.715862699e-07f, 1.630675541e-07f, 3.963288364e-08f,
     8.264001039e-09f},
};

// The exact GELU, x / 2 (1 + erf(x / sqrt 2)), of a float vector. On 16 lanes as x / 2 +
// |x| / 2 erf(|x| / sqrt 2) with kErfTable: 6 permutations and 5 multiply-adds where the rational
// takes 13 multiply-adds and a division (the 16-lane pass was 1.5x faster than the rational's
// earlier form); narrower vectors have no 16-entry permutation and take the rational
// (vgelu_erf_term_of).
template <class V>
RMT_ALWAYS_INLINE V vgelu_of(const V& x) {
  if constexpr (sizeof(V) == 64 && sizeof(x[0]) == sizeof(float)) {
    using VI = VecN<int32_t, 64>;
    const V half = 0.5f * x;
    const V abs_half = (V)((VI)half & 0x7fffffff);
    V u = abs_half * 5.65685424949238f;  // 4 |x| / sqrt 2: the interval, then t
    u = u < 15.999999f ? u : V{} + 15.999999f;  // the largest float below 16; a NaN x stays NaN
    const VI interval = __builtin_convertvector(u, VI);
    const V t = u - __builtin_convertvector(interval, V);
    V p = __builtin_shuffle(vload<float, V>(kErfTable[5]), interval);
    for (int k = 4; k >= 0; --k) {
      p = p * t + __builtin_shuffle(vload<float, V>(kErfTable[k]), interval);
    }
    return abs_half * p + half;
  } else {
    const V half = 0.5f * x;
    return half + vgelu_erf_term_of(half, x * half);
  }
}

// out = GELU(in + bias) over n elements (bias may be null): vectors of Bytes bytes (the caller's
// variant's: 16, 32 or 64), then a scalar tail.
template <int Bytes>
RMT_ALWAYS_INLINE void gelu(const float* in, float* out, int64_t n,  // in == out allowed
                            const float* bias = nullptr) {
  using V = VecN<float, Bytes>;
  constexpr int W = Bytes / sizeof(float);
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    V x = vload<float, V>(in + i);
    if (bias) x += vload<float, V>(bias + i);
    vstore(out + i, vgelu_of(x));
  }
  for (; i < n; ++i) out[i] = vgelu_of(V{} + (bias ? in[i] + bias[i] : in[i]))[0];
}

// Double: libm's erf, element by element (double is for parity checks, not for speed). Bytes is
// unused: the kernels templated on their vector width call gelu<Bytes> for either type.
template <int Bytes>
inline void gelu(const double* __restrict in, double* __restrict out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = 0.5 * in[i] * (1.0 + std::erf(in[i] * 0.70710678118654752440));
}

}  // namespace rmt::ops::cpu

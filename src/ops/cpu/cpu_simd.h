#pragma once
// Portable SIMD for the CPU kernels (MaSA, depthwise conv): GCC vector extensions of 32 bytes
// (8 floats / 4 doubles). The AVX2 variant of a kernel maps each to one ymm register, the baseline
// build to two SSE registers; no intrinsics, so one source serves both. Kernels are compiled twice
// (baseline and `RMT_TARGET_AVX2`, each `RMT_FLATTEN` so these helpers inline into, and compile for,
// the variant) and pick one at run time with use_avx2(). The kernels written for a vector width
// (VecN: the MaSA float forward, the depthwise convolution) build a third, AVX-512 variant.
//
// The helpers only move, compare and add: no product that a translation unit's fp-contract setting
// could fuse, so they mean the same in every unit that includes them.

// 32-byte vector arguments of the always-inlined helpers: no ABI crosses a call boundary.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#include <cstdint>

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
// The kernels written for a lane count (RMT_DEFINE_LANE_VARIANTS below) also build a variant with
// 64-byte vectors and the 32 vector registers of AVX-512.
#define RMT_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma")))
#else
#define RMT_HAVE_AVX2_VARIANT 0
#endif

// RMT_DEFINE_ISA_VARIANTS(DEFINE) expands DEFINE(SUFFIX, ATTR) once per variant: (base, ) and,
// where the compiler builds it, (avx2, RMT_TARGET_AVX2); DEFINE declares NAME##_##SUFFIX
// functions with ATTR RMT_FLATTEN. RMT_CALL_ISA_VARIANT(NAME, args...) calls NAME##_avx2 or
// NAME##_base, as use_avx2() decided.
#if RMT_HAVE_AVX2_VARIANT
#define RMT_DEFINE_ISA_VARIANTS(DEFINE) DEFINE(base, ) DEFINE(avx2, RMT_TARGET_AVX2)
#define RMT_CALL_ISA_VARIANT(NAME, ...) \
  (::rmt::ops::cpu::use_avx2() ? NAME##_avx2(__VA_ARGS__) : NAME##_base(__VA_ARGS__))
#else
#define RMT_DEFINE_ISA_VARIANTS(DEFINE) DEFINE(base, )
#define RMT_CALL_ISA_VARIANT(NAME, ...) NAME##_base(__VA_ARGS__)
#endif

// Kernels written for a float lane count W (ops/masa/cpu/attend_lanes.cpp) build one variant per
// ISA, each with its own W: RMT_DEFINE_LANE_VARIANTS(DEFINE) expands DEFINE(SUFFIX, ATTR, W) as
// (base, , 4) and, where the compiler builds them, (avx2, RMT_TARGET_AVX2, 8) and
// (avx512, RMT_TARGET_AVX512, 16); RMT_CALL_LANE_VARIANT(NAME, args...) calls the widest that
// use_avx512() and use_avx2() allow.
#if RMT_HAVE_AVX2_VARIANT
#define RMT_DEFINE_LANE_VARIANTS(DEFINE) \
  DEFINE(base, , 4) DEFINE(avx2, RMT_TARGET_AVX2, 8) DEFINE(avx512, RMT_TARGET_AVX512, 16)
#define RMT_CALL_LANE_VARIANT(NAME, ...)                                       \
  (::rmt::ops::cpu::use_avx512() ? NAME##_avx512(__VA_ARGS__)                  \
   : ::rmt::ops::cpu::use_avx2() ? NAME##_avx2(__VA_ARGS__)                    \
                                 : NAME##_base(__VA_ARGS__))
#else
#define RMT_DEFINE_LANE_VARIANTS(DEFINE) DEFINE(base, , 4)
#define RMT_CALL_LANE_VARIANT(NAME, ...) NAME##_base(__VA_ARGS__)
#endif

namespace rmt::ops::cpu {

// True when the CPU has AVX2 and FMA, unless RMT_MASA_CPU_ISA=baseline forces the baseline
// variants (to test them on an AVX2 machine). Decided once.
bool use_avx2();

// True when the CPU has AVX-512F (and use_avx2()), unless RMT_MASA_CPU_ISA=avx2 or =baseline
// forces a narrower variant. Only the kernels that have an AVX-512 variant ask. Decided once.
bool use_avx512();

// The variants picked ("avx512f+avx2+fma", "avx2+fma" or "baseline"), for the benchmarks' headers.
const char* isa_name();

template <class A>
struct Simd;
template <>
struct Simd<float> {
  typedef float V __attribute__((vector_size(32)));
  typedef int32_t I __attribute__((vector_size(32)));
  static constexpr int W = 8;
};
template <>
struct Simd<double> {
  typedef double V __attribute__((vector_size(32)));
  typedef int64_t I __attribute__((vector_size(32)));
  static constexpr int W = 4;
};
template <class A>
using VecT = typename Simd<A>::V;

// A vector of Bytes (16, 32 or 64) bytes of A, for the kernels written for a vector width (one
// variant per ISA: RMT_DEFINE_LANE_VARIANTS).
template <class A, int Bytes>
struct VecOf {
  typedef A V __attribute__((vector_size(Bytes)));
};
template <class A, int Bytes>
using VecN = typename VecOf<A, Bytes>::V;

// Unaligned load and store of a vector of A: VecT<A> unless another vector type V is named (the
// kernels written for a lane count use 16- and 64-byte vectors too).
template <class A, class V = VecT<A>>
RMT_ALWAYS_INLINE V vload(const A* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
template <class A, class V>
RMT_ALWAYS_INLINE void vstore(A* p, const V& v) {
  __builtin_memcpy(p, &v, sizeof v);
}
// x into lane 0, then a shuffle that copies lane 0 everywhere: one broadcast instruction in an
// AVX2 kernel. The obvious forms are worse: `VecT<A>{} + x` costs an add (0 + x is no identity for
// x = -0), and a vector literal {x, x, ...} is split into eight inserts when the helper is lowered
// for the baseline ISA before it is inlined into an AVX2 kernel (GCC 12).
template <class A>
RMT_ALWAYS_INLINE VecT<A> vbcast(A x) {
  VecT<A> v{};
  __builtin_memcpy(&v, &x, sizeof x);
  return __builtin_shuffle(v, typename Simd<A>::I{});
}

template <class A>
RMT_ALWAYS_INLINE VecT<A> vabs(const VecT<A>& x) {
  return x < 0 ? -x : x;
}
template <class A>
RMT_ALWAYS_INLINE A hsum(const VecT<A>& v) {
  A r = 0;
  for (int u = 0; u < Simd<A>::W; ++u) r += v[u];
  return r;
}
// Sum of the lanes of a vector of any width (VecN), halving: log2(lanes) dependent adds, not one
// per lane.
template <class A, class V>
RMT_ALWAYS_INLINE A lane_sum(const V& v) {
  constexpr int W = sizeof(V) / sizeof(A);
  A t[W];
  __builtin_memcpy(t, &v, sizeof(t));
  for (int half = W / 2; half >= 1; half /= 2) {
    for (int i = 0; i < half; ++i) t[i] += t[i + half];
  }
  return t[0];
}
template <class A>
RMT_ALWAYS_INLINE A hmax(const VecT<A>& v) {
  A r = v[0];
  for (int u = 1; u < Simd<A>::W; ++u) r = v[u] > r ? v[u] : r;
  return r;
}

}  // namespace rmt::ops::cpu

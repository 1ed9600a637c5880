// The run-time choice between the baseline and the AVX2 variants of the CPU kernels (cpu_simd.h).

#include "ops/cpu/cpu_simd.h"

#include <cstdlib>
#include <cstring>

namespace rmt::ops::cpu {

bool use_avx2() {
#if RMT_HAVE_AVX2_VARIANT
  static const bool yes = [] {
    const char* forced = std::getenv("RMT_MASA_CPU_ISA");
    if (forced && std::strcmp(forced, "baseline") == 0) return false;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return yes;
#else
  return false;
#endif
}

bool use_avx512() {
#if RMT_HAVE_AVX2_VARIANT
  static const bool yes = [] {
    const char* forced = std::getenv("RMT_MASA_CPU_ISA");
    if (forced && std::strcmp(forced, "avx2") == 0) return false;
    return use_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq");
  }();
  return yes;
#else
  return false;
#endif
}

const char* isa_name() {
  return use_avx512() ? "avx512f+avx2+fma" : use_avx2() ? "avx2+fma" : "baseline";
}

}  // namespace rmt::ops::cpu

// The run-time choice between the baseline and the AVX2 variants of the CPU kernels (cpu_simd.h).

#include "ops/cpu/cpu_simd.h"

#include "runtime/env_choice.h"

namespace rmt::ops::cpu {

namespace {

// RMT_MASA_CPU_ISA: the widest variant the kernels may take (for tests of the narrower ones).
std::optional<std::string_view> forced_isa() {
  static const auto forced = runtime::env_choice("RMT_MASA_CPU_ISA", {"baseline", "avx2", "avx512"},
                                                 "the widest variant this CPU runs");
  return forced;
}

}  // namespace

bool use_avx2() {
#if RMT_HAVE_AVX2_VARIANT
  static const bool yes = [] {
    if (forced_isa() == "baseline") return false;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return yes;
#else
  (void)forced_isa();  // a value it does not know is an error on any machine
  return false;
#endif
}

bool use_avx512() {
#if RMT_HAVE_AVX2_VARIANT
  static const bool yes = [] {
    if (forced_isa() == "avx2") return false;
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

// The GEMM epilogue (bias_gelu.h), in the ISA variants of cpu_simd.h.

#include "ops/cpu/bias_gelu.h"

#include "ops/cpu/cpu_simd.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math", "fp-contract=fast")  // as in the other CPU kernels
#endif

#include "ops/cpu/cpu_math.h"  // after the pragma: its functions take this file's options

namespace rmt::ops::cpu {
namespace {

template <int W>
RMT_ALWAYS_INLINE void add_bias_gelu_impl(float* rows, int64_t count, int64_t n, const float* bias,
                                          bool gelu) {
  using V = VecN<float, 4 * W>;
  for (int64_t r = 0; r < count; ++r) {
    float* row = rows + r * n;
    if (gelu) {  // one pass: the bias added as the row is loaded
      cpu::gelu<4 * W>(row, row, n, bias);
      continue;
    }
    if (bias) {
      int64_t j = 0;
      for (; j + W <= n; j += W) {
        vstore(row + j, vload<float, V>(row + j) + vload<float, V>(bias + j));
      }
      for (; j < n; ++j) row[j] += bias[j];
    }
  }
}

#define RMT_DEFINE_VARIANT(SUFFIX, ATTR, W)                                                        \
  ATTR RMT_FLATTEN void add_bias_gelu_##SUFFIX(float* rows, int64_t count, int64_t n,              \
                                               const float* bias, bool gelu) {                     \
    add_bias_gelu_impl<W>(rows, count, n, bias, gelu);                                             \
  }
RMT_DEFINE_LANE_VARIANTS(RMT_DEFINE_VARIANT)
#undef RMT_DEFINE_VARIANT

}  // namespace

void add_bias_gelu(float* rows, int64_t count, int64_t n, const float* bias, bool gelu) {
  if (!bias && !gelu) return;
  RMT_CALL_LANE_VARIANT(add_bias_gelu, rows, count, n, bias, gelu);
}

}  // namespace rmt::ops::cpu

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

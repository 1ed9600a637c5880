#include "nn/avx2_gemm.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>

#include "nn/packed_gemm_common.h"
#include "ops/cpu/bias_gelu.h"
#include "ops/cpu/cpu_simd.h"
#include "runtime/cpu_cache.h"

#if RMT_HAVE_AVX2_VARIANT
#include <immintrin.h>  // one broadcast from memory (vbcast takes a load, a move and a broadcast)

#pragma GCC push_options
#pragma GCC optimize("no-trapping-math", "fp-contract=fast")  // as in the other CPU kernels
#include "ops/cpu/cpu_math.h"  // after the pragma: the GELU takes this file's options
#endif

namespace rmt::nn::detail::avx2_gemm {

namespace {

// Output columns of a weight strip: two vectors of 8.
constexpr int64_t kStrip = 16;

#if RMT_HAVE_AVX2_VARIANT

// A register tile: 6 rows x 16 columns (two vectors) is 12 of AVX2's 16 registers, the other
// four the weight's two vectors and the broadcast row value.
constexpr int64_t kTileRows = 6;
// Depth of a slice: a strip's slice is 16 KB, half of a 32 KiB L1.
constexpr int64_t kSliceDepth = 256;

// Rows of a block: its slice of x (rows x slice depth) within half of the L2, where it stays
// while the strips pass.
int64_t block_rows(int64_t depth) {
  const int64_t rows =
      runtime::l2_cache_bytes() / 2 / (depth * static_cast<int64_t>(sizeof(float)));
  return std::max(kTileRows, rows / kTileRows * kTileRows);
}

using V = ops::cpu::VecT<float>;  // 8 floats

// After a tile's last depth slice: the bias of its 16 columns (or null), then the GELU.
struct Finish {
  const float* bias;
  bool gelu;
};

// c (R rows ldc apart, 16 columns) = (accumulate ? c : 0) + a (R rows lda apart, depth values)
// times b (depth x 16, contiguous), then `finish` where given.
template <int R>
RMT_TARGET_AVX2 RMT_ALWAYS_INLINE void tile(const float* a, int64_t lda, const float* b,
                                            int64_t depth, float* c, int64_t ldc, bool accumulate,
                                            const Finish* finish) {
  V acc[R][2];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    acc[r][0] = accumulate ? ops::cpu::vload<float>(c + r * ldc) : V{};
    acc[r][1] = accumulate ? ops::cpu::vload<float>(c + r * ldc + 8) : V{};
  }
  for (int64_t d = 0; d < depth; ++d) {
    const V b0 = ops::cpu::vload<float>(b + d * kStrip);
    const V b1 = ops::cpu::vload<float>(b + d * kStrip + 8);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const V x = reinterpret_cast<V>(_mm256_broadcast_ss(a + r * lda + d));
      acc[r][0] += x * b0;
      acc[r][1] += x * b1;
    }
  }
  if (finish) {
    const V bias0 = finish->bias ? ops::cpu::vload<float>(finish->bias) : V{};
    const V bias1 = finish->bias ? ops::cpu::vload<float>(finish->bias + 8) : V{};
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      acc[r][0] += bias0;
      acc[r][1] += bias1;
      if (finish->gelu) {
        acc[r][0] = ops::cpu::vgelu_of(acc[r][0]);
        acc[r][1] = ops::cpu::vgelu_of(acc[r][1]);
      }
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    ops::cpu::vstore(c + r * ldc, acc[r][0]);
    ops::cpu::vstore(c + r * ldc + 8, acc[r][1]);
  }
}

// Rows of the tile at a block's row i (block end i1): 6, but the last 7 or 8 rows as two tiles of
// 4 and 3 or 4 and 4: a tile of 1 or 2 rows has too few accumulators to hide the FMA latency
// (RMT-S's 49-token last stage on Zen 3: 49 rows took 7% longer than 48 with a 1-row tile, 4%
// with 4 + 3). Each row's sums are the same whichever tile computes it.
inline int64_t tile_rows_at(int64_t i, int64_t i1) {
  const int64_t left = i1 - i;
  return left == 7 || left == 8 ? 4 : std::min(kTileRows, left);
}

RMT_TARGET_AVX2 RMT_ALWAYS_INLINE void tile_of(int64_t rows, const float* a, int64_t lda,
                                               const float* b, int64_t depth, float* c,
                                               int64_t ldc, bool accumulate,
                                               const Finish* finish) {
  switch (rows) {
    case 6: return tile<6>(a, lda, b, depth, c, ldc, accumulate, finish);
    case 5: return tile<5>(a, lda, b, depth, c, ldc, accumulate, finish);
    case 4: return tile<4>(a, lda, b, depth, c, ldc, accumulate, finish);
    case 3: return tile<3>(a, lda, b, depth, c, ldc, accumulate, finish);
    case 2: return tile<2>(a, lda, b, depth, c, ldc, accumulate, finish);
    default: return tile<1>(a, lda, b, depth, c, ldc, accumulate, finish);
  }
}

// out (m rows, n wide; strips [s0, s1) of it) = a (m, k) times the packed weight + beta * out,
// plus bias, then GELU: blocks of rows, in each depth slices, in each the strips, under each
// strip the block's tiles of rows. The last strip, where n is no multiple of 16, goes through a
// 16-wide copy of its columns.
RMT_TARGET_AVX2 RMT_FLATTEN void gemm_block_avx2(const float* a, int64_t m, int64_t k,
                                                 const float* packed, int64_t n, int64_t s0,
                                                 int64_t s1, const float* bias, bool gelu,
                                                 float beta, float* out) {
  // The last strip's 16-wide copies (its missing columns are computed, never stored).
  float narrow_c[kTileRows * kStrip] = {}, narrow_bias[kStrip];
  const int64_t rows_per_block = block_rows(std::min(k, kSliceDepth));
  for (int64_t i0 = 0; i0 < m; i0 += rows_per_block) {
    const int64_t i1 = std::min(m, i0 + rows_per_block);
    for (int64_t d = 0; d < k; d += kSliceDepth) {
      const int64_t depth = std::min(kSliceDepth, k - d);
      const bool accumulate = beta != 0.0f || d > 0, last = d + depth == k;
      for (int64_t s = s0; s < s1; ++s) {
        const float* b = packed + (s * k + d) * kStrip;
        const int64_t j = s * kStrip, cols = std::min(kStrip, n - j);
        if (cols == kStrip) {
          const Finish finish{bias ? bias + j : nullptr, gelu};
          for (int64_t i = i0, rows; i < i1; i += rows) {
            rows = tile_rows_at(i, i1);
            tile_of(rows, a + i * k + d, k, b, depth, out + i * n + j, n, accumulate,
                    last ? &finish : nullptr);
          }
          continue;
        }
        std::fill_n(narrow_bias, kStrip, 0.0f);
        if (bias) std::copy_n(bias + j, cols, narrow_bias);
        const Finish finish{narrow_bias, gelu};
        for (int64_t i = i0, rows; i < i1; i += rows) {
          rows = tile_rows_at(i, i1);
          for (int64_t r = 0; accumulate && r < rows; ++r) {
            std::copy_n(out + (i + r) * n + j, cols, narrow_c + r * kStrip);
          }
          tile_of(rows, a + i * k + d, k, b, depth, narrow_c, kStrip, accumulate,
                  last ? &finish : nullptr);
          for (int64_t r = 0; r < rows; ++r) {
            std::copy_n(narrow_c + r * kStrip, cols, out + (i + r) * n + j);
          }
        }
      }
    }
  }
}

#endif  // RMT_HAVE_AVX2_VARIANT

// gemm_block_avx2 on columns [j0, j1) (j0 a multiple of 16); without input features (k = 0) the
// product is zero: beta * out plus bias, then GELU.
void gemm_block(const float* a, int64_t m, int64_t k, const float* packed, int64_t n, int64_t j0,
                int64_t j1, const float* bias, bool gelu, float beta, float* out) {
  TORCH_CHECK(beta == 0.0f || beta == 1.0f, "avx2 linear: beta must be 0 or 1, got ", beta);
  if (k == 0) {
    for (int64_t i = 0; i < m; ++i) {
      float* row = out + i * n + j0;
      if (beta == 0.0f) std::fill_n(row, j1 - j0, 0.0f);
      ops::cpu::add_bias_gelu(row, 1, j1 - j0, bias ? bias + j0 : nullptr, gelu);
    }
    return;
  }
#if RMT_HAVE_AVX2_VARIANT
  gemm_block_avx2(a, m, k, packed, n, j0 / kStrip, (j1 + kStrip - 1) / kStrip, bias, gelu, beta,
                  out);
#else
  (void)a, (void)packed;
  TORCH_CHECK(false, "avx2 linear: this build has no AVX2 variant");
#endif
}

}  // namespace

bool available() {
#if RMT_HAVE_AVX2_VARIANT
  return ops::cpu::use_avx2();
#else
  return false;
#endif
}

bool preferred() { return available() && !ops::cpu::use_avx512(); }

at::Tensor pack_linear(const at::Tensor& weight) {
  const int64_t out = weight.size(0), in = weight.size(1);
  const int64_t strips = (out + kStrip - 1) / kStrip;
  auto padded = weight;
  if (strips * kStrip != out) {
    padded = at::zeros({strips * kStrip, in}, weight.options());
    padded.narrow(0, 0, out).copy_(weight);
  }
  return padded.reshape({strips, kStrip, in}).transpose(1, 2).contiguous();
}

void gemm_rows(const float* a, int64_t m, int64_t k, const at::Tensor& packed, int64_t n,
               const float* bias, bool gelu, float beta, float* out) {
  gemm_block(a, m, k, packed.data_ptr<float>(), n, 0, n, bias, gelu, beta, out);
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                  const at::Tensor& bias, bool gelu) {
  return linear_in_blocks(&gemm_block, kStrip, x, packed, out_features, bias, gelu);
}

void linear_add_(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& bias,
                 at::Tensor& into) {
  linear_add_in_blocks(&gemm_block, kStrip, "avx2 linear_add_", x, packed, bias, into);
}

}  // namespace rmt::nn::detail::avx2_gemm

#if RMT_HAVE_AVX2_VARIANT
#pragma GCC pop_options
#endif

#include "nn/brgemm_gemm.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/native/CPUBlas.h>
#include <c10/util/Exception.h>

#include <algorithm>

#include "nn/packed_gemm_common.h"
#include "ops/cpu/bias_gelu.h"
#include "runtime/cpu_cache.h"

namespace rmt::nn::detail::brgemm {

namespace {

// Rows of one kernel call: a fixed count (and the remainder), so that a layer needs at most this
// many kernels per thread whatever the batch or image size; 64 keeps a block of even 1536 outputs
// (RMT-L's widest layer) in L2 for the bias and GELU.
constexpr int64_t kBlockRows = 64;
// Columns of a thread's share, a multiple of the kernel's 16-float vectors.
constexpr int64_t kColumnAlign = 16;

// Bytes of a weight panel (its depth x columns tile) that the row blocks share: a quarter of the
// L2, so that each panel comes from memory once and then from L2 for each row block, not from
// memory for each of the kernel's register tiles of rows, with room beside it for the block of
// rows and its outputs. On an AMD EPYC Zen 3 (512 KiB L2, AVX2), half of the L2 (the former
// budget) against a quarter, rows of 64 at depth 256: RMT-S's 256 x 256 layer 80 -> 89 GFLOP/s,
// 256 x 768 79 -> 86 (Zen 4's 1 MiB L2 not measured with a quarter).
int64_t panel_bytes() { return runtime::l2_cache_bytes() / 4; }

// Where all of a layer's rows fit one block (RMT-S's last stage, 49 rows a image), its weight is
// read once, from memory: panels of this many columns and depth slices of kStreamDepth, and during
// each kernel call the same slice of the next panel prefetched into L2, so that the memory's
// latency hides behind the current call (49 x 512 x 1536 alone, the weight out of cache: 86-89 ->
// 94-96 GFLOP/s; RMT-S's last stage in the model: 12.5-12.8 -> 12.1-12.4 ms; with RMT-S's 196
// rows of stage 3, four row blocks, it gained nothing).
constexpr int64_t kStreamPanel = 256;
constexpr int64_t kStreamDepth = 64;

#ifdef CPUBLAS_BRGEMM_F32F32F32
// The weight rows [d, d + depth) of columns [j, j + width), towards L2 (prefetcht1).
void prefetch_weight(const float* b, int64_t n, int64_t d, int64_t depth, int64_t j,
                     int64_t width) {
  constexpr int64_t kLineFloats = 64 / sizeof(float);
  for (int64_t r = d; r < d + depth; ++r) {
    for (int64_t c = 0; c < width; c += kLineFloats) __builtin_prefetch(b + r * n + j + c, 0, 2);
  }
}
#endif

// c (rows, columns j0..j1 of an n-wide output) = a (rows, k) times the packed weight's columns
// j0..j1 + beta * c, plus bias, then GELU: one kernel call per block of rows, or, where the weight
// is larger than a panel, per (column panel, row block, depth slice).
void gemm_block(const float* a, int64_t m, int64_t k, const float* b, int64_t n, int64_t j0,
                int64_t j1, const float* bias, bool gelu, float beta, float* out) {
#ifdef CPUBLAS_BRGEMM_F32F32F32
  TORCH_CHECK(beta == 0.0f || beta == 1.0f, "brgemm linear: beta must be 0 or 1, got ", beta);
  // Depth slices of at most kSliceDepth, then panels as wide as the budget allows in whole vectors
  // (RMT-S's last stage, 49 rows x 512 x 1536, weights in memory: 85 -> 91 GFLOP/s, 1 MiB L2).
  // 256, not 512: on Zen 3 (512 KiB L2) 512-deep slices ran 8-15% slower at every RMT-S shape.
  constexpr int64_t kSliceDepth = 256;
  const int64_t floats = panel_bytes() / static_cast<int64_t>(sizeof(float));
  const bool whole = k * (j1 - j0) <= floats;
  const bool stream = !whole && m <= kBlockRows;
  const int64_t depth = std::min(k, stream ? kStreamDepth : kSliceDepth);
  const int64_t panel =
      whole    ? j1 - j0
      : stream ? kStreamPanel
               : std::max(kColumnAlign, floats / depth / kColumnAlign * kColumnAlign);
  for (int64_t p0 = j0; p0 < j1; p0 += panel) {
    const int64_t width = std::min(panel, j1 - p0);
    const int64_t next = p0 + width, next_width = std::min(panel, j1 - next);
    for (int64_t i = 0; i < m; i += kBlockRows) {
      const int64_t rows = std::min(kBlockRows, m - i);
      float* c = out + i * n + p0;
      for (int64_t d = 0; d < k; d += depth) {
        const int64_t slice = std::min(depth, k - d);
        if (stream && next_width > 0) prefetch_weight(b, n, d, slice, next, next_width);
        at::native::cpublas::brgemm(rows, width, slice, k, n, n,
                                    /*add_C=*/beta != 0.0f || d > 0, a + i * k + d,
                                    b + d * n + p0, c);
      }
      // Bias and GELU in one pass over the block while it is in cache (the bias put into C first
      // instead costs the kernel a read of C: RMT-S's 3136 x 64 x 192 layer 112 -> 94 GFLOP/s).
      if (!bias && !gelu) continue;
      if (width == n) {
        ops::cpu::add_bias_gelu(c, rows, n, bias, gelu);
      } else {
        for (int64_t r = 0; r < rows; ++r) {
          ops::cpu::add_bias_gelu(c + r * n, 1, width, bias ? bias + p0 : nullptr, gelu);
        }
      }
    }
  }
#else
  (void)a, (void)m, (void)k, (void)b, (void)n, (void)j0, (void)j1, (void)bias, (void)gelu,
      (void)beta, (void)out;
  TORCH_CHECK(false, "brgemm linear: this LibTorch has no float32 brgemm");
#endif
}

}  // namespace

bool available() {
#if defined(CPUBLAS_BRGEMM_F32F32F32) && defined(__x86_64__) && defined(__GNUC__)
  // Below AVX2 LibTorch runs its generic GEMM in the microkernel's place: a call per block of rows.
  static const bool avx2 = __builtin_cpu_supports("avx2");
  return avx2 && at::globalContext().userEnabledMkldnn();
#else
  return false;
#endif
}

at::Tensor pack_linear(const at::Tensor& weight) { return weight.t().contiguous(); }

void gemm_rows(const float* a, int64_t m, int64_t k, const at::Tensor& packed, int64_t n,
               const float* bias, bool gelu, float beta, float* out) {
  gemm_block(a, m, k, packed.data_ptr<float>(), n, 0, n, bias, gelu, beta, out);
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                  const at::Tensor& bias, bool gelu) {
  return linear_in_blocks(&gemm_block, kColumnAlign, x, packed, out_features, bias, gelu);
}

void linear_add_(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& bias,
                 at::Tensor& into) {
  linear_add_in_blocks(&gemm_block, kColumnAlign, "brgemm linear_add_", x, packed, bias, into);
}

}  // namespace rmt::nn::detail::brgemm

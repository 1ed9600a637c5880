#pragma once
// Our own float32 GEMM for the Linear layers at inference on CPUs with AVX2 and FMA but without
// AVX-512: a 6 x 16 register tile (12 accumulators, two weight vectors and a broadcast a step),
// the weight packed once into strips of 16 columns that the depth runs down contiguously, so that
// a strip's slice (256 deep: 16 KB) stays in L1 while every row of the block passes under it.
//
// Why beside oneDNN's microkernel (nn/brgemm_gemm.h): on an AMD EPYC Zen 3 (AVX2, 512 KiB L2)
// oneDNN's kernel runs RMT-S's layers at 73-94 GFLOP/s on one core, this one at 92-100 (the FMA
// peak: 98-100); the 49 rows of RMT-S's last stage 74-81 -> 92. On AVX-512 CPUs oneDNN's 16-lane
// kernel stays. The bias and the GELU are applied to the tile in registers after its last depth
// slice, so the output is written once.
// Float32 CPU tensors; the calling thread or LibTorch's intra-op threads (rows, or columns where
// the rows are few), as the other packed GEMMs.

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace rmt::nn::detail::avx2_gemm {

// Built with the AVX2 variant (GCC on x86) and the CPU has AVX2 and FMA (ops/cpu/cpu_simd.h's
// use_avx2(): RMT_MASA_CPU_ISA=baseline turns it off too).
bool available();

// Whether the library picks it by default: available() and the CPU has no AVX-512 (there oneDNN's
// 16-lane microkernel is ahead).
bool preferred();

// weight (out, in) as strips of 16 output columns, (ceil(out / 16), in, 16) contiguous, the last
// strip's missing columns zero.
at::Tensor pack_linear(const at::Tensor& weight);

// x (..., in), contiguous, times the packed weight, plus bias (may be undefined): (..., out);
// with `gelu`, the exact GELU of that.
at::Tensor linear(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                  const at::Tensor& bias, bool gelu = false);

// into (..., out_features), contiguous, with x's rows, += x times the packed weight, plus bias.
void linear_add_(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& bias,
                 at::Tensor& into);

// out (m, n) = a (m, k, rows k apart) times the packed weight + beta * out (beta 0 or 1), plus
// bias (may be null), then the GELU (gelu), on the calling thread.
void gemm_rows(const float* a, int64_t m, int64_t k, const at::Tensor& packed, int64_t n,
               const float* bias, bool gelu, float beta, float* out);

}  // namespace rmt::nn::detail::avx2_gemm

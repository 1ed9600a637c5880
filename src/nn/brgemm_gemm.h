#pragma once
// oneDNN's batch-reduce GEMM microkernel (its "ukernel" API) for the Linear layers at inference,
// which LibTorch exports as at::native::cpublas::brgemm (its float32 overload,
// CPUBLAS_BRGEMM_F32F32F32: PyPI's 2.11 has it; compiled out where the LibTorch lacks it, e.g.
// Debian's 1.13, and then available() is false).
//
// Why beside oneDNN's packed linear (nn/onednn.h) and MKL's (nn/mkl_gemm.h): a call is a lookup in
// a per-thread table of JIT kernels (a few ns, no dispatcher, no primitive set-up), it reads the
// weight in its plain transposed layout, and its kernel runs RMT's layer shapes at 105-115 GFLOP/s
// on one core of an AMD EPYC (Zen 4), where oneDNN's linear reaches 86-108 and MKL's 72-97. The
// cheap call lets the FFN run a few image rows at a time (nn/ffn_rows.h) on CPUs other than
// Intel's too, and lets the library thread each layer itself (rows, or columns where rows are
// few) with the bias and the GELU applied block by block while in cache.
// Float32 CPU tensors only; one kernel per (rows, columns, depth) kept per thread, rows taken in
// blocks of a fixed count so that their number stays small.

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace rmt::nn::detail::brgemm {

// The LibTorch exports the float32 microkernel and the CPU has AVX2 (below, LibTorch would run its
// generic GEMM instead: correct, but a call per block of rows).
bool available();

// weight (out, in) as the kernel's right operand: its transpose (in, out), contiguous.
at::Tensor pack_linear(const at::Tensor& weight);

// x (..., in), contiguous, times the packed weight, plus bias (may be undefined): (..., out);
// with `gelu`, the exact GELU of that, each block of output rows while it is in cache. Threads
// (outside a parallel region) split the rows, or the columns where the rows are few.
at::Tensor linear(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                  const at::Tensor& bias, bool gelu = false);

// into (..., out_features), contiguous, with x's rows, += x times the packed weight, plus bias.
void linear_add_(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& bias,
                 at::Tensor& into);

// out (m, n) = a (m, k, rows k apart) times the packed weight + beta * out (beta 0 or 1), plus
// bias (may be null), then the GELU (gelu), block by block, on the calling thread.
void gemm_rows(const float* a, int64_t m, int64_t k, const at::Tensor& packed, int64_t n,
               const float* bias, bool gelu, float beta, float* out);

}  // namespace rmt::nn::detail::brgemm

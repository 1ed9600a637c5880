#pragma once
// MKL's packed GEMM (cblas_sgemm_pack / cblas_sgemm_compute) for the Linear layers at inference,
// found at run time in the LibTorch the library runs with: PyPI's and pytorch.org's LibTorch link
// MKL in and export these functions; Debian's (OpenBLAS) has none, and available() is false.
//
// Why beside oneDNN's packed linear (nn/onednn.h): a call costs ~2 us instead of ~14 us plus
// oneDNN's serial set-up (~30 us between parallel regions, long enough for the OpenMP workers of a
// 2-thread run to fall asleep), and on an Intel CPU its kernel is as fast or faster on RMT's layer
// shapes. RMT-S on an Intel Xeon VM, with the stages run a few images at a time
// (nn/batch_chunks.h): +4% at batch 1 on 1 thread, +10% on 2, +2-4% at batch 16; peak RSS ~100 MB
// above oneDNN's path at batch 16 (20 MB with one image a chunk) and ~75 MB in the dense backbone
// at 1024x1024 (not traced further). Off Intel CPUs MKL takes generic code paths (on an AMD EPYC:
// 8-15% slower than oneDNN's). So it is the default on Intel CPUs where LibTorch exports it;
// RMT_CPU_LINEAR picks (nn/token_linear.cpp).
// Float32 CPU tensors only.

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace rmt::nn::detail::mkl {

bool available();

// The threads MKL runs a call made here on (1 inside a parallel region, else LibTorch's count),
// which is also the count a weight packed here is packed for: a packed weight's GEMM runs on at
// most the threads it was packed on, whatever the count at the call.
int64_t threads();

// weight (out, in) packed as the right operand of x (rows, in) times weight^T, blocked for `rows`
// rows (any row count works with it): an opaque byte tensor, its pages mapped as MKL writes them.
at::Tensor pack_linear(const at::Tensor& weight, int64_t rows);

// x (..., in), contiguous, its rows times the packed (out, in) weight, plus bias (may be
// undefined): (..., out); with `gelu`, the exact GELU of that, applied to each block of output rows
// while it is in cache. Any leading shape, read and written through pointers: no view of x or of
// the result (an ATen view costs a dispatch and, outside InferenceMode, autograd's view set-up,
// serial time between the parallel regions).
at::Tensor linear(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                  const at::Tensor& bias, bool gelu = false);

// into (..., out_features), contiguous, with x's rows, += x times the packed weight, plus bias: the
// GEMM adds its product to what `into` holds (a residual) instead of writing a new tensor that a
// separate pass then adds.
void linear_add_(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& bias,
                 at::Tensor& into);

// out (m, n) = a (m, k, rows k apart) times the packed weight + beta * out, then bias (may be null)
// and the GELU (gelu) block by block while in cache: on the calling thread, MKL sequential when
// called inside a parallel region. The sizes are MKL's 32-bit ones (the caller's tensors checked).
void gemm_rows(const float* a, int64_t m, int64_t k, const at::Tensor& packed, int64_t n,
               const float* bias, bool gelu, float beta, float* out);

}  // namespace rmt::nn::detail::mkl

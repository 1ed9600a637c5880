#pragma once
// What the packed GEMMs with row calls (nn/mkl_gemm.h, nn/brgemm_gemm.h) share: the check of
// linear_add_'s target and the layer without input features (no GEMM to call: MKL refuses a
// leading dimension of 0).

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace rmt::nn::detail {

// One block of a layer on the calling thread, as the GEMMs with row calls (nn/brgemm_gemm.h,
// nn/avx2_gemm.h) run it: out (m rows, n wide; its columns [j0, j1)) = a (m, k) times the packed
// weight + beta * out (beta 0 or 1), plus bias (may be null), then the GELU (gelu).
using BlockGemm = void (*)(const float* a, int64_t m, int64_t k, const float* packed, int64_t n,
                           int64_t j0, int64_t j1, const float* bias, bool gelu, float beta,
                           float* out);

// x (..., in), contiguous, times the packed weight, plus bias (may be undefined), then GELU
// (gelu): (..., out_features), through `block` on LibTorch's threads. The calling thread alone
// inside a parallel region or for a tiny layer (a parallel region costs more); where there are at
// least 64 rows a thread, the threads take guided chunks of rows (runtime/guided_parallel.h);
// else (the last stage, a head) guided chunks of column groups, column_align wide, so that each
// reads only its part of the weight.
at::Tensor linear_in_blocks(BlockGemm block, int64_t column_align, const at::Tensor& x,
                            const at::Tensor& packed, int64_t out_features, const at::Tensor& bias,
                            bool gelu);

// into (..., out_features), contiguous, with x's rows, += x times the packed weight, plus bias,
// the same way; `who` names the caller in the error (see prepare_linear_add).
void linear_add_in_blocks(BlockGemm block, int64_t column_align, const char* who,
                          const at::Tensor& x, const at::Tensor& packed, const at::Tensor& bias,
                          at::Tensor& into);

// Checks that `into` is contiguous with x's rows (the product of the leading sizes, also where a
// last size is 0), naming `who` in the message. Returns whether a GEMM is left to run: not where
// x has no input features (into += bias is done here, as ATen's linear on an (out, 0) weight
// gives the bias) or where into has no elements.
bool prepare_linear_add(const char* who, const at::Tensor& x, const at::Tensor& bias,
                        at::Tensor& into);

// linear(x) for x without input features (..., 0): the bias (zeros without one), then the GELU
// (gelu): what ATen's linear gives on an (out_features, 0) weight.
at::Tensor linear_without_inputs(const at::Tensor& x, int64_t out_features, const at::Tensor& bias,
                                 bool gelu);

}  // namespace rmt::nn::detail

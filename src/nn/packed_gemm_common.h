#pragma once
// What the packed GEMMs with row calls (nn/mkl_gemm.h, nn/brgemm_gemm.h) share: the check of
// linear_add_'s target and the layer without input features (no GEMM to call: MKL refuses a
// leading dimension of 0).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>

namespace rmt::nn::detail {

// How the GEMMs with row calls (nn/brgemm_gemm.h, nn/avx2_gemm.h) share out (m, n) = x (m, k)
// times a weight: block(row0, row1, column0, column1) for each thread's part. The calling thread
// alone inside a parallel region or for a tiny layer (a parallel region costs more); each thread a
// contiguous share of the rows where there are at least 64 a thread; else (the last stage, a head)
// a share of the columns, a multiple of column_align wide, so that each reads only its part of
// the weight.
void split_between_threads(int64_t m, int64_t n, int64_t k, int64_t column_align,
                           const std::function<void(int64_t, int64_t, int64_t, int64_t)>& block);

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

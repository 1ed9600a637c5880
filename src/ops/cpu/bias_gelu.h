#pragma once
// The epilogue of a GEMM that has none of its own (MKL's, nn/mkl_gemm.cpp): the bias added to each
// output row, then optionally the exact GELU, on a block of rows still in cache.

#include <cstdint>

namespace rmt::ops::cpu {

// rows: count rows of n floats, contiguous. bias: n floats, or null for none.
void add_bias_gelu(float* rows, int64_t count, int64_t n, const float* bias, bool gelu);

}  // namespace rmt::ops::cpu

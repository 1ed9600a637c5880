#pragma once
// LayerNorm over the last dimension of channels-last (..., C) tokens, optionally after the residual
// step that precedes it in an RMT block (x = x + branch; y = norm(x)), in one pass over x.

#include <ATen/ATen.h>

namespace rmt::ops {

// y = layer_norm(x + branch) over the last dimension, with x updated in place to x + branch when
// branch is defined (x must then be a tensor the caller may overwrite, and branch of x's shape).
// Contiguous float and double CPU tensors take a vectorized kernel (mean, then the centered
// variance, per row, in the tensor's precision) when no gradient is being recorded; everything
// else runs x.add_(branch) and at::layer_norm. Both agree up to the order of the sums.
at::Tensor add_layer_norm_(const at::Tensor& x, const at::Tensor& branch, const at::Tensor& weight,
                           const at::Tensor& bias, double eps);

}  // namespace rmt::ops

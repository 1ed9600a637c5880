#pragma once
// Depthwise 2-D convolution on channels-last (B, H, W, C) tensors, with an optional tensor added
// to the result in the same pass: the three convolutions of an RMT block (CPE `x + pos(x)`, LCE
// `attention + lepe(v)`, the FFN's `dwconv(h) + h`).

#include <ATen/ATen.h>

namespace rmt::ops {

// y = conv(x, weight, bias, stride, padding, groups = C) (+ residual), x and y (B, H, W, C);
// weight (C, 1, k, k), bias (C) or undefined; residual undefined or of y's shape.
//
// Float and double CPU tensors with stride 1 and "same" padding (k odd, padding (k - 1) / 2) take
// a vectorized kernel that reads x in place and writes y once, when no gradient is being
// recorded; everything else (other devices and dtypes, autograd) runs at::conv2d on a permuted
// view. Both give the same values up to the order of the floating-point sums.
at::Tensor depthwise_conv2d_nhwc(const at::Tensor& x, const at::Tensor& weight,
                                 const at::Tensor& bias, int64_t stride, int64_t padding,
                                 const at::Tensor& residual = {});

}  // namespace rmt::ops

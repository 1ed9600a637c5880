#pragma once
// Depthwise 2-D convolution on channels-last (B, H, W, C) tensors, with an optional tensor added
// to the result in the same pass: the three convolutions of an RMT block (CPE `x + pos(x)`, LCE
// `attention + lepe(v)`, the FFN's `dwconv(gelu(h)) + gelu(h)`).

#include <ATen/ATen.h>

namespace rmt::ops {

// y = conv(x, weight, bias, stride, padding, groups = C) (+ residual), x and y (B, H, W, C);
// weight (C, 1, k, k), bias (C) or undefined; residual undefined or of y's shape.
//
// Goes through the dispatcher as the operator `rmt::depthwise_conv2d_nhwc`. Float and double CPU
// tensors with stride 1 and "same" padding (k odd, padding (k - 1) / 2) take a vectorized kernel
// that reads x in place and writes y once, when no gradient is being recorded; everything else
// (other devices and dtypes, autograd) runs at::conv2d on a permuted view. Both give the same
// values up to the order of the floating-point sums.
at::Tensor depthwise_conv2d_nhwc(const at::Tensor& x, const at::Tensor& weight,
                                 const at::Tensor& bias, int64_t stride, int64_t padding,
                                 const at::Tensor& residual = {});

// The FFN's middle: g = gelu(h) (exact, erf form), then conv(g, weight, bias, stride 1, padding)
// + g. With reuse_input, when the CPU kernel applies (as above, h contiguous), h is overwritten
// with the result and returned: one read and one write of the FFN's widest tensor, no second
// buffer of its size. Otherwise (or when it does not apply) h is left as it is and a new tensor is
// returned, computed by at::gelu and depthwise_conv2d_nhwc. Float GELU uses a rational erf
// (absolute error below 3.5e-7 in float, LibTorch's vectorized at::gelu 5.3e-7); double, libm's.
at::Tensor gelu_depthwise_conv2d_add(const at::Tensor& h, const at::Tensor& weight,
                                     const at::Tensor& bias, int64_t padding, bool reuse_input);

// conv(g, weight, bias, stride 1, padding) + g, written over g when the CPU kernel applies (as
// gelu_depthwise_conv2d_add does with reuse_input), else into a new tensor: the FFN's middle when
// fc1 has applied the GELU already.
at::Tensor depthwise_conv2d_add_self(const at::Tensor& g, const at::Tensor& weight,
                                     const at::Tensor& bias, int64_t padding);

}  // namespace rmt::ops

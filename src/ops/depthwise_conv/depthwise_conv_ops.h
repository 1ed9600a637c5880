#pragma once
// rmt::depthwise_conv2d_nhwc in the dispatcher (schema in depthwise_conv.cpp), and what its
// kernels share: the argument check, and the composite that serves every device, dtype and
// configuration the CPU kernel does not take, and autograd.
//
//   rmt::depthwise_conv2d_nhwc(Tensor x, Tensor weight, Tensor? bias, int stride, int padding,
//                              Tensor? residual=None) -> Tensor
//
// Kernels: CPU (cpu/depthwise_conv_kernel.cpp, the vectorized channels-last kernel where it
// applies, else the composite); Autograd (autograd/, the composite when a gradient is being
// recorded, else the backend below); CompositeExplicitAutograd (every other backend).

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include "ops/records_gradient.h"  // the kernels' records_gradient

namespace rmt::ops::depthwise_conv {

using ConvSig = at::Tensor(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&,
                           int64_t, int64_t, const c10::optional<at::Tensor>&);

const c10::TypedOperatorHandle<ConvSig>& conv_op();

// Throws, naming `op`, when x is not (B, H, W, C), weight not (C, 1, k, k) or bias not (C).
void check_arguments(const char* op, const at::Tensor& x, const at::Tensor& weight,
                     const at::Tensor& bias);

// at::conv2d on the (B, C, H, W) view (+ residual, which must have the output's shape):
// differentiable, any device and dtype.
at::Tensor composite(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                     int64_t stride, int64_t padding, const at::Tensor& residual);

}  // namespace rmt::ops::depthwise_conv

#pragma once

#include <ATen/ATen.h>

namespace rmt::ops::layer_norm {

// Whether the CPU kernel takes these tensors (see rmt/ops/layer_norm.h).
bool cpu_kernel_applies(const at::Tensor& x, const at::Tensor& branch, const at::Tensor& weight,
                        const at::Tensor& bias);

at::Tensor add_layer_norm_cpu(const at::Tensor& x, const at::Tensor& branch,
                              const at::Tensor& weight, const at::Tensor& bias, double eps);

}  // namespace rmt::ops::layer_norm

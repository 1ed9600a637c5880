#pragma once

#include <ATen/ATen.h>

namespace rmt::ops::layer_norm {

// Whether the CPU kernel takes these tensors (see rmt/ops/layer_norm.h).
bool cpu_kernel_applies(const at::Tensor& x, const at::Tensor& branch, const at::Tensor& weight,
                        const at::Tensor& bias);

at::Tensor add_layer_norm_cpu(const at::Tensor& x, const at::Tensor& branch,
                              const at::Tensor& weight, const at::Tensor& bias, double eps);

// y[r] = layer_norm(x[r]) * weight + bias for the `rows` rows of C floats, on this thread: the
// kernel above, for callers that normalize a few rows at a time where they use them (the FFN's
// row pipeline). The same arithmetic as add_layer_norm_cpu without a branch: the same bits.
void layer_norm_rows(const float* x, const float* weight, const float* bias, float* y, int64_t C,
                     float eps, int64_t rows);

}  // namespace rmt::ops::layer_norm

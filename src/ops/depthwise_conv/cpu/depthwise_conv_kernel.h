#pragma once
// What the depthwise convolution's entry points call on the CPU side directly
// (depthwise_conv_kernel.cpp).

#include <ATen/ATen.h>

namespace rmt::ops::depthwise_conv {

// Whether the vectorized CPU kernel takes the call: float or double CPU tensors of one dtype,
// stride 1, k odd and padding (k - 1) / 2. The caller sees to it that no gradient is recorded.
bool cpu_kernel_applies(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                        int64_t stride, int64_t padding);

// h <- conv(gelu(h), weight, bias) + gelu(h) in place (activate), or h <- conv(h) + h: the FFN's
// middle, one read and one write of h. For h contiguous and cpu_kernel_applies(h, weight, bias, 1,
// padding).
void conv_add_in_place_cpu(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& bias,
                           bool activate);

// Output rows [row0, row1) of conv(h) + h (same padding, stride 1), on the calling thread, for one
// (height, width, channels) image of which the rows [first, ...) of h lie one after the other in
// `slab`, every row that the output rows read among them; out: the output rows, one after the
// other. For float weight and bias that cpu_kernel_applies accepts. The FFN's row pipeline
// (nn/ffn_rows.h) runs the middle of its FFN on a few rows at a time through it.
void conv_add_self_rows_cpu(const float* slab, int64_t first, int64_t height, int64_t width,
                            int64_t channels, const at::Tensor& weight, const at::Tensor& bias,
                            int64_t row0, int64_t row1, float* out);

}  // namespace rmt::ops::depthwise_conv

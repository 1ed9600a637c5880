#pragma once
// Decay-masked retention (MaSA) as torch operators.
//
// Shapes, for both operators:
//   q, k, v : (B, H, W, heads * d) as the q/k/v projections produce them; k is NOT yet scaled.
//   sin, cos: (H, W, d) theta-shift tables over the flattened position index (RelPos2d::sin_cos).
//   decay   : (heads,) log-decay per head (RelPos2d's `decay` buffer, always <= 0).
//   scale   : multiplies k before the rotation (the authors use head_dim ** -0.5).
//   result  : (B, H, W, heads * d_v).
//
// masa_decomposed: softmax along each row with mask decay*|x_i - x_j|, then along each column with
// decay*|y_i - y_j|, the second pass consuming the first one's output as values.
// masa_full: one softmax over all H*W tokens with mask decay*(|y_i - y_j| + |x_i - x_j|).
//
// The public functions go through the dispatcher (`rmt::masa_decomposed`, `rmt::masa_full`), so the
// device of the inputs picks the CPU or CUDA kernel, and autograd works on both.

#include <ATen/ATen.h>

namespace rmt::ops {

at::Tensor masa_decomposed(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const at::Tensor& sin, const at::Tensor& cos, const at::Tensor& decay,
                           double scale);

at::Tensor masa_full(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& sin, const at::Tensor& cos, const at::Tensor& decay,
                     double scale);

// The authors' op sequence, step for step (materialized masks and score matrices, the same
// permutes). The reference path of the modules, and the yardstick of every fused kernel.
namespace reference {

at::Tensor masa_decomposed(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const at::Tensor& sin, const at::Tensor& cos, const at::Tensor& decay,
                           double scale);

at::Tensor masa_full(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& sin, const at::Tensor& cos, const at::Tensor& decay,
                     double scale);

// x * cos + rotate_every_two(x) * sin, where rotate_every_two maps pairs (a, b) to (-b, a).
at::Tensor theta_shift(const at::Tensor& x, const at::Tensor& sin, const at::Tensor& cos);

// decay[h] * |i - j| for i, j < length: (heads, length, length).
at::Tensor decay_mask_1d(const at::Tensor& decay, int64_t length);

// decay[h] * (|y_i - y_j| + |x_i - x_j|) over the H*W grid in row-major order: (heads, HW, HW).
at::Tensor decay_mask_2d(const at::Tensor& decay, int64_t height, int64_t width);

}  // namespace reference

// Throws c10::Error naming the tensor and what was expected when the inputs do not fit the shapes
// above (rank, sizes, dtype agreement, device agreement, odd head dim).
void check_masa_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       const at::Tensor& sin, const at::Tensor& cos, const at::Tensor& decay);

}  // namespace rmt::ops

#pragma once
// The FFN at CPU inference a few image rows at a time: fc1 and its GELU, the depthwise conv with
// its residual, and fc2 adding into the block's residual, for R rows before the next R, so that
// the hidden activations (3x the block's width) stay in the core's L2 cache between the four steps
// instead of making three round trips through L3 or memory as whole tensors (RMT-S's first stage:
// 2.4 MB a image). Each thread runs whole images, or a share of an image's rows when the images
// are fewer than the threads; the rows just outside a share are computed by both neighbours (the
// conv's halo). The hidden tensor is never formed: less peak memory too. The block's LayerNorm
// before the FFN can run in the pipeline as well (ffn_rows_norm_add_), each chunk's rows
// normalized just before fc1 reads them.

#include <ATen/core/Tensor.h>
#include <torch/nn/modules/linear.h>

#include "nn/token_linear.h"

namespace rmt::nn::detail {

// into += fc2(g + conv(g)) with g = gelu(fc1(x)), conv the depthwise (dw_weight: DWConv2d's
// kernel_weight(), stride 1, padding dw_padding); x and into (B, H, W, C). Returns false, having
// done nothing, where it does not apply: float32 CPU tensors, contiguous, GEMMs with row calls
// for both layers (MKL's or oneDNN's microkernel, each layer its own: token_linear.h's
// row_gemm_weight; no gradient recorded), the depthwise CPU kernel's conditions, or too few rows
// a thread (then the layer-by-layer path threads each GEMM instead).
bool ffn_rows_add_(const LinearTensors& fc1, const LinearTensors& fc2,
                   const at::Tensor& dw_weight, const at::Tensor& dw_bias, int64_t dw_padding,
                   const at::Tensor& x, at::Tensor& into, PackedLinear* packed1,
                   PackedLinear* packed2);

// x += fc2(...(layer_norm(x))): the same with the block's LayerNorm before it (norm_weight,
// norm_bias: float, C each; eps), its rows normalized just before fc1 reads them instead of in a
// pass of their own that writes a tensor for fc1 to read back. Rows just outside a thread's share,
// which its neighbour overwrites, are normalized before any thread writes. Returns false, having
// done nothing, where ffn_rows_add_ would, or where the norm's tensors do not fit.
bool ffn_rows_norm_add_(const LinearTensors& fc1, const LinearTensors& fc2,
                        const at::Tensor& dw_weight, const at::Tensor& dw_bias, int64_t dw_padding,
                        const at::Tensor& norm_weight, const at::Tensor& norm_bias, double eps,
                        at::Tensor& x, PackedLinear* packed1, PackedLinear* packed2);

}  // namespace rmt::nn::detail

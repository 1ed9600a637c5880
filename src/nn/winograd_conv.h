#pragma once
// 3x3 convolutions of stride 1 (the conv stem's second and fourth) by Winograd's F(2x2, 3x3): each
// 2x2 block of outputs from its 4x4 block of inputs with 16 products a channel pair where the
// direct form takes 36, so 2.25x fewer multiply-adds. The 16 products of all the tiles of a block
// are 16 GEMMs (tiles x in) x (in x out), on oneDNN's microkernel (nn/brgemm_gemm.h); the input
// and output transforms are additions only, on the block while it is in L2. Its transforms have
// coefficients 0, +-1 and +-1/2: the float result is within a few ulps of the direct one.
//
// Float32, CPU, channels-last, 3x3, stride 1, padding 1, dilation 1, one group, channel counts
// multiples of 8 (every RMT stem's); available() false where LibTorch lacks the microkernel
// (Debian's 1.13) or the CPU lacks AVX2, and then callers keep oneDNN's convolution.

#include <ATen/core/Tensor.h>

namespace rmt::nn::detail::winograd {

bool available();

// Whether conv3x3 takes this input with a weight of (out_channels, in_channels, 3, 3).
bool applies(const at::Tensor& x, int64_t out_channels);

// weight (out, in, 3, 3) -> its transform (16, in, out), float32: G g G^T for each channel pair,
// computed in double.
at::Tensor transform_weight(const at::Tensor& weight);

// x (N, C, H, W), channels-last float32: conv3x3(x, weight) + bias, then the exact GELU when
// `gelu`; (N, K, H, W) channels-last. transformed: transform_weight(weight); bias: K floats.
at::Tensor conv3x3(const at::Tensor& x, const at::Tensor& transformed, const at::Tensor& bias,
                   bool gelu);

}  // namespace rmt::nn::detail::winograd

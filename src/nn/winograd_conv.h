#pragma once
// 3x3 convolutions of stride 1 (the conv stem's second and fourth) by Winograd's F(4x4, 3x3): each
// 4x4 block of outputs from its 6x6 block of inputs with 36 products a channel pair where the
// direct form takes 144, so 4x fewer multiply-adds. The 36 products of all the tiles of a block
// are 36 GEMMs (tiles x in) x (in x out), on oneDNN's microkernel (nn/brgemm_gemm.h); the input
// and output transforms (coefficients up to 8) run on the block while it is in L2. Rounding: within
// ~1e-5 of the largest output (the direct form's ~2e-7; F(2x2, 3x3), 2.25x fewer, was ~1e-6): the
// whole network's float32 parity stays near 1e-6, an order below its 1e-5 bound.
//
// Float32, CPU, channels-last, 3x3, stride 1, padding 1, dilation 1, one group, channel counts
// multiples of 8 (every RMT stem's); available() false where LibTorch lacks the microkernel
// (Debian's 1.13) or the CPU lacks AVX2, and then callers keep oneDNN's convolution.

#include <ATen/core/Tensor.h>

namespace rmt::nn::detail::winograd {

bool available();

// Whether conv3x3 takes this input with a weight of (out_channels, in_channels, 3, 3).
bool applies(const at::Tensor& x, int64_t out_channels);

// weight (out, in, 3, 3) -> its transform (36, in, out), float32: G g G^T for each channel pair,
// computed in double.
at::Tensor transform_weight(const at::Tensor& weight);

// x (N, C, H, W), channels-last float32: conv3x3(x, weight) + bias, then the exact GELU when
// `gelu`; (N, K, H, W) channels-last. transformed: transform_weight(weight); bias: K floats.
at::Tensor conv3x3(const at::Tensor& x, const at::Tensor& transformed, const at::Tensor& bias,
                   bool gelu);

}  // namespace rmt::nn::detail::winograd

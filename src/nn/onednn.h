#pragma once
// oneDNN's inference operators with weights packed ahead of time, as LibTorch registers them for
// its own graph compiler (mkldnn::_linear_pointwise, mkldnn::_convolution_pointwise; LibTorch >= 2.0
// built with oneDNN). Unpacked, LibTorch's linear and conv repack (reorder) the weights on every
// call: for the large late-stage weights that is a read and a write of several MB per call. Where
// a LibTorch lacks them (Debian's 1.13), available() is false and callers keep LibTorch's ops.
// Float32 CPU tensors only.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace rmt::nn::detail::onednn {

bool linear_available();
// weight (out, in) in oneDNN's layout (an opaque mkldnn tensor), for linear().
at::Tensor pack_linear(const at::Tensor& weight);
// x (rows, in) times the packed weight, plus bias (may be undefined): (rows, out); with `gelu`,
// the exact (erf) GELU of that, applied by the GEMM to each block of its output while it is in
// cache.
at::Tensor linear(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& bias,
                  bool gelu = false);

struct ConvGeometry {
  std::vector<int64_t> padding, stride, dilation;
  int64_t groups;
};
bool conv_available();
// weight (out, in / groups, kh, kw), packed for inputs like `example` (any other size works too).
at::Tensor pack_conv(const at::Tensor& weight, const ConvGeometry& g, at::IntArrayRef example);
// conv2d(x, packed weight, bias): x channels-last (B, C, H, W) in, channels-last out; with
// `gelu`, the exact GELU of that, as for linear().
at::Tensor conv(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& bias,
                const ConvGeometry& g, bool gelu = false);

}  // namespace rmt::nn::detail::onednn

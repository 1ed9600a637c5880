#pragma once
// Channels-last (B, H, W, C) tensors that the CPU kernels read in place through one token stride:
// a contiguous tensor, or a channel slice of one (the q, k and v of a fused projection). Host
// code; nvcc compiles it too (masa_params.h).

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace rmt::ops {

// Elements between neighbouring tokens (pixels) of t when it is 4-D with its channels contiguous
// and its tokens a fixed stride apart; 0 when it has no such layout (make it contiguous first).
inline int64_t token_stride(const at::Tensor& t) {
  const bool fits = t.dim() == 4 && t.stride(3) == 1 && t.stride(2) >= t.size(3) &&
                    t.stride(1) == t.size(2) * t.stride(2) &&
                    t.stride(0) == t.size(1) * t.stride(1);
  return fits ? t.stride(2) : 0;
}

}  // namespace rmt::ops

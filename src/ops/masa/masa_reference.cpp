// The authors' MaSA op chain, written against ATen. Kept literal on purpose: it is the reference
// path of the modules and the yardstick of the fused kernels.

#include "rmt/ops/masa.h"

namespace rmt::ops::reference {
namespace {

// (B, H, W, heads*d) -> (B, heads, H, W, d)
at::Tensor split_heads(const at::Tensor& x, int64_t heads) {
  const auto b = x.size(0), h = x.size(1), w = x.size(2);
  return x.reshape({b, h, w, heads, -1}).permute({0, 3, 1, 2, 4});
}

at::Tensor rotate_every_two(const at::Tensor& x) {
  using namespace at::indexing;
  auto even = x.index({"...", Slice(0, None, 2)});
  auto odd = x.index({"...", Slice(1, None, 2)});
  return at::stack({-odd, even}, -1).flatten(-2);
}

}  // namespace

at::Tensor theta_shift(const at::Tensor& x, const at::Tensor& sin, const at::Tensor& cos) {
  return x * cos + rotate_every_two(x) * sin;
}

at::Tensor decay_mask_1d(const at::Tensor& decay, int64_t length) {
  auto index = at::arange(length, decay.options());
  auto mask = (index.unsqueeze(1) - index.unsqueeze(0)).abs();
  return mask * decay.reshape({-1, 1, 1});
}

at::Tensor decay_mask_2d(const at::Tensor& decay, int64_t height, int64_t width) {
  auto grid = at::meshgrid({at::arange(height, decay.options()), at::arange(width, decay.options())},
                           "ij");
  auto coords = at::stack({grid[0], grid[1]}, -1).reshape({height * width, 2});
  auto mask = (coords.unsqueeze(1) - coords.unsqueeze(0)).abs().sum(-1);
  return mask * decay.reshape({-1, 1, 1});
}

at::Tensor masa_decomposed(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const at::Tensor& sin, const at::Tensor& cos, const at::Tensor& decay,
                           double scale) {
  check_masa_inputs(q, k, v, sin, cos, decay);
  const auto b = q.size(0), h = q.size(1), w = q.size(2), heads = decay.size(0);
  auto qr = theta_shift(split_heads(q, heads), sin, cos);          // (b n h w d)
  auto kr = theta_shift(split_heads(k * scale, heads), sin, cos);  // (b n h w d)

  // Along each row: tokens of one image row attend to each other.
  auto qr_w = qr.transpose(1, 2);                                  // (b h n w d)
  auto kr_w = kr.transpose(1, 2);
  auto vr = v.reshape({b, h, w, heads, -1}).permute({0, 1, 3, 2, 4});  // (b h n w dv)
  auto scores_w = at::matmul(qr_w, kr_w.transpose(-1, -2)) + decay_mask_1d(decay, w);
  vr = at::matmul(at::softmax(scores_w, -1), vr);                  // (b h n w dv)

  // Along each column, on the row pass's output.
  auto qr_h = qr.permute({0, 3, 1, 2, 4});                         // (b w n h d)
  auto kr_h = kr.permute({0, 3, 1, 2, 4});
  vr = vr.permute({0, 3, 2, 1, 4});                                // (b w n h dv)
  auto scores_h = at::matmul(qr_h, kr_h.transpose(-1, -2)) + decay_mask_1d(decay, h);
  auto out = at::matmul(at::softmax(scores_h, -1), vr);            // (b w n h dv)
  return out.permute({0, 3, 1, 2, 4}).flatten(-2, -1);             // (b h w n*dv)
}

at::Tensor masa_full(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& sin, const at::Tensor& cos, const at::Tensor& decay,
                     double scale) {
  check_masa_inputs(q, k, v, sin, cos, decay);
  const auto b = q.size(0), h = q.size(1), w = q.size(2), heads = decay.size(0);
  auto qr = theta_shift(split_heads(q, heads), sin, cos).flatten(2, 3);          // (b n l d)
  auto kr = theta_shift(split_heads(k * scale, heads), sin, cos).flatten(2, 3);  // (b n l d)
  auto vr = split_heads(v, heads).flatten(2, 3);                                 // (b n l dv)
  auto scores = at::matmul(qr, kr.transpose(-1, -2)) + decay_mask_2d(decay, h, w);
  auto out = at::matmul(at::softmax(scores, -1), vr);                            // (b n l dv)
  return out.transpose(1, 2).reshape({b, h, w, -1});
}

}  // namespace rmt::ops::reference

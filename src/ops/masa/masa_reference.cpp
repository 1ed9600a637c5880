// The authors' MaSA op chain, written against ATen. Kept literal on purpose: it is the reference
// path of the modules and the yardstick of the fused kernels.

#include "rmt/ops/masa.h"

namespace rmt::ops {
namespace reference {

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

}  // namespace reference

void check_masa_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       const at::Tensor& sin, const at::Tensor& cos, const at::Tensor& decay) {
  TORCH_CHECK(q.dim() == 4, "MaSA: q must be 4-D (B, H, W, heads*d), found ", q.dim(), "-D ",
              q.sizes());
  TORCH_CHECK(k.sizes() == q.sizes(), "MaSA: k must have the shape of q ", q.sizes(), ", found ",
              k.sizes());
  TORCH_CHECK(v.dim() == 4 && v.sizes().slice(0, 3) == q.sizes().slice(0, 3),
              "MaSA: v must be (B, H, W, heads*d_v) with B, H, W of q ", q.sizes(), ", found ",
              v.sizes());
  TORCH_CHECK(decay.dim() == 1 && decay.size(0) > 0,
              "MaSA: decay must be 1-D with one entry per head, found ", decay.sizes());
  const auto heads = decay.size(0);
  TORCH_CHECK(q.size(3) % heads == 0, "MaSA: channels of q (", q.size(3),
              ") must be divisible by the number of heads (", heads, ")");
  TORCH_CHECK(v.size(3) % heads == 0, "MaSA: channels of v (", v.size(3),
              ") must be divisible by the number of heads (", heads, ")");
  const auto d = q.size(3) / heads;
  TORCH_CHECK(d % 2 == 0, "MaSA: the head dim must be even for the theta-shift rotation, found ", d);
  const std::vector<int64_t> table{q.size(1), q.size(2), d};
  TORCH_CHECK(sin.sizes() == at::IntArrayRef(table) && cos.sizes() == at::IntArrayRef(table),
              "MaSA: sin and cos must be (H, W, d) = ", at::IntArrayRef(table), ", found ",
              sin.sizes(), " and ", cos.sizes());
  TORCH_CHECK(at::isFloatingType(q.scalar_type()), "MaSA: q must be floating point, found ",
              q.scalar_type());
  for (const auto* t : {&k, &v, &sin, &cos, &decay}) {
    TORCH_CHECK(t->scalar_type() == q.scalar_type(), "MaSA: all inputs must share q's dtype ",
                q.scalar_type(), ", found ", t->scalar_type());
    TORCH_CHECK(t->device() == q.device(), "MaSA: all inputs must be on q's device ", q.device(),
                ", found ", t->device());
  }
}

}  // namespace rmt::ops

// MaSA as dispatcher operators (the torchvision ops pattern): the schemas, the public entry points
// of rmt/ops/masa.h, and the input checks every kernel starts with. The kernels register
// themselves from the folders below: cpu/ (CPU), cuda/ (CUDA), autograd/ (Autograd); the
// reference chain, rmt::ops::reference, is in masa_reference.cpp.
//
// Gradients flow to q, k and v only. sin, cos and decay are RelPos2d buffers (fixed functions of
// the position and the head), so the autograd kernel returns no gradient for them, nor for scale.
// The backward ops recompute the forward's softmax statistics instead of saving them, so autograd
// keeps only the inputs alive. Double backward is not supported.

#include <torch/library.h>

#include <vector>

#include "ops/masa/masa_ops.h"
#include "rmt/ops/masa.h"

namespace rmt::ops {
namespace masa {

const c10::TypedOperatorHandle<ForwardSig>& forward_op(Form form) {
  static const auto decomposed = c10::Dispatcher::singleton()
                                     .findSchemaOrThrow("rmt::masa_decomposed", "")
                                     .typed<ForwardSig>();
  static const auto full =
      c10::Dispatcher::singleton().findSchemaOrThrow("rmt::masa_full", "").typed<ForwardSig>();
  return form == Form::kFull ? full : decomposed;
}

const c10::TypedOperatorHandle<BackwardSig>& backward_op(Form form) {
  static const auto decomposed = c10::Dispatcher::singleton()
                                     .findSchemaOrThrow("rmt::_masa_decomposed_backward", "")
                                     .typed<BackwardSig>();
  static const auto full = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("rmt::_masa_full_backward", "")
                               .typed<BackwardSig>();
  return form == Form::kFull ? full : decomposed;
}

}  // namespace masa

at::Tensor masa_decomposed(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const at::Tensor& sin, const at::Tensor& cos, const at::Tensor& decay,
                           double scale) {
  check_masa_inputs(q, k, v, sin, cos, decay);
  return masa::forward_op(masa::Form::kDecomposed).call(q, k, v, sin, cos, decay, scale);
}

at::Tensor masa_full(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& sin, const at::Tensor& cos, const at::Tensor& decay,
                     double scale) {
  check_masa_inputs(q, k, v, sin, cos, decay);
  return masa::forward_op(masa::Form::kFull).call(q, k, v, sin, cos, decay, scale);
}

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

TORCH_LIBRARY_FRAGMENT(rmt, m) {
  m.def("masa_decomposed(Tensor q, Tensor k, Tensor v, Tensor sin, Tensor cos, Tensor decay, "
        "float scale) -> Tensor");
  m.def("masa_full(Tensor q, Tensor k, Tensor v, Tensor sin, Tensor cos, Tensor decay, "
        "float scale) -> Tensor");
  m.def("_masa_decomposed_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor sin, "
        "Tensor cos, Tensor decay, float scale) -> (Tensor, Tensor, Tensor)");
  m.def("_masa_full_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor sin, "
        "Tensor cos, Tensor decay, float scale) -> (Tensor, Tensor, Tensor)");
}

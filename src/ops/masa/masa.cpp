// MaSA as dispatcher operators (the torchvision ops pattern): the schemas, the public entry points
// of rmt/ops/masa.h, and the input checks every kernel starts with. The kernels register
// themselves from the folders below: cpu/ (CPU), cuda/ (CUDA), autograd/ (Autograd); the
// reference chain, rmt::ops::reference, is in masa_reference.cpp.
//
// Gradients flow to q, k and v only. sin, cos and decay are RelPos2d buffers (fixed functions of
// the position and the head), so the autograd kernel returns no gradient for them, nor for scale.
// The backward ops recompute the forward's softmax statistics instead of saving them, so autograd
// keeps only the inputs alive. Double backward is not supported.

#include <fmt/format.h>
#include <torch/library.h>

#include <vector>

#include "ops/masa/masa_ops.h"
#include "rmt/ops/masa.h"
#include "runtime/tensor_text.h"

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
  TORCH_CHECK(q.dim() == 4, fmt::format("MaSA: q must be 4-D (B, H, W, heads*d), found {}-D {}",
                                        q.dim(), text::shape(q.sizes())));
  TORCH_CHECK(k.sizes() == q.sizes(), fmt::format("MaSA: k must have the shape of q {}, found {}",
                                                  text::shape(q.sizes()), text::shape(k.sizes())));
  TORCH_CHECK(v.dim() == 4 && v.sizes().slice(0, 3) == q.sizes().slice(0, 3),
              fmt::format("MaSA: v must be (B, H, W, heads*d_v) with B, H, W of q {}, found {}",
                          text::shape(q.sizes()), text::shape(v.sizes())));
  TORCH_CHECK(decay.dim() == 1 && decay.size(0) > 0,
              fmt::format("MaSA: decay must be 1-D with one entry per head, found {}",
                          text::shape(decay.sizes())));
  const auto heads = decay.size(0);
  TORCH_CHECK(q.size(3) % heads == 0,
              fmt::format("MaSA: channels of q ({}) must be divisible by the number of heads ({})",
                          q.size(3), heads));
  TORCH_CHECK(v.size(3) % heads == 0,
              fmt::format("MaSA: channels of v ({}) must be divisible by the number of heads ({})",
                          v.size(3), heads));
  const auto d = q.size(3) / heads;
  TORCH_CHECK(d % 2 == 0,
              fmt::format("MaSA: the head dim must be even for the theta-shift rotation, found {}",
                          d));
  const std::vector<int64_t> table{q.size(1), q.size(2), d};
  TORCH_CHECK(sin.sizes() == at::IntArrayRef(table) && cos.sizes() == at::IntArrayRef(table),
              fmt::format("MaSA: sin and cos must be (H, W, d) = {}, found {} and {}",
                          text::shape(table), text::shape(sin.sizes()), text::shape(cos.sizes())));
  TORCH_CHECK(at::isFloatingType(q.scalar_type()),
              fmt::format("MaSA: q must be floating point, found {}",
                          c10::toString(q.scalar_type())));
  for (const auto* t : {&k, &v, &sin, &cos, &decay}) {
    TORCH_CHECK(t->scalar_type() == q.scalar_type(),
                fmt::format("MaSA: all inputs must share q's dtype {}, found {}",
                            c10::toString(q.scalar_type()), c10::toString(t->scalar_type())));
    TORCH_CHECK(t->device() == q.device(),
                fmt::format("MaSA: all inputs must be on q's device {}, found {}", q.device().str(),
                            t->device().str()));
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

// The Autograd kernel of rmt::masa_decomposed and rmt::masa_full: runs the forward op below
// autograd, keeps only the inputs, and answers the backward with the matching _masa_*_backward op
// (whose kernels recompute the softmax statistics); with nothing to record, only the forward op.
// Gradients for q, k and v; none for the RelPos2d buffers sin, cos, decay, nor for scale.

#include <torch/autograd.h>
#include <torch/library.h>

#include "ops/masa/masa_ops.h"
#include "ops/records_gradient.h"

namespace rmt::ops::masa {
namespace {

template <Form F>
class MasaFunction : public torch::autograd::Function<MasaFunction<F>> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q,
                            const at::Tensor& k, const at::Tensor& v, const at::Tensor& sin,
                            const at::Tensor& cos, const at::Tensor& decay, double scale) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto out = forward_op(F).call(q, k, v, sin, cos, decay, scale);
    ctx->save_for_backward({q, k, v, sin, cos, decay});
    ctx->saved_data["scale"] = scale;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const double scale = ctx->saved_data["scale"].toDouble();
    auto [gq, gk, gv] = backward_op(F).call(grad_out[0], saved[0], saved[1], saved[2], saved[3],
                                            saved[4], saved[5], scale);
    // No gradient for sin, cos, decay (buffers) and scale.
    return {gq, gk, gv, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

template <Form F>
at::Tensor masa_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const at::Tensor& sin, const at::Tensor& cos, const at::Tensor& decay,
                         double scale) {
  // Nothing to record (inference, or no input that wants a gradient): straight to the backend's
  // kernel, without the Function's bookkeeping (saved inputs, output wrapping: ~10 us a call,
  // serial between the parallel regions).
  if (!records_gradient({&q, &k, &v})) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return forward_op(F).call(q, k, v, sin, cos, decay, scale);
  }
  return MasaFunction<F>::apply(q, k, v, sin, cos, decay, scale);
}

}  // namespace
}  // namespace rmt::ops::masa

TORCH_LIBRARY_IMPL(rmt, Autograd, m) {
  using rmt::ops::masa::Form;
  m.impl("masa_decomposed", TORCH_FN(rmt::ops::masa::masa_autograd<Form::kDecomposed>));
  m.impl("masa_full", TORCH_FN(rmt::ops::masa::masa_autograd<Form::kFull>));
}

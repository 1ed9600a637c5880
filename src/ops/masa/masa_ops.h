#pragma once
// The MaSA operators in the dispatcher (schemas in masa.cpp): typed handles for the public entry
// points and the autograd kernel.
//
//   rmt::masa_decomposed / rmt::masa_full
//       (q, k, v, sin, cos, decay, scale) -> out
//   rmt::_masa_decomposed_backward / rmt::_masa_full_backward
//       (grad_out, q, k, v, sin, cos, decay, scale) -> (grad_q, grad_k, grad_v)

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <tuple>

namespace rmt::ops::masa {

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using ForwardSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, const at::Tensor&, const at::Tensor&, double);
using BackwardSig = Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                          const at::Tensor&, const at::Tensor&, const at::Tensor&,
                          const at::Tensor&, double);

// The two forms of the operator: decomposed (a row pass, then a column pass) or full (one softmax
// over all H * W tokens).
enum class Form { kDecomposed, kFull };

const c10::TypedOperatorHandle<ForwardSig>& forward_op(Form form);
const c10::TypedOperatorHandle<BackwardSig>& backward_op(Form form);

}  // namespace rmt::ops::masa

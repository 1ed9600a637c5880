#pragma once
// Whether an op call must go through autograd: the operators' Autograd kernels and in-place paths
// ask it, and with nothing to record they run the backend's kernel directly (a
// torch::autograd::Function's bookkeeping costs ~10 us a call, serial between parallel regions).

#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>

#include <initializer_list>

namespace rmt::ops {

// Whether autograd records a graph through any of the (defined) tensors.
inline bool records_gradient(std::initializer_list<const at::Tensor*> ts) {
  if (!at::GradMode::is_enabled()) return false;
  for (const auto* t : ts) {
    if (t->defined() && t->requires_grad()) return true;
  }
  return false;
}

}  // namespace rmt::ops

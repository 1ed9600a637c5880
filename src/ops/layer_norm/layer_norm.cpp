// The entry point of rmt/ops/layer_norm.h: the CPU kernel (cpu/) where it applies, else LibTorch.

#include "rmt/ops/layer_norm.h"

#include <ATen/core/grad_mode.h>

#include "ops/layer_norm/cpu/layer_norm_kernel.h"

namespace rmt::ops {

at::Tensor add_layer_norm_(const at::Tensor& x, const at::Tensor& branch, const at::Tensor& weight,
                           const at::Tensor& bias, double eps) {
  TORCH_CHECK(x.dim() >= 1 && weight.dim() == 1 && weight.size(0) == x.size(-1),
              "add_layer_norm_: expected weight of shape (", x.dim() ? x.size(-1) : 0,
              ") for x of shape ", x.sizes(), ", got ", weight.sizes());
  TORCH_CHECK(!bias.defined() || bias.sizes() == weight.sizes(),
              "add_layer_norm_: expected bias of shape ", weight.sizes(), ", got ", bias.sizes());
  TORCH_CHECK(!branch.defined() || branch.sizes() == x.sizes(),
              "add_layer_norm_: expected branch of x's shape ", x.sizes(), ", got ", branch.sizes());
  if (!at::GradMode::is_enabled() && layer_norm::cpu_kernel_applies(x, branch, weight, bias)) {
    return layer_norm::add_layer_norm_cpu(x, branch, weight, bias, eps);
  }
  if (branch.defined()) x.add_(branch);
  return at::layer_norm(x, {x.size(-1)}, weight, bias, eps);
}

}  // namespace rmt::ops

// The Autograd kernel of rmt::depthwise_conv2d_nhwc. When a gradient is being recorded the call
// runs the composite (at::conv2d on the permuted view, whose own autograd formulas give the
// gradients); otherwise it goes on to the backend's kernel below autograd (the vectorized one on
// the CPU).

#include <torch/library.h>

#include "ops/depthwise_conv/depthwise_conv_ops.h"

namespace rmt::ops::depthwise_conv {
namespace {

at::Tensor depthwise_conv2d_nhwc_autograd(const at::Tensor& x, const at::Tensor& weight,
                                          const c10::optional<at::Tensor>& bias, int64_t stride,
                                          int64_t padding,
                                          const c10::optional<at::Tensor>& residual) {
  const at::Tensor b = bias.value_or(at::Tensor()), r = residual.value_or(at::Tensor());
  if (records_gradient({&x, &weight, &b, &r})) {
    check_arguments("depthwise_conv2d_nhwc", x, weight, b);
    return composite(x, weight, b, stride, padding, r);
  }
  at::AutoDispatchBelowADInplaceOrView guard;
  return conv_op().call(x, weight, bias, stride, padding, residual);
}

}  // namespace
}  // namespace rmt::ops::depthwise_conv

TORCH_LIBRARY_IMPL(rmt, Autograd, m) {
  m.impl("depthwise_conv2d_nhwc",
         TORCH_FN(rmt::ops::depthwise_conv::depthwise_conv2d_nhwc_autograd));
}

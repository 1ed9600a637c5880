// The depthwise convolution on channels-last tensors as a dispatcher operator (the torchvision
// ops pattern, like MaSA): the schema, the public entry points of rmt/ops/depthwise_conv.h, the
// argument check and the composite that every kernel falls back on. The CPU kernel registers
// itself from cpu/, the Autograd kernel from autograd/.
//
// gelu_depthwise_conv2d_add and depthwise_conv2d_add_self are entry points, not operators: whether it overwrites its input
// depends on the call (reuse_input, and whether the CPU kernel applies), which no schema can say.
// They call the CPU kernel's in-place form directly, or else the operator (after at::gelu).

#include "rmt/ops/depthwise_conv.h"

#include <fmt/format.h>
#include <torch/library.h>

#include "ops/depthwise_conv/cpu/depthwise_conv_kernel.h"
#include "ops/depthwise_conv/depthwise_conv_ops.h"
#include "runtime/tensor_text.h"

namespace rmt::ops {
namespace depthwise_conv {

const c10::TypedOperatorHandle<ConvSig>& conv_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("rmt::depthwise_conv2d_nhwc", "")
                             .typed<ConvSig>();
  return op;
}

void check_arguments(const char* op, const at::Tensor& x, const at::Tensor& weight,
                     const at::Tensor& bias) {
  TORCH_CHECK(x.dim() == 4,
              fmt::format("{}: expected x of shape (B, H, W, C), got {}", op,
                          text::shape(x.sizes())));
  const int64_t channels = x.size(3);
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == channels && weight.size(1) == 1 &&
                  weight.size(2) == weight.size(3),
              fmt::format("{0}: expected weight of shape ({1}, 1, k, k) for x with {1} channels, "
                          "got {2}",
                          op, channels, text::shape(weight.sizes())));
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == channels),
              fmt::format("{}: expected bias of shape ({}), got {}", op, channels,
                          text::shape(bias.sizes())));
}

at::Tensor composite(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                     int64_t stride, int64_t padding, const at::Tensor& residual) {
  auto y = at::conv2d(x.permute({0, 3, 1, 2}), weight, bias, stride, padding, 1, x.size(3))
               .permute({0, 2, 3, 1});
  if (!residual.defined()) return y;
  TORCH_CHECK(residual.sizes() == y.sizes(),
              fmt::format("depthwise_conv2d_nhwc: expected residual of the output's shape {}, got "
                          "{}",
                          text::shape(y.sizes()), text::shape(residual.sizes())));
  return y + residual;
}

namespace {

c10::optional<at::Tensor> optional(const at::Tensor& t) {
  return t.defined() ? c10::optional<at::Tensor>(t) : c10::nullopt;
}

// The kernel of every backend without one of its own (CUDA, ...).
at::Tensor depthwise_conv2d_nhwc_composite(const at::Tensor& x, const at::Tensor& weight,
                                           const c10::optional<at::Tensor>& bias, int64_t stride,
                                           int64_t padding,
                                           const c10::optional<at::Tensor>& residual) {
  const at::Tensor b = bias.value_or(at::Tensor());
  check_arguments("depthwise_conv2d_nhwc", x, weight, b);
  return composite(x, weight, b, stride, padding, residual.value_or(at::Tensor()));
}

}  // namespace
}  // namespace depthwise_conv

at::Tensor depthwise_conv2d_nhwc(const at::Tensor& x, const at::Tensor& weight,
                                 const at::Tensor& bias, int64_t stride, int64_t padding,
                                 const at::Tensor& residual) {
  depthwise_conv::check_arguments("depthwise_conv2d_nhwc", x, weight, bias);
  return depthwise_conv::conv_op().call(x, weight, depthwise_conv::optional(bias), stride, padding,
                                        depthwise_conv::optional(residual));
}

at::Tensor gelu_depthwise_conv2d_add(const at::Tensor& h, const at::Tensor& weight,
                                     const at::Tensor& bias, int64_t padding, bool reuse_input) {
  using namespace depthwise_conv;
  check_arguments("gelu_depthwise_conv2d_add", h, weight, bias);
  if (!reuse_input || !h.is_contiguous() || !cpu_kernel_applies(h, weight, bias, 1, padding) ||
      records_gradient({&h, &weight, &bias})) {
    const auto g = at::gelu(h);
    return depthwise_conv2d_nhwc(g, weight, bias, 1, padding, g);
  }
  conv_add_in_place_cpu(h, weight, bias, /*activate=*/true);
  return h;
}

at::Tensor depthwise_conv2d_add_self(const at::Tensor& g, const at::Tensor& weight,
                                     const at::Tensor& bias, int64_t padding) {
  using namespace depthwise_conv;
  check_arguments("depthwise_conv2d_add_self", g, weight, bias);
  if (!g.is_contiguous() || !cpu_kernel_applies(g, weight, bias, 1, padding) ||
      records_gradient({&g, &weight, &bias})) {
    return depthwise_conv2d_nhwc(g, weight, bias, 1, padding, g);
  }
  conv_add_in_place_cpu(g, weight, bias, /*activate=*/false);
  return g;
}

}  // namespace rmt::ops

TORCH_LIBRARY_FRAGMENT(rmt, m) {
  m.def("depthwise_conv2d_nhwc(Tensor x, Tensor weight, Tensor? bias, int stride, int padding, "
        "Tensor? residual=None) -> Tensor");
}

TORCH_LIBRARY_IMPL(rmt, CompositeExplicitAutograd, m) {
  m.impl("depthwise_conv2d_nhwc",
         TORCH_FN(rmt::ops::depthwise_conv::depthwise_conv2d_nhwc_composite));
}

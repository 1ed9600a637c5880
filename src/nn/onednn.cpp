#include "nn/onednn.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <c10/util/Optional.h>
#include <string>

namespace rmt::nn::detail::onednn {

namespace {

// The four operators, looked up once (absent: nullopt).
struct Operators {
  c10::optional<c10::OperatorHandle> linear, linear_pack, conv, conv_pack;
};

const Operators& operators() {
  static const Operators ops = [] {
    auto find = [](const char* name) { return c10::Dispatcher::singleton().findSchema({name, ""}); };
    return Operators{find("mkldnn::_linear_pointwise"), find("mkldnn::_reorder_linear_weight"),
                     find("mkldnn::_convolution_pointwise"),
                     find("aten::mkldnn_reorder_conv2d_weight")};
  }();
  return ops;
}

at::Tensor call(const c10::optional<c10::OperatorHandle>& op, torch::jit::Stack stack) {
  op->callBoxed(&stack);
  return stack.at(0).toTensor();
}

c10::IValue optional_tensor(const at::Tensor& t) { return t.defined() ? c10::IValue(t) : c10::IValue(); }
c10::IValue no_post_op_scalars() { return c10::IValue(c10::List<c10::optional<at::Scalar>>()); }
// attr "gelu" with algorithm "none": oneDNN's gelu_erf post-op (LibTorch's own mapping).
c10::IValue post_op(bool gelu) { return c10::IValue(std::string(gelu ? "gelu" : "none")); }
c10::IValue algorithm(bool gelu) { return gelu ? c10::IValue(std::string("none")) : c10::IValue(); }

}  // namespace

bool linear_available() { return operators().linear && operators().linear_pack; }

at::Tensor pack_linear(const at::Tensor& weight) {
  return call(operators().linear_pack, {weight, c10::IValue()});
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& bias,
                  bool gelu) {
  return call(operators().linear, {x, packed, optional_tensor(bias), post_op(gelu),
                                   no_post_op_scalars(), algorithm(gelu)});
}

bool conv_available() { return operators().conv && operators().conv_pack; }

at::Tensor pack_conv(const at::Tensor& weight, const ConvGeometry& g, at::IntArrayRef example) {
  return call(operators().conv_pack, {weight.to_mkldnn(), g.padding, g.stride, g.dilation, g.groups,
                               example.vec()});
}

at::Tensor conv(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& bias,
                const ConvGeometry& g, bool gelu) {
  return call(operators().conv, {x, packed, optional_tensor(bias), g.padding, g.stride, g.dilation,
                                 g.groups, post_op(gelu), no_post_op_scalars(), algorithm(gelu)});
}

}  // namespace rmt::nn::detail::onednn

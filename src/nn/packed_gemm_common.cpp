#include "nn/packed_gemm_common.h"

#include <ATen/ATen.h>

#include <c10/util/Exception.h>
#include <c10/util/accumulate.h>
#include <fmt/format.h>

#include "runtime/tensor_text.h"

namespace rmt::nn::detail {

bool prepare_linear_add(const char* who, const at::Tensor& x, const at::Tensor& bias,
                        at::Tensor& into) {
  auto rows = [](const at::Tensor& t) {
    return c10::multiply_integers(t.sizes().slice(0, t.dim() - 1));
  };
  const int64_t x_rows = x.dim() >= 1 ? rows(x) : 0;
  TORCH_CHECK(into.is_contiguous() && into.dim() >= 1 && x.dim() >= 1 && rows(into) == x_rows,
              fmt::format("{}: the tensor to add to must be contiguous with the {} rows of x {}; "
                          "got {}{}",
                          who, x_rows, text::shape(x.sizes()), text::shape(into.sizes()),
                          into.is_contiguous() ? "" : " (not contiguous)"));
  if (x.size(-1) == 0) {
    if (bias.defined()) into.add_(bias);
    return false;
  }
  return into.numel() > 0;
}

at::Tensor linear_without_inputs(const at::Tensor& x, int64_t out_features, const at::Tensor& bias,
                                 bool gelu) {
  auto sizes = x.sizes().vec();
  sizes.back() = out_features;
  auto y = at::zeros(sizes, x.options());
  if (bias.defined()) y.add_(bias);
  return gelu ? at::gelu(y) : y;
}

}  // namespace rmt::nn::detail

#include "rmt/nn/dwconv.h"

namespace rmt::nn {

DWConv2dImpl::DWConv2dImpl(int64_t dim, int64_t kernel_size, int64_t stride, int64_t padding) {
  conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(dim, dim, kernel_size)
                                                       .stride(stride)
                                                       .padding(padding)
                                                       .groups(dim)));
}

torch::Tensor DWConv2dImpl::forward(const torch::Tensor& x) {
  return conv->forward(x.permute({0, 3, 1, 2})).permute({0, 2, 3, 1});
}

}  // namespace rmt::nn

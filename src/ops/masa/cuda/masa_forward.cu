// CUDA forward kernels of rmt::masa_decomposed and rmt::masa_full (see masa_kernels.cuh).
#include <torch/library.h>

#include "ops/masa/cuda/masa_launch.cuh"

namespace rmt::ops::masa::cuda {
namespace {

at::Tensor masa_decomposed_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& sin, const at::Tensor& cos,
                                const at::Tensor& decay, double scale) {
  const auto p = make_cuda_params(q, k, v, sin, cos, decay, scale, "masa_decomposed");
  c10::cuda::CUDAGuard guard(p.q.device());
  const Dims& s = p.dims;
  auto out = at::empty(s.out_sizes(), p.q.options());
  if (out.numel() == 0) return out;
  // The row pass's output, the column pass's values: float, whatever the input type.
  auto o1 = at::empty(s.out_sizes(), p.q.options().dtype(at::kFloat));
  const auto rows = make_launch(s, row_pass(s), scale);
  const auto cols = make_launch(s, column_pass(s), scale);
  dispatch_type(p.q.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const auto in = inputs_of<T>(p);
    launch_forward(rows, in, in.v, o1.data_ptr<float>());
    launch_forward(cols, in, static_cast<const float*>(o1.data_ptr<float>()), out.data_ptr<T>());
  });
  return out;
}

at::Tensor masa_full_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const at::Tensor& sin, const at::Tensor& cos, const at::Tensor& decay,
                          double scale) {
  const auto p = make_cuda_params(q, k, v, sin, cos, decay, scale, "masa_full");
  c10::cuda::CUDAGuard guard(p.q.device());
  const Dims& s = p.dims;
  auto out = at::empty(s.out_sizes(), p.q.options());
  if (out.numel() == 0) return out;
  const auto full = make_launch(s, full_pass(s), scale);
  dispatch_type(p.q.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const auto in = inputs_of<T>(p);
    launch_forward(full, in, in.v, out.data_ptr<T>());
  });
  return out;
}

}  // namespace
}  // namespace rmt::ops::masa::cuda

TORCH_LIBRARY_IMPL(rmt, CUDA, m) {
  m.impl("masa_decomposed", TORCH_FN(rmt::ops::masa::cuda::masa_decomposed_cuda));
  m.impl("masa_full", TORCH_FN(rmt::ops::masa::cuda::masa_full_cuda));
}

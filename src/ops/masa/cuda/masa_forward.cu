// CUDA forward kernels of rmt::masa_decomposed and rmt::masa_full (see masa_kernels.cuh).
#include <torch/library.h>

#include "ops/masa/cuda/masa_launch.cuh"

namespace rmt::cuda_host {
namespace {

at::Tensor masa_decomposed_cuda(const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_,
                                const at::Tensor& sin_, const at::Tensor& cos_,
                                const at::Tensor& decay_, double scale) {
  ops::check_masa_inputs(q_, k_, v_, sin_, cos_, decay_);
  check_cuda_inputs(q_, v_, decay_, "masa_decomposed");
  c10::cuda::CUDAGuard guard(q_.device());
  const auto c = contiguous_all({&q_, &k_, &v_, &sin_, &cos_, &decay_});
  const Dims s = dims_of(c[0], c[2], c[5]);
  auto out = at::empty({s.b, s.h, s.w, s.n * s.dv}, c[0].options());
  if (out.numel() == 0) return out;
  // The row pass's output, the column pass's values: float, whatever the input type.
  auto o1 = at::empty({s.b, s.h, s.w, s.n * s.dv}, c[0].options().dtype(at::kFloat));
  const auto rows = make_launch(s, PassKind::kRows, scale);
  const auto cols = make_launch(s, PassKind::kColumns, scale);
  dispatch_type(c[0].scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    launch_forward<T, T, float>(rows, ptr<T>(c[0]), ptr<T>(c[1]), ptr<T>(c[2]), ptr<T>(c[3]),
                                ptr<T>(c[4]), ptr<T>(c[5]), mut_ptr<float>(o1));
    launch_forward<T, float, T>(cols, ptr<T>(c[0]), ptr<T>(c[1]), ptr<float>(o1), ptr<T>(c[3]),
                                ptr<T>(c[4]), ptr<T>(c[5]), mut_ptr<T>(out));
  });
  return out;
}

at::Tensor masa_full_cuda(const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_,
                          const at::Tensor& sin_, const at::Tensor& cos_, const at::Tensor& decay_,
                          double scale) {
  ops::check_masa_inputs(q_, k_, v_, sin_, cos_, decay_);
  check_cuda_inputs(q_, v_, decay_, "masa_full");
  c10::cuda::CUDAGuard guard(q_.device());
  const auto c = contiguous_all({&q_, &k_, &v_, &sin_, &cos_, &decay_});
  const Dims s = dims_of(c[0], c[2], c[5]);
  auto out = at::empty({s.b, s.h, s.w, s.n * s.dv}, c[0].options());
  if (out.numel() == 0) return out;
  const auto full = make_launch(s, PassKind::kFull, scale);
  dispatch_type(c[0].scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    launch_forward<T, T, T>(full, ptr<T>(c[0]), ptr<T>(c[1]), ptr<T>(c[2]), ptr<T>(c[3]),
                            ptr<T>(c[4]), ptr<T>(c[5]), mut_ptr<T>(out));
  });
  return out;
}

}  // namespace
}  // namespace rmt::cuda_host

TORCH_LIBRARY_IMPL(rmt, CUDA, m) {
  m.impl("masa_decomposed", TORCH_FN(rmt::cuda_host::masa_decomposed_cuda));
  m.impl("masa_full", TORCH_FN(rmt::cuda_host::masa_full_cuda));
}

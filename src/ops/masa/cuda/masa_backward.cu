// CUDA backward kernels of rmt::masa_decomposed and rmt::masa_full (see masa_kernels.cuh).
//
// Full: a dq kernel (one thread per query: recomputes lse and D = dO . O, then dq) and a dk/dv
// kernel (one thread per key, streaming the queries). Decomposed: the row pass is recomputed to get
// the column pass's values, then the column pass's dq / dk,dv (whose "dv" is the gradient of the
// row pass's output), then the row pass's, which add to dq and dk. No atomics: every output element
// has one owner thread per kernel. Gradients accumulate in float and are cast at the end.
#include <torch/library.h>

#include <tuple>

#include "ops/masa/cuda/masa_launch.cuh"

namespace rmt::cuda_host {
namespace {

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

void check_grad(const at::Tensor& grad, const at::Tensor& q, const Dims& s) {
  TORCH_CHECK(grad.sizes() == at::IntArrayRef({s.b, s.h, s.w, s.n * s.dv}),
              "MaSA backward: grad_out must have the output's shape ",
              at::IntArrayRef({s.b, s.h, s.w, s.n * s.dv}), ", found ", grad.sizes());
  TORCH_CHECK(grad.device() == q.device(), "MaSA backward: grad_out must be on q's device ",
              q.device(), ", found ", grad.device());
}

Grads masa_decomposed_backward_cuda(const at::Tensor& grad_, const at::Tensor& q_,
                                    const at::Tensor& k_, const at::Tensor& v_,
                                    const at::Tensor& sin_, const at::Tensor& cos_,
                                    const at::Tensor& decay_, double scale) {
  ops::check_masa_inputs(q_, k_, v_, sin_, cos_, decay_);
  check_cuda_inputs(q_, v_, decay_, "_masa_decomposed_backward");
  c10::cuda::CUDAGuard guard(q_.device());
  const Dims s = dims_of(q_, v_, decay_);
  check_grad(grad_, q_, s);
  const auto dtype = q_.scalar_type();
  const auto grad = grad_.to(dtype).contiguous();
  const auto c = contiguous_all({&q_, &k_, &v_, &sin_, &cos_, &decay_});
  const auto fopt = c[0].options().dtype(at::kFloat);
  if (c[0].numel() == 0 || c[2].numel() == 0)
    return {at::zeros_like(c[0]), at::zeros_like(c[0]), at::zeros_like(c[2])};
  auto o1 = at::empty({s.b, s.h, s.w, s.n * s.dv}, fopt);
  auto do1 = at::empty({s.b, s.h, s.w, s.n * s.dv}, fopt);
  auto dq = at::empty({s.b, s.h, s.w, s.n * s.d}, fopt);
  auto dk = at::empty({s.b, s.h, s.w, s.n * s.d}, fopt);
  auto dv = at::empty({s.b, s.h, s.w, s.n * s.dv}, fopt);
  auto stats = at::empty({2, s.b * s.n * s.l}, fopt);
  float* lse = mut_ptr<float>(stats);
  float* D = lse + s.b * s.n * s.l;
  const auto rows = make_launch(s, PassKind::kRows, scale);
  const auto cols = make_launch(s, PassKind::kColumns, scale);
  dispatch_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T *q = ptr<T>(c[0]), *k = ptr<T>(c[1]), *v = ptr<T>(c[2]), *sn = ptr<T>(c[3]),
            *cs = ptr<T>(c[4]), *decay = ptr<T>(c[5]), *g = ptr<T>(grad);
    launch_forward<T, T, float>(rows, q, k, v, sn, cs, decay, mut_ptr<float>(o1));
    const float* o1p = ptr<float>(o1);
    launch_dq<T, float, T>(cols, q, k, o1p, sn, cs, decay, g, mut_ptr<float>(dq), lse, D, false);
    launch_dkv<T, float, T>(cols, q, k, o1p, sn, cs, decay, g, lse, D, mut_ptr<float>(dk),
                            mut_ptr<float>(do1), false);
    const float* do1p = ptr<float>(do1);
    launch_dq<T, T, float>(rows, q, k, v, sn, cs, decay, do1p, mut_ptr<float>(dq), lse, D, true);
    launch_dkv<T, T, float>(rows, q, k, v, sn, cs, decay, do1p, lse, D, mut_ptr<float>(dk),
                            mut_ptr<float>(dv), true);
  });
  return {dq.to(dtype), dk.to(dtype), dv.to(dtype)};
}

Grads masa_full_backward_cuda(const at::Tensor& grad_, const at::Tensor& q_, const at::Tensor& k_,
                              const at::Tensor& v_, const at::Tensor& sin_, const at::Tensor& cos_,
                              const at::Tensor& decay_, double scale) {
  ops::check_masa_inputs(q_, k_, v_, sin_, cos_, decay_);
  check_cuda_inputs(q_, v_, decay_, "_masa_full_backward");
  c10::cuda::CUDAGuard guard(q_.device());
  const Dims s = dims_of(q_, v_, decay_);
  check_grad(grad_, q_, s);
  const auto dtype = q_.scalar_type();
  const auto grad = grad_.to(dtype).contiguous();
  const auto c = contiguous_all({&q_, &k_, &v_, &sin_, &cos_, &decay_});
  const auto fopt = c[0].options().dtype(at::kFloat);
  if (c[0].numel() == 0 || c[2].numel() == 0)
    return {at::zeros_like(c[0]), at::zeros_like(c[0]), at::zeros_like(c[2])};
  auto dq = at::empty({s.b, s.h, s.w, s.n * s.d}, fopt);
  auto dk = at::empty({s.b, s.h, s.w, s.n * s.d}, fopt);
  auto dv = at::empty({s.b, s.h, s.w, s.n * s.dv}, fopt);
  auto stats = at::empty({2, s.b * s.n * s.l}, fopt);
  float* lse = mut_ptr<float>(stats);
  float* D = lse + s.b * s.n * s.l;
  const auto full = make_launch(s, PassKind::kFull, scale);
  dispatch_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T *q = ptr<T>(c[0]), *k = ptr<T>(c[1]), *v = ptr<T>(c[2]), *sn = ptr<T>(c[3]),
            *cs = ptr<T>(c[4]), *decay = ptr<T>(c[5]), *g = ptr<T>(grad);
    launch_dq<T, T, T>(full, q, k, v, sn, cs, decay, g, mut_ptr<float>(dq), lse, D, false);
    launch_dkv<T, T, T>(full, q, k, v, sn, cs, decay, g, lse, D, mut_ptr<float>(dk),
                        mut_ptr<float>(dv), false);
  });
  return {dq.to(dtype), dk.to(dtype), dv.to(dtype)};
}

}  // namespace
}  // namespace rmt::cuda_host

TORCH_LIBRARY_IMPL(rmt, CUDA, m) {
  m.impl("_masa_decomposed_backward", TORCH_FN(rmt::cuda_host::masa_decomposed_backward_cuda));
  m.impl("_masa_full_backward", TORCH_FN(rmt::cuda_host::masa_full_backward_cuda));
}

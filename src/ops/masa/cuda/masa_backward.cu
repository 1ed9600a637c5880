// CUDA backward kernels of rmt::masa_decomposed and rmt::masa_full (see masa_kernels.cuh).
//
// Full: a dq kernel (one thread per query: recomputes lse and D = dO . O, then dq) and a dk/dv
// kernel (one thread per key, streaming the queries). Decomposed: the row pass is recomputed to get
// the column pass's values, then the column pass's dq / dk,dv (whose "dv" is the gradient of the
// row pass's output), then the row pass's, which add to dq and dk. No atomics: every output element
// has one owner thread per kernel. Gradients accumulate in float and are cast at the end.
#include <torch/library.h>

#include "ops/masa/cuda/masa_launch.cuh"
#include "ops/masa/masa_ops.h"

namespace rmt::ops::masa::cuda {
namespace {

// The float accumulators of one backward call: dq, dk, dv, and the softmax statistics (lse and
// D = dO . O per query) that the dq kernel leaves for the dk/dv kernel.
struct Accumulators {
  at::Tensor dq, dk, dv, stats;

  explicit Accumulators(const Params& p) {
    const auto fopt = p.q.options().dtype(at::kFloat);
    const Dims& s = p.dims;
    dq = at::empty(s.qk_sizes(), fopt);
    dk = at::empty(s.qk_sizes(), fopt);
    dv = at::empty(s.out_sizes(), fopt);
    stats = at::empty({2, s.b * s.n * s.l}, fopt);
  }
  float* lse() { return stats.data_ptr<float>(); }
  float* D() { return stats.data_ptr<float>() + stats.size(1); }
  Grads cast_to(at::ScalarType dtype) const { return {dq.to(dtype), dk.to(dtype), dv.to(dtype)}; }
};

Grads zero_grads(const Params& p) {
  return {at::zeros_like(p.q), at::zeros_like(p.q), at::zeros_like(p.v)};
}

Grads masa_decomposed_backward_cuda(const at::Tensor& grad_out, const at::Tensor& q,
                                    const at::Tensor& k, const at::Tensor& v,
                                    const at::Tensor& sin, const at::Tensor& cos,
                                    const at::Tensor& decay, double scale) {
  const auto p = make_cuda_params(q, k, v, sin, cos, decay, scale, "_masa_decomposed_backward");
  c10::cuda::CUDAGuard guard(p.q.device());
  const auto grad = checked_grad(grad_out, p);
  if (p.q.numel() == 0 || p.v.numel() == 0) return zero_grads(p);
  const Dims& s = p.dims;
  Accumulators acc(p);
  const auto fopt = p.q.options().dtype(at::kFloat);
  auto o1 = at::empty(s.out_sizes(), fopt);   // the row pass's output
  auto do1 = at::empty(s.out_sizes(), fopt);  // and its gradient
  const auto rows = make_launch(s, row_pass(s), scale);
  const auto cols = make_launch(s, column_pass(s), scale);
  dispatch_type(p.q.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const auto in = inputs_of<T>(p);
    const T* g = grad.data_ptr<T>();
    float* o1p = o1.data_ptr<float>();
    float* do1p = do1.data_ptr<float>();
    launch_forward(rows, in, in.v, o1p);
    launch_dq(cols, in, static_cast<const float*>(o1p), g, acc.dq.data_ptr<float>(), acc.lse(),
              acc.D(), false);
    launch_dkv(cols, in, static_cast<const float*>(o1p), g, acc.lse(), acc.D(),
               acc.dk.data_ptr<float>(), do1p, false);
    launch_dq(rows, in, in.v, static_cast<const float*>(do1p), acc.dq.data_ptr<float>(),
              acc.lse(), acc.D(), true);
    launch_dkv(rows, in, in.v, static_cast<const float*>(do1p), acc.lse(), acc.D(),
               acc.dk.data_ptr<float>(), acc.dv.data_ptr<float>(), true);
  });
  return acc.cast_to(p.q.scalar_type());
}

Grads masa_full_backward_cuda(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
                              const at::Tensor& v, const at::Tensor& sin, const at::Tensor& cos,
                              const at::Tensor& decay, double scale) {
  const auto p = make_cuda_params(q, k, v, sin, cos, decay, scale, "_masa_full_backward");
  c10::cuda::CUDAGuard guard(p.q.device());
  const auto grad = checked_grad(grad_out, p);
  if (p.q.numel() == 0 || p.v.numel() == 0) return zero_grads(p);
  Accumulators acc(p);
  const auto full = make_launch(p.dims, full_pass(p.dims), scale);
  dispatch_type(p.q.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const auto in = inputs_of<T>(p);
    const T* g = grad.data_ptr<T>();
    launch_dq(full, in, in.v, g, acc.dq.data_ptr<float>(), acc.lse(), acc.D(), false);
    launch_dkv(full, in, in.v, g, acc.lse(), acc.D(), acc.dk.data_ptr<float>(),
               acc.dv.data_ptr<float>(), false);
  });
  return acc.cast_to(p.q.scalar_type());
}

}  // namespace
}  // namespace rmt::ops::masa::cuda

TORCH_LIBRARY_IMPL(rmt, CUDA, m) {
  m.impl("_masa_decomposed_backward",
         TORCH_FN(rmt::ops::masa::cuda::masa_decomposed_backward_cuda));
  m.impl("_masa_full_backward", TORCH_FN(rmt::ops::masa::cuda::masa_full_backward_cuda));
}

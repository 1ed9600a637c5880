#pragma once
// Host side shared by masa_forward.cu and masa_backward.cu: the setup (masa_params.h) with what
// the CUDA kernels accept beyond it, the kernels' geometry of a pass, the dtype and head-dim
// dispatch, and the kernel launchers.

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <fmt/format.h>

#include <type_traits>

#include "ops/masa/cuda/masa_kernels.cuh"
#include "ops/masa/masa_params.h"

namespace rmt::ops::masa::cuda {

// make_params (check_masa_inputs, contiguous inputs, sizes), then what the CUDA kernels accept
// beyond that; `op` names the operator in the errors.
inline Params make_cuda_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& sin, const at::Tensor& cos,
                               const at::Tensor& decay, double scale, const char* op) {
  auto p = make_params(q, k, v, sin, cos, decay, scale);
  TORCH_CHECK(p.q.is_cuda(),
              fmt::format("{}: the CUDA kernel got tensors on {}", op, p.q.device().str()));
  const auto t = p.q.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kHalf || t == at::kBFloat16,
              fmt::format("{}: the CUDA kernels take float32, float16 or bfloat16, found {} (use "
                          "the reference chain, rmt::ops::reference, for float64 on the GPU)",
                          op, c10::toString(t)));
  TORCH_CHECK(p.dims.d <= kMaxGenericDim && p.dims.dv <= kMaxGenericDim,
              fmt::format("{}: the CUDA kernels take head dims up to {}, found d = {}, d_v = {}",
                          op, kMaxGenericDim, p.dims.d, p.dims.dv));
  TORCH_CHECK(p.dims.l < (int64_t{1} << 31),
              fmt::format("{}: H*W must be below 2^31, found {}", op, p.dims.l));
  return p;
}

struct Launch {
  Geometry g;
  int threads;
  int64_t blocks;
};

inline Launch make_launch(const Dims& s, const Pass& pass, double scale) {
  Geometry g{};
  g.L = s.l;
  g.heads = static_cast<int>(s.n);
  g.d = static_cast<int>(s.d);
  g.dv = static_cast<int>(s.dv);
  g.scale = static_cast<float>(scale);
  g.nseq = static_cast<int>(pass.nseq);
  g.len = static_cast<int>(pass.len);
  g.sbase = pass.sbase;
  g.tstride = pass.tstride;
  g.coord_w = static_cast<int>(pass.coord_w);
  // One thread per token; short rows get narrower blocks rather than idle threads.
  const int threads = g.len <= 32 ? 32 : (g.len <= 64 ? 64 : kMaxThreads);
  g.tiles = (g.len + threads - 1) / threads;
  const int64_t blocks = s.b * s.n * g.nseq * static_cast<int64_t>(g.tiles);
  TORCH_CHECK(blocks < (int64_t{1} << 31),
              fmt::format("MaSA CUDA: too many thread blocks ({})", blocks));
  return {g, threads, blocks};
}

// Calls f(T{}) with T the element type of the kernels for dtype t.
template <class F>
void dispatch_type(at::ScalarType t, F&& f) {
  switch (t) {
    case at::kFloat:
      return f(float{});
    case at::kHalf:
      return f(c10::Half{});
    case at::kBFloat16:
      return f(c10::BFloat16{});
    default:
      TORCH_CHECK(false, fmt::format("MaSA CUDA: unsupported dtype {}", c10::toString(t)));
  }
}

// Runs launch(DMAX, DVMAX, EXACT, grid, stream), the head dims as integral constants (the unrolled
// fast paths for 16 and 32, else the generic path), then checks the launch. Nothing for an empty
// grid.
template <class F>
void launch_for_dims(const Launch& ln, F&& launch) {
  if (ln.blocks == 0) return;
  const auto stream = at::cuda::getCurrentCUDAStream();
  const dim3 grid(static_cast<unsigned>(ln.blocks));
  using std::integral_constant;
  if (ln.g.d == 16 && ln.g.dv == 16) {
    launch(integral_constant<int, 16>{}, integral_constant<int, 16>{}, std::true_type{}, grid,
           stream);
  } else if (ln.g.d == 32 && ln.g.dv == 32) {
    launch(integral_constant<int, 32>{}, integral_constant<int, 32>{}, std::true_type{}, grid,
           stream);
  } else {
    launch(integral_constant<int, kMaxGenericDim>{}, integral_constant<int, kMaxGenericDim>{},
           std::false_type{}, grid, stream);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The kernels of masa_kernels.cuh over one pass: q, k, sin, cos and decay from `in`, the values
// from `v` (the inputs' v, or the row pass's float output for the column pass).

template <class T, class TV, class TO>
void launch_forward(const Launch& ln, const Inputs<T>& in, const TV* v, TO* out) {
  launch_for_dims(ln, [&](auto dm, auto dvm, auto exact, dim3 grid, cudaStream_t stream) {
    masa_forward_kernel<T, TV, TO, decltype(dm)::value, decltype(dvm)::value,
                        decltype(exact)::value>
        <<<grid, ln.threads, 0, stream>>>(in.q, in.k, v, in.sn, in.cs, in.decay, out, ln.g);
  });
}

template <class T, class TV, class TG>
void launch_dq(const Launch& ln, const Inputs<T>& in, const TV* v, const TG* dout, float* dq,
               float* lse, float* D, bool accumulate) {
  launch_for_dims(ln, [&](auto dm, auto dvm, auto exact, dim3 grid, cudaStream_t stream) {
    masa_dq_kernel<T, TV, TG, decltype(dm)::value, decltype(dvm)::value, decltype(exact)::value>
        <<<grid, ln.threads, 0, stream>>>(in.q, in.k, v, in.sn, in.cs, in.decay, dout, dq, lse,
                                          D, ln.g, accumulate);
  });
}

template <class T, class TV, class TG>
void launch_dkv(const Launch& ln, const Inputs<T>& in, const TV* v, const TG* dout,
                const float* lse, const float* D, float* dk, float* dv, bool accumulate) {
  launch_for_dims(ln, [&](auto dm, auto dvm, auto exact, dim3 grid, cudaStream_t stream) {
    masa_dkv_kernel<T, TV, TG, decltype(dm)::value, decltype(dvm)::value, decltype(exact)::value>
        <<<grid, ln.threads, 0, stream>>>(in.q, in.k, v, in.sn, in.cs, in.decay, dout, lse, D,
                                          dk, dv, ln.g, accumulate);
  });
}

}  // namespace rmt::ops::masa::cuda

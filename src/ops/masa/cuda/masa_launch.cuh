#pragma once
// Host side shared by masa_forward.cu and masa_backward.cu: checks, pass geometry, the dtype and
// head-dim dispatch, and the kernel launchers.

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <type_traits>
#include <vector>

#include "ops/masa/cuda/masa_kernels.cuh"
#include "rmt/ops/masa.h"

namespace rmt::cuda_host {

using cuda_kernels::Geometry;

struct Dims {
  int64_t b, h, w, n, d, dv, l;
};

inline Dims dims_of(const at::Tensor& q, const at::Tensor& v, const at::Tensor& decay) {
  const int64_t n = decay.size(0);
  return {q.size(0), q.size(1), q.size(2), n, q.size(3) / n, v.size(3) / n, q.size(1) * q.size(2)};
}

// What the CUDA kernels accept beyond check_masa_inputs.
inline void check_cuda_inputs(const at::Tensor& q, const at::Tensor& v, const at::Tensor& decay,
                              const char* op) {
  TORCH_CHECK(q.is_cuda(), op, ": the CUDA kernel got tensors on ", q.device());
  const auto t = q.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kHalf || t == at::kBFloat16, op,
              ": the CUDA kernels take float32, float16 or bfloat16, found ", t,
              " (use the reference chain, rmt::ops::reference, for float64 on the GPU)");
  const int64_t n = decay.size(0), d = q.size(3) / n, dv = v.size(3) / n;
  TORCH_CHECK(d <= cuda_kernels::kMaxGenericDim && dv <= cuda_kernels::kMaxGenericDim, op,
              ": the CUDA kernels take head dims up to ", cuda_kernels::kMaxGenericDim,
              ", found d = ", d, ", d_v = ", dv);
  TORCH_CHECK(q.size(1) * q.size(2) < (int64_t{1} << 31), op, ": H*W must be below 2^31, found ",
              q.size(1) * q.size(2));
}

inline std::vector<at::Tensor> contiguous_all(std::initializer_list<const at::Tensor*> ts) {
  std::vector<at::Tensor> out;
  for (const auto* t : ts) out.push_back(t->contiguous());
  return out;
}

enum class PassKind { kRows, kColumns, kFull };

struct Launch {
  Geometry g;
  int threads;
  int64_t blocks;
};

inline Launch make_launch(const Dims& s, PassKind kind, double scale) {
  Geometry g{};
  g.L = s.l;
  g.heads = static_cast<int>(s.n);
  g.d = static_cast<int>(s.d);
  g.dv = static_cast<int>(s.dv);
  g.scale = static_cast<float>(scale);
  switch (kind) {
    case PassKind::kRows:  // H sequences of W tokens, position y*W + t
      g.nseq = static_cast<int>(s.h);
      g.len = static_cast<int>(s.w);
      g.sbase = s.w;
      g.tstride = 1;
      g.coord_w = g.len;
      break;
    case PassKind::kColumns:  // W sequences of H tokens, position t*W + x
      g.nseq = static_cast<int>(s.w);
      g.len = static_cast<int>(s.h);
      g.sbase = 1;
      g.tstride = s.w;
      g.coord_w = g.len;
      break;
    case PassKind::kFull:  // one sequence of H*W tokens, 2-D coordinates
      g.nseq = 1;
      g.len = static_cast<int>(s.l);
      g.sbase = 0;
      g.tstride = 1;
      g.coord_w = static_cast<int>(s.w);
      break;
  }
  // One thread per token; short rows get narrower blocks rather than idle threads.
  const int threads = g.len <= 32 ? 32 : (g.len <= 64 ? 64 : cuda_kernels::kMaxThreads);
  g.tiles = (g.len + threads - 1) / threads;
  const int64_t blocks = s.b * s.n * g.nseq * static_cast<int64_t>(g.tiles);
  TORCH_CHECK(blocks < (int64_t{1} << 31), "MaSA CUDA: too many thread blocks (", blocks, ")");
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
      TORCH_CHECK(false, "MaSA CUDA: unsupported dtype ", t);
  }
}

// Calls f(DMAX, DVMAX, EXACT) as integral constants: the unrolled fast paths for 16 and 32, else
// the generic path.
template <class F>
void dispatch_dims(int d, int dv, F&& f) {
  using std::integral_constant;
  if (d == 16 && dv == 16)
    return f(integral_constant<int, 16>{}, integral_constant<int, 16>{}, std::true_type{});
  if (d == 32 && dv == 32)
    return f(integral_constant<int, 32>{}, integral_constant<int, 32>{}, std::true_type{});
  return f(integral_constant<int, cuda_kernels::kMaxGenericDim>{},
           integral_constant<int, cuda_kernels::kMaxGenericDim>{}, std::false_type{});
}

template <class T, class TV, class TO>
void launch_forward(const Launch& ln, const T* q, const T* k, const TV* v, const T* sn,
                    const T* cs, const T* decay, TO* out) {
  if (ln.blocks == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_dims(ln.g.d, ln.g.dv, [&](auto dm, auto dvm, auto exact) {
    cuda_kernels::masa_forward_kernel<T, TV, TO, decltype(dm)::value, decltype(dvm)::value,
                                      decltype(exact)::value>
        <<<static_cast<unsigned>(ln.blocks), ln.threads, 0, stream>>>(q, k, v, sn, cs, decay, out,
                                                                      ln.g);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

template <class T, class TV, class TG>
void launch_dq(const Launch& ln, const T* q, const T* k, const TV* v, const T* sn, const T* cs,
               const T* decay, const TG* dout, float* dq, float* lse, float* D, bool accumulate) {
  if (ln.blocks == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_dims(ln.g.d, ln.g.dv, [&](auto dm, auto dvm, auto exact) {
    cuda_kernels::masa_dq_kernel<T, TV, TG, decltype(dm)::value, decltype(dvm)::value,
                                 decltype(exact)::value>
        <<<static_cast<unsigned>(ln.blocks), ln.threads, 0, stream>>>(
            q, k, v, sn, cs, decay, dout, dq, lse, D, ln.g, accumulate);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

template <class T, class TV, class TG>
void launch_dkv(const Launch& ln, const T* q, const T* k, const TV* v, const T* sn, const T* cs,
                const T* decay, const TG* dout, const float* lse, const float* D, float* dk,
                float* dv, bool accumulate) {
  if (ln.blocks == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_dims(ln.g.d, ln.g.dv, [&](auto dm, auto dvm, auto exact) {
    cuda_kernels::masa_dkv_kernel<T, TV, TG, decltype(dm)::value, decltype(dvm)::value,
                                  decltype(exact)::value>
        <<<static_cast<unsigned>(ln.blocks), ln.threads, 0, stream>>>(
            q, k, v, sn, cs, decay, dout, lse, D, dk, dv, ln.g, accumulate);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

template <class T>
const T* ptr(const at::Tensor& t) {
  return reinterpret_cast<const T*>(t.data_ptr());
}
template <class T>
T* mut_ptr(at::Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}

}  // namespace rmt::cuda_host

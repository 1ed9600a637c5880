// CPU kernels of the MaSA operators (schemas in ../masa.cpp), registered for the CPU key.
//
// Nothing of size L x L is ever formed. Each (batch, row) / (batch, column) sequence of the
// decomposed operator (all heads), and each (batch, head, query block) of the full one, is one task
// of at::parallel_for. A task packs its tokens with the rotation (theta shift) and the scale
// applied on the fly, then runs the online-softmax kernel of attend.cpp, whose mask is
// decay * distance computed from coordinates, one score row of at most 128 keys at a time. float
// and double compute in their own precision (parity with the reference chain to rounding); half
// and bfloat16 compute in float.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

#include "ops/masa/cpu/attend.h"
#include "ops/masa/cpu/attend_lanes.h"
#include "ops/masa/masa_ops.h"
#include "ops/masa/masa_params.h"
#include "runtime/guided_parallel.h"

namespace rmt::ops::masa {
namespace {

// Tasks per at::parallel_for chunk so that a chunk is worth a thread hand-off (~64k flops).
int64_t grain_for(int64_t flops_per_task) {
  return std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, flops_per_task));
}

// theta shift of one head vector: out = x * cos + rotate_every_two(x) * sin, the pairs (a, b)
// rotating to (-b, a), with x multiplied by `scale` first when `scaled` (k). Same operations in
// the same order as the reference chain, so float and double round identically.
template <class T, class A>
inline void rotate(const T* x, const T* sn, const T* cs, bool scaled, A scale, int64_t d, A* out) {
  for (int64_t p = 0; p < d; p += 2) {
    A x0 = static_cast<A>(x[p]), x1 = static_cast<A>(x[p + 1]);
    if (scaled) {
      x0 = x0 * scale;
      x1 = x1 * scale;
    }
    out[p] = x0 * static_cast<A>(cs[p]) - x1 * static_cast<A>(sn[p]);
    out[p + 1] = x1 * static_cast<A>(cs[p + 1]) + x0 * static_cast<A>(sn[p + 1]);
  }
}

// Adjoint of rotate: the gradient with respect to x (times scale for k) of a gradient g with
// respect to the rotated vector, computed in A and stored as TO.
template <class A, class TO>
inline void unrotate(const A* g, const A* sn, const A* cs, A scale, int64_t d, TO* out) {
  for (int64_t p = 0; p < d; p += 2) {
    out[p] = static_cast<TO>((g[p] * cs[p] + g[p + 1] * sn[p + 1]) * scale);
    out[p + 1] = static_cast<TO>((g[p + 1] * cs[p + 1] - g[p] * sn[p]) * scale);
  }
}

// The sin and cos rows of grid position pos in the compute type A (unrotate's tables).
template <class T, class A>
inline void load_rotation(const Inputs<T>& in, int64_t pos, int64_t d, A* sn, A* cs) {
  std::copy_n(in.sn + pos * d, d, sn);
  std::copy_n(in.cs + pos * d, d, cs);
}

// D[r] = dO[r] . O[r] for the m rows of width dv: the softmax backward's term per query.
template <class A>
inline void row_dots(const A* dO, const A* o, int64_t m, int64_t dv, A* D) {
  for (int64_t r = 0; r < m; ++r) {
    A acc = 0;
    for (int64_t c = 0; c < dv; ++c) acc += dO[r * dv + c] * o[r * dv + c];
    D[r] = acc;
  }
}

// ------------------------------------------------------------------------------------------------
// Decomposed MaSA: two 1-D passes (masa_params.h: row_pass, column_pass). A task is one (batch,
// sequence) with all its heads: a token's channels of every head are contiguous, so the column
// pass's strided gathers use whole cache lines.

// One task's packed tokens, head-major: q (heads, len, d), kt (heads, d, ldp), v (heads, len, dv);
// the backward adds k, vt (heads, dv, ldp), the incoming gradient g, the recomputed o, lse, D and
// the gradients. ldp = padded(len): the transposed arrays' padding columns stay zero.
template <class A>
struct SeqBuffers {
  int64_t heads, len, ldp, d, dv;
  std::vector<A> q, k, kt, v, vt, g, o, lse, D, dq, dk, dv_, tmp, zeros, index, work;
  SeqBuffers(int64_t heads_, int64_t len_, int64_t d_, int64_t dvn, bool backward)
      : heads(heads_), len(len_), ldp(cpu::padded(len_)), d(d_), dv(dvn), q(heads_ * len_ * d_),
        kt(heads_ * d_ * ldp, A(0)), v(heads_ * len_ * dvn), o(len_ * dvn), lse(len_), tmp(d_),
        zeros(ldp, A(0)), index(ldp), work(cpu::workspace_size(d_, dvn)) {
    for (int64_t t = 0; t < ldp; ++t) index[t] = static_cast<A>(t);
    if (backward) {
      k.resize(heads * len * d);
      vt.resize(heads * dv * ldp, A(0));
      g.resize(heads * len * dv);
      D.resize(len);
      dq.resize(heads * len * d);
      dk.resize(heads * len * d);
      dv_.resize(heads * len * dv);
    }
  }
  // The 1-D problem of one head: every coordinate y is 0 and x is the token index.
  cpu::Problem<A> problem(int64_t head, A decay) const {
    cpu::Problem<A> p;
    p.q = q.data() + head * len * d;
    p.qy = zeros.data();
    p.qx = index.data();
    p.kt = kt.data() + head * d * ldp;
    p.ldk = ldp;
    p.k = k.empty() ? nullptr : k.data() + head * len * d;
    p.v = v.data() + head * len * dv;
    p.vt = vt.empty() ? nullptr : vt.data() + head * dv * ldp;
    p.ldvt = ldp;
    p.ky = zeros.data();
    p.kx = index.data();
    p.m = p.n = len;
    p.d = d;
    p.dv = dv;
    p.decay = decay;
    return p;
  }
};

// Packs the rotated q and k and the values (and, for the backward, the incoming gradient) of one
// sequence, all heads.
template <class T, class A, class TV, class TG>
void pack_sequence(const Inputs<T>& in, const Dims& s, const Pass& pass, int64_t b, int64_t seq,
                   A scale, const TV* vsrc, const TG* gsrc, SeqBuffers<A>& buf) {
  const int64_t d = s.d, dv = s.dv, len = pass.len, n = s.n, ldp = buf.ldp;
  const bool backward = gsrc != nullptr;
  for (int64_t t = 0; t < len; ++t) {
    const int64_t pos = pass.position(seq, t);
    const T* sn = in.sn + pos * d;
    const T* cs = in.cs + pos * d;
    for (int64_t head = 0; head < n; ++head) {
      const int64_t at_qk = s.offset(b, pos, head, d), at_v = s.offset(b, pos, head, dv);
      rotate(in.q + at_qk, sn, cs, false, A(1), d, buf.q.data() + (head * len + t) * d);
      A* kr = backward ? buf.k.data() + (head * len + t) * d : buf.tmp.data();
      rotate(in.k + at_qk, sn, cs, true, scale, d, kr);
      A* kt = buf.kt.data() + head * d * ldp + t;
      for (int64_t c = 0; c < d; ++c) kt[c * ldp] = kr[c];
      A* vr = buf.v.data() + (head * len + t) * dv;
      std::copy_n(vsrc + at_v, dv, vr);
      if (backward) {
        A* vt = buf.vt.data() + head * dv * ldp + t;
        for (int64_t c = 0; c < dv; ++c) vt[c * ldp] = vr[c];
        std::copy_n(gsrc + at_v, dv, buf.g.data() + (head * len + t) * dv);
      }
    }
  }
}

// lse_dst (optional): the log-sum-exp of every query's scores, at (b * heads + head) * L + pos.
template <class T, class A, class TV, class TO>
void pass_forward(const Inputs<T>& in, const Dims& s, const Pass& pass, A scale, const TV* vsrc,
                  TO* dst, A* lse_dst = nullptr) {
  const int64_t tasks = s.b * pass.nseq, len = pass.len, dv = s.dv;
  const int64_t cost = s.n * len * len * 2 * (s.d + s.dv);
  at::parallel_for(0, tasks, grain_for(cost), [&](int64_t begin, int64_t end) {
    SeqBuffers<A> buf(s.n, len, s.d, dv, false);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t seq = task % pass.nseq, b = task / pass.nseq;
      pack_sequence(in, s, pass, b, seq, scale, vsrc, static_cast<const T*>(nullptr), buf);
      for (int64_t head = 0; head < s.n; ++head) {
        const auto p = buf.problem(head, static_cast<A>(in.decay[head]));
        cpu::attend_forward(p, 0, len, buf.o.data(), lse_dst ? buf.lse.data() : nullptr,
                            buf.work.data());
        for (int64_t t = 0; t < len; ++t) {
          const int64_t pos = pass.position(seq, t);
          std::copy_n(buf.o.data() + t * dv, dv, dst + s.offset(b, pos, head, dv));
          if (lse_dst) lse_dst[(b * s.n + head) * s.l + pos] = buf.lse[t];
        }
      }
    }
  });
}

// Where the float forward's passes find a tensor's tokens: token (b, pos) of the grid (pos = y * W
// + x) at b * image + y * row + x * token, a head's channels at head * dim from there.
struct GridLayout {
  int64_t token, row, image, w;

  int64_t at(int64_t b, int64_t pos) const { return b * image + pos / w * row + pos % w * token; }
  // Elements between consecutive tokens of one of the pass's sequences.
  int64_t step(const Pass& pass) const {
    if (pass.tstride == w) return row;  // down a column (w = 1: the grid's only one)
    TORCH_INTERNAL_ASSERT(pass.tstride == 1 && (pass.len <= w || row == w * token));
    return token;  // along a row, or on across rows where they are dense
  }
};

// A (B, H, W, ...) tensor's tokens, `token` elements apart.
GridLayout dense_layout(const Dims& s, int64_t token) {
  return {token, s.w * token, s.l * token, s.w};
}

// The decomposed operator's own buffers (the rotated q and k, the row pass's output): each grid
// row one cache line longer than its tokens. Dense, RMT's rows are 14336 bytes apart at every
// stage (3.5 pages), so the 56 keys and values of a column that the column pass reads fall on 2
// of the L1 cache's 64 sets; padded, they spread over all of them. Measured (1 thread, Intel Xeon):
// the column pass alone at 56 x 56, 4 heads of 16, 0.85 -> 0.75 ms, at 28 x 28 0.18 -> 0.16; the
// whole operator on RMT-S's first stage 1.75 -> 1.71 ms.
GridLayout padded_layout(const Dims& s, int64_t token) {
  constexpr int64_t kRowPadding = 16;  // floats: one 64-byte line
  const int64_t row = s.w * token + kRowPadding;
  return {token, row, s.h * row, s.w};
}

// The float forward (attend_lanes.h) reads q rotated and k rotated and scaled (by scale * log2(e):
// the kernel's scores are in base 2), computed once for every pass, as rows 0 and 1 of a
// (2, B * image) tensor laid out as `layout` says (token: heads * d).
at::Tensor rotated_buffer(const Dims& s, const GridLayout& layout, const at::TensorOptions& aopt) {
  return at::empty({2, s.b * layout.image}, aopt);
}

// That tensor, filled in a pass of its own (the full operator's: one sequence of every token).
at::Tensor rotate_all(const Inputs<float>& in, const Dims& s, float scale,
                      const at::TensorOptions& aopt) {
  const int64_t d = s.d, nd = s.n * d;
  auto rotated = rotated_buffer(s, dense_layout(s, nd), aopt);
  float* rq = rotated.data_ptr<float>();
  float* rk = rq + s.b * s.l * nd;
  at::parallel_for(0, s.b * s.l, grain_for(8 * nd), [&](int64_t begin, int64_t end) {
    // Tokens [begin, end) of the flattened (batch, position) index, cut at image boundaries
    // (each image's positions start the sin / cos tables again).
    for (int64_t bt = begin; bt < end;) {
      const int64_t t = bt % s.l, count = std::min(end - bt, s.l - t);
      cpu::theta_shift_tokens(in.q + bt * s.qs, s.qs, in.sn + t * d, in.cs + t * d, count, s.n, d,
                              1.0f, rq + bt * nd, nd);
      cpu::theta_shift_tokens(in.k + bt * s.ks, s.ks, in.sn + t * d, in.cs + t * d, count, s.n, d,
                              scale * cpu::kLog2e, rk + bt * nd, nd);
      bt += count;
    }
  });
  return rotated;
}

// One pass on the lanes kernel, a task per (batch, sequence, head): the sequence's queries
// transposed across the lanes, its keys and values read in place (rows pass.tstride tokens
// apart), the outputs scattered back. rotated: rotate_all's, or, with `rotate_from` (a pass of
// consecutive tokens: the decomposed operator's row pass, which runs first), filled here: each
// task rotates its own tokens' q and k of its head first, so that its keys are read hot and no
// pass of its own does it (the column pass then reads what the row pass wrote), laid out as qkl
// says. vsrc: the values, laid out as vl says (the inputs' v: dense, Dims::vs apart; o1: padded);
// dst: the outputs, laid out as ol says. A pass whose tokens wrap onto several grid rows (the full
// operator's, coord_w < len) takes the 2-D mask on their (y, x).
void pass_forward_lanes(const at::Tensor& rotated, const GridLayout& qkl, const float* decay,
                        const Dims& s, const Pass& pass, const float* vsrc, const GridLayout& vl,
                        float* dst, const GridLayout& ol,
                        const Inputs<float>* rotate_from = nullptr, float scale = 1.0f) {
  TORCH_INTERNAL_ASSERT(!rotate_from || pass.tstride == 1);
  float* rq = rotated.data_ptr<float>();
  float* rk = rq + rotated.size(1);
  const int64_t tasks = s.b * pass.nseq * s.n, len = pass.len, d = s.d, dv = s.dv;
  const int64_t ldq = cpu::lanes_padded(len);
  std::vector<float> grid;  // y then x of every token, the padding lanes' too
  if (pass.coord_w < len) {
    grid.resize(2 * ldq);
    for (int64_t t = 0; t < ldq; ++t) {
      grid[t] = static_cast<float>(t / pass.coord_w);
      grid[ldq + t] = static_cast<float>(t % pass.coord_w);
    }
  }
  const int64_t cost = len * len * 2 * (d + dv);
  auto body = [&](int64_t begin, int64_t end) {
    std::vector<float> qt(d * ldq), ot(dv * ldq), work(cpu::lanes_workspace_size(len, len));
    const int64_t qk_step = qkl.step(pass), v_step = vl.step(pass), o_step = ol.step(pass);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t head = task % s.n, seq = task / s.n % pass.nseq, b = task / s.n / pass.nseq;
      const int64_t first = pass.position(seq, 0);
      if (rotate_from && (head == 0 || task == begin)) {
        // Tokens first .. first + len - 1 (their sin / cos rows are consecutive), for every head
        // of the sequence this thread takes: a token's heads are adjacent in memory, so that its
        // q and k come in whole runs of cache lines instead of one line a task.
        const Inputs<float>& in = *rotate_from;
        const int64_t token = b * s.l + first, rotated_at = qkl.at(b, first) + head * d;
        const int64_t heads = std::min(s.n - head, end - task);
        const float* sn = in.sn + first * d;
        const float* cs = in.cs + first * d;
        cpu::theta_shift_tokens(in.q + token * s.qs + head * d, s.qs, sn, cs, len, heads, d, 1.0f,
                                rq + rotated_at, qkl.token);
        cpu::theta_shift_tokens(in.k + token * s.ks + head * d, s.ks, sn, cs, len, heads, d,
                                scale * cpu::kLog2e, rk + rotated_at, qkl.token);
      }
      const int64_t qk_at = qkl.at(b, first) + head * d;
      cpu::transpose_to_lanes(rq + qk_at, qk_step, len, d, qt.data(), ldq);
      cpu::LaneProblem p;
      p.qt = qt.data();
      p.ldq = ldq;
      p.k = rk + qk_at;
      p.k_stride = qk_step;
      p.v = vsrc + vl.at(b, first) + head * dv;
      p.v_stride = v_step;
      p.m = p.n = len;
      p.d = d;
      p.dv = dv;
      p.decay = decay[head];
      if (!grid.empty()) {
        p.y = grid.data();
        p.x = grid.data() + ldq;
      }
      cpu::attend_forward_lanes(p, ot.data(), work.data());
      cpu::transpose_from_lanes(ot.data(), ldq, len, dv, dst + ol.at(b, first) + head * dv,
                                o_step);
    }
  };
  // Home shares that balance themselves (runtime/guided_parallel.h): each thread keeps to its
  // own rows of the grid, and the threads of a shared host run at uneven speeds.
  runtime::parallel_for_guided(0, tasks, grain_for(cost), 1, body);
}

// Both passes of the decomposed forward; the row pass's output in a buffer of the opmath type.
template <class T, class A>
void decomposed_forward(const Inputs<T>& in, const Dims& s, A scale, T* out,
                        const at::TensorOptions& aopt) {
  if constexpr (std::is_same_v<T, float>) {
    const GridLayout qkl = padded_layout(s, s.n * s.d), o1l = padded_layout(s, s.n * s.dv);
    const auto rotated = rotated_buffer(s, qkl, aopt);  // filled by the row pass, read by both
    const auto o1 = at::empty({s.b * o1l.image}, aopt);
    float* o1p = o1.data_ptr<float>();
    pass_forward_lanes(rotated, qkl, in.decay, s, row_pass(s), in.v, dense_layout(s, s.vs), o1p,
                       o1l, &in, scale);
    pass_forward_lanes(rotated, qkl, in.decay, s, column_pass(s), o1p, o1l, out,
                       dense_layout(s, s.n * s.dv));
  } else {
    const auto o1 = at::empty(s.out_sizes(), aopt);
    A* o1p = o1.data_ptr<A>();
    pass_forward(in, s, row_pass(s), scale, in.v, o1p);
    pass_forward(in, s, column_pass(s), scale, static_cast<const A*>(o1p), out);
  }
}

// Backward of one pass. The column pass (run first) stores its gradients of the rotated q and k
// in dqr / dkr; the row pass (finish = true) adds its own, applies the adjoint rotation and
// writes grad_q / grad_k. dv_dst receives the gradient of this pass's values. With o_saved and
// lse_saved (the pass's output and log-sum-exps from pass_forward) the forward is not recomputed.
template <class T, class A, class TV, class TG, class TD>
void pass_backward(const Inputs<T>& in, const Dims& s, const Pass& pass, A scale, const TV* vsrc,
                   const TG* gsrc, A* dqr, A* dkr, bool finish, T* grad_q, T* grad_k, TD* dv_dst,
                   const A* o_saved = nullptr, const A* lse_saved = nullptr) {
  const int64_t tasks = s.b * pass.nseq;
  const int64_t d = s.d, dv = s.dv, len = pass.len, n = s.n;
  const int64_t cost = n * len * len * 6 * (d + dv);
  at::parallel_for(0, tasks, grain_for(cost), [&](int64_t begin, int64_t end) {
    SeqBuffers<A> buf(n, len, d, dv, true);
    std::vector<A> sn(d), cs(d);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t seq = task % pass.nseq, b = task / pass.nseq;
      pack_sequence(in, s, pass, b, seq, scale, vsrc, gsrc, buf);
      for (int64_t head = 0; head < n; ++head) {
        const auto p = buf.problem(head, static_cast<A>(in.decay[head]));
        const A* gh = buf.g.data() + head * len * dv;
        A* dqh = buf.dq.data() + head * len * d;
        A* dkh = buf.dk.data() + head * len * d;
        A* dvh = buf.dv_.data() + head * len * dv;
        if (o_saved) {
          for (int64_t t = 0; t < len; ++t) {
            const int64_t pos = pass.position(seq, t);
            std::copy_n(o_saved + s.offset(b, pos, head, dv), dv, buf.o.data() + t * dv);
            buf.lse[t] = lse_saved[(b * n + head) * s.l + pos];
          }
        } else {
          cpu::attend_forward(p, 0, len, buf.o.data(), buf.lse.data(), buf.work.data());
        }
        row_dots(gh, buf.o.data(), len, dv, buf.D.data());
        cpu::attend_backward_dq(p, 0, len, gh, buf.lse.data(), buf.D.data(), dqh, buf.work.data());
        cpu::attend_backward_dkv(p, 0, len, gh, buf.lse.data(), buf.D.data(), dkh, dvh,
                                 buf.work.data());
      }
      for (int64_t t = 0; t < len; ++t) {
        const int64_t pos = pass.position(seq, t);
        if (finish) load_rotation(in, pos, d, sn.data(), cs.data());
        for (int64_t head = 0; head < n; ++head) {
          const int64_t at_qk = s.offset(b, pos, head, d);
          A* dq_t = buf.dq.data() + (head * len + t) * d;
          A* dk_t = buf.dk.data() + (head * len + t) * d;
          if (!finish) {
            std::copy_n(dq_t, d, dqr + at_qk);
            std::copy_n(dk_t, d, dkr + at_qk);
          } else {
            for (int64_t c = 0; c < d; ++c) {
              dq_t[c] += dqr[at_qk + c];
              dk_t[c] += dkr[at_qk + c];
            }
            unrotate(dq_t, sn.data(), cs.data(), A(1), d, grad_q + at_qk);
            unrotate(dk_t, sn.data(), cs.data(), scale, d, grad_k + at_qk);
          }
          std::copy_n(buf.dv_.data() + (head * len + t) * dv, dv,
                      dv_dst + s.offset(b, pos, head, dv));
        }
      }
    }
  });
}

// grad_q, grad_k, grad_v of one backward call, in the inputs' dtypes: zeros, and nothing to
// compute, when q or v has no elements.
struct GradOutputs {
  at::Tensor q, k, v;
  bool empty;

  explicit GradOutputs(const Params& p)
      : q(at::empty_like(p.q)), k(at::empty_like(p.q)), v(at::empty_like(p.v)),
        empty(p.q.numel() == 0 || p.v.numel() == 0) {
    if (empty) {
      q.zero_();
      k.zero_();
      v.zero_();
    }
  }
  Grads tuple() const { return {q, k, v}; }
};

// Options of the float or double buffers the kernels compute in (half and bfloat16: float).
at::TensorOptions opmath_options(const at::Tensor& q) {
  return q.options().dtype(q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
}

at::Tensor decomposed_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const at::Tensor& sin, const at::Tensor& cos, const at::Tensor& decay,
                          double scale) {
  // The float forward reads q, k and v through their token strides (decomposed_forward).
  const auto p = make_params(q, k, v, sin, cos, decay, scale,
                             /*keep_token_views=*/q.scalar_type() == at::kFloat);
  const Dims& s = p.dims;
  auto out = at::empty(s.out_sizes(), p.q.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.q.scalar_type(),
                                  "masa_decomposed_cpu", [&] {
    using A = at::opmath_type<scalar_t>;
    decomposed_forward(inputs_of<scalar_t>(p), s, static_cast<A>(scale), out.data_ptr<scalar_t>(),
                       opmath_options(p.q));
  });
  return out;
}

Grads decomposed_backward_cpu(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
                              const at::Tensor& v, const at::Tensor& sin, const at::Tensor& cos,
                              const at::Tensor& decay, double scale) {
  const auto p = make_params(q, k, v, sin, cos, decay, scale);
  const Dims& s = p.dims;
  const auto grad = checked_grad(grad_out, p);
  const GradOutputs out(p);
  if (out.empty) return out.tuple();
  const auto aopt = opmath_options(p.q);
  auto o1 = at::empty(s.out_sizes(), aopt);
  auto do1 = at::empty(s.out_sizes(), aopt);
  auto dqr = at::empty(s.qk_sizes(), aopt);
  auto dkr = at::empty(s.qk_sizes(), aopt);
  auto lse_rows = at::empty({s.b, s.n, s.l}, aopt);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.q.scalar_type(),
                                  "masa_decomposed_backward_cpu", [&] {
    using A = at::opmath_type<scalar_t>;
    const auto in = inputs_of<scalar_t>(p);
    const Pass rows = row_pass(s), cols = column_pass(s);
    const A sc = static_cast<A>(scale);
    A* o1p = o1.data_ptr<A>();
    A* do1p = do1.data_ptr<A>();
    A* lse1 = lse_rows.data_ptr<A>();
    // The row pass's output (the column pass's values) and statistics, recomputed once.
    pass_forward(in, s, rows, sc, in.v, o1p, lse1);
    pass_backward(in, s, cols, sc, static_cast<const A*>(o1p), grad.data_ptr<scalar_t>(),
                  dqr.data_ptr<A>(), dkr.data_ptr<A>(), false, static_cast<scalar_t*>(nullptr),
                  static_cast<scalar_t*>(nullptr), do1p);
    pass_backward(in, s, rows, sc, in.v, static_cast<const A*>(do1p), dqr.data_ptr<A>(),
                  dkr.data_ptr<A>(), true, out.q.data_ptr<scalar_t>(),
                  out.k.data_ptr<scalar_t>(), out.v.data_ptr<scalar_t>(),
                  static_cast<const A*>(o1p), static_cast<const A*>(lse1));
  });
  return out.tuple();
}

// ------------------------------------------------------------------------------------------------
// Full MaSA: one problem of L tokens per (batch, head), split into query blocks for the forward
// and the dq pass, and into key blocks for the dk/dv pass (each block owns its outputs: no
// atomics, no reduction across threads).

constexpr int64_t kQueryBlock = 32;
constexpr int64_t kKeyBlock = 64;
static_assert(kKeyBlock % cpu::kKeyPad == 0, "dk/dv key blocks must start on a padded vector");

// Per (batch, head) packed keys of the full problem, with the grid coordinates of every token.
// The transposed arrays and the coordinates run to lp = padded(l), the padding zero.
template <class A>
struct FullPack {
  at::Tensor q, k, kt, v, vt, g, coords;  // q, k, vt, g: backward only
  int64_t l, lp, d, dv;
  cpu::Problem<A> problem(int64_t bh, A decay) const {
    cpu::Problem<A> p;
    const A* xy = coords.data_ptr<A>();
    p.qy = p.ky = xy;
    p.qx = p.kx = xy + lp;
    p.q = q.defined() ? q.data_ptr<A>() + bh * l * d : nullptr;
    p.k = k.defined() ? k.data_ptr<A>() + bh * l * d : nullptr;
    p.kt = kt.data_ptr<A>() + bh * d * lp;
    p.ldk = lp;
    p.v = v.data_ptr<A>() + bh * l * dv;
    p.vt = vt.defined() ? vt.data_ptr<A>() + bh * dv * lp : nullptr;
    p.ldvt = lp;
    p.m = p.n = l;
    p.d = d;
    p.dv = dv;
    p.decay = decay;
    return p;
  }
};

template <class T, class A>
FullPack<A> pack_full(const Inputs<T>& in, const Dims& s, A scale, const at::TensorOptions& aopt,
                      const T* grad) {
  const bool backward = grad != nullptr;
  FullPack<A> pk;
  const int64_t bn = s.b * s.n, l = s.l, lp = cpu::padded(s.l), d = s.d, dv = s.dv;
  pk.l = l;
  pk.lp = lp;
  pk.d = d;
  pk.dv = dv;
  pk.kt = at::empty({bn, d, lp}, aopt);
  pk.kt.narrow(2, l, lp - l).zero_();
  pk.v = at::empty({bn, l, dv}, aopt);
  pk.coords = at::zeros({2, lp}, aopt);
  if (backward) {
    pk.q = at::empty({bn, l, d}, aopt);
    pk.k = at::empty({bn, l, d}, aopt);
    pk.vt = at::empty({bn, dv, lp}, aopt);
    pk.vt.narrow(2, l, lp - l).zero_();
    pk.g = at::empty({bn, l, dv}, aopt);
  }
  A* xy = pk.coords.template data_ptr<A>();
  const int64_t coord_w = full_pass(s).coord_w;
  for (int64_t t = 0; t < l; ++t) {
    xy[t] = static_cast<A>(t / coord_w);
    xy[lp + t] = static_cast<A>(t % coord_w);
  }
  A* kt = pk.kt.template data_ptr<A>();
  A* vv = pk.v.template data_ptr<A>();
  A* qq = backward ? pk.q.template data_ptr<A>() : nullptr;
  A* kk = backward ? pk.k.template data_ptr<A>() : nullptr;
  A* vt = backward ? pk.vt.template data_ptr<A>() : nullptr;
  A* gg = backward ? pk.g.template data_ptr<A>() : nullptr;
  at::parallel_for(0, s.b * l, grain_for(8 * s.n * (d + dv)), [&](int64_t begin, int64_t end) {
    std::vector<A> kr(d);
    for (int64_t bt = begin; bt < end; ++bt) {
      const int64_t b = bt / l, t = bt % l;
      for (int64_t head = 0; head < s.n; ++head) {
        const int64_t bh = b * s.n + head;
        const int64_t at_qk = s.offset(b, t, head, d), at_v = s.offset(b, t, head, dv);
        rotate(in.k + at_qk, in.sn + t * d, in.cs + t * d, true, scale, d, kr.data());
        for (int64_t c = 0; c < d; ++c) kt[(bh * d + c) * lp + t] = kr[c];
        std::copy_n(in.v + at_v, dv, vv + (bh * l + t) * dv);
        if (backward) {
          std::copy(kr.begin(), kr.end(), kk + (bh * l + t) * d);
          rotate(in.q + at_qk, in.sn + t * d, in.cs + t * d, false, A(1), d, qq + (bh * l + t) * d);
          for (int64_t c = 0; c < dv; ++c) vt[(bh * dv + c) * lp + t] = vv[(bh * l + t) * dv + c];
          std::copy_n(grad + at_v, dv, gg + (bh * l + t) * dv);
        }
      }
    }
  });
  return pk;
}

at::Tensor full_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const at::Tensor& sin, const at::Tensor& cos, const at::Tensor& decay,
                    double scale) {
  // The float forward reads q, k and v through their token strides (pass_forward_lanes). Its
  // scores of a block of queries (16 x L floats) go through the cache three times: measured (8
  // heads of 32, 1 thread) 1.9x the keys-across-the-lanes kernel up to L = 1024, 1.3x at 2025,
  // 0.9x at 4096 (a 1024x1024 input's stage 3), so up to kLanesMaxTokens.
  constexpr int64_t kLanesMaxTokens = 2048;
  const bool lanes = q.scalar_type() == at::kFloat && q.size(1) * q.size(2) <= kLanesMaxTokens;
  const auto p = make_params(q, k, v, sin, cos, decay, scale, /*keep_token_views=*/lanes);
  const Dims& s = p.dims;
  auto out = at::empty(s.out_sizes(), p.q.options());
  if (out.numel() == 0) return out;
  const auto aopt = opmath_options(p.q);
  if (lanes) {
    const auto in = inputs_of<float>(p);
    pass_forward_lanes(rotate_all(in, s, static_cast<float>(scale), aopt),
                       dense_layout(s, s.n * s.d), in.decay, s, full_pass(s), in.v,
                       dense_layout(s, s.vs), out.data_ptr<float>(), dense_layout(s, s.n * s.dv));
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.q.scalar_type(), "masa_full_cpu",
                                  [&] {
    using A = at::opmath_type<scalar_t>;
    const auto in = inputs_of<scalar_t>(p);
    const auto pk = pack_full<scalar_t, A>(in, s, static_cast<A>(scale), aopt, nullptr);
    const int64_t nqb = (s.l + kQueryBlock - 1) / kQueryBlock, d = s.d, dv = s.dv;
    scalar_t* dst = out.data_ptr<scalar_t>();
    const int64_t cost = kQueryBlock * s.l * 2 * (d + dv);
    at::parallel_for(0, s.b * s.n * nqb, grain_for(cost), [&](int64_t begin, int64_t end) {
      std::vector<A> qb(kQueryBlock * d), ob(kQueryBlock * dv), work(cpu::workspace_size(d, dv));
      for (int64_t task = begin; task < end; ++task) {
        const int64_t bh = task / nqb, b = bh / s.n, head = bh % s.n;
        const int64_t i0 = (task % nqb) * kQueryBlock, i1 = std::min(s.l, i0 + kQueryBlock);
        for (int64_t t = i0; t < i1; ++t)
          rotate(in.q + s.offset(b, t, head, d), in.sn + t * d, in.cs + t * d, false, A(1), d,
                 qb.data() + (t - i0) * d);
        auto prob = pk.problem(bh, static_cast<A>(in.decay[head]));
        prob.q = qb.data();  // the block's queries, rows 0..i1-i0
        prob.qy += i0;
        prob.qx += i0;
        prob.m = i1 - i0;
        cpu::attend_forward(prob, 0, i1 - i0, ob.data(), static_cast<A*>(nullptr), work.data());
        for (int64_t t = i0; t < i1; ++t)
          std::copy_n(ob.data() + (t - i0) * dv, dv, dst + s.offset(b, t, head, dv));
      }
    });
  });
  return out;
}

Grads full_backward_cpu(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
                        const at::Tensor& v, const at::Tensor& sin, const at::Tensor& cos,
                        const at::Tensor& decay, double scale) {
  const auto p = make_params(q, k, v, sin, cos, decay, scale);
  const Dims& s = p.dims;
  const auto grad = checked_grad(grad_out, p);
  const GradOutputs out(p);
  if (out.empty) return out.tuple();
  const auto aopt = opmath_options(p.q);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.q.scalar_type(),
                                  "masa_full_backward_cpu", [&] {
    using A = at::opmath_type<scalar_t>;
    const auto in = inputs_of<scalar_t>(p);
    const A sc = static_cast<A>(scale);
    const auto pk = pack_full<scalar_t, A>(in, s, sc, aopt, grad.data_ptr<scalar_t>());
    const int64_t d = s.d, dv = s.dv, l = s.l, bn = s.b * s.n;
    auto stats = at::empty({2, bn, l}, aopt);
    A* lse = stats.data_ptr<A>();
    A* D = lse + bn * l;
    const A* g_all = pk.g.template data_ptr<A>();
    scalar_t* gq = out.q.data_ptr<scalar_t>();
    scalar_t* gk = out.k.data_ptr<scalar_t>();
    scalar_t* gv = out.v.data_ptr<scalar_t>();

    // Query blocks: softmax statistics, D = dO . O, and dq.
    const int64_t nqb = (l + kQueryBlock - 1) / kQueryBlock;
    at::parallel_for(0, bn * nqb, grain_for(kQueryBlock * l * 4 * (d + dv)),
                     [&](int64_t begin, int64_t end) {
      std::vector<A> ob(kQueryBlock * dv), dqb(kQueryBlock * d), sn(d), cs(d),
          work(cpu::workspace_size(d, dv));
      for (int64_t task = begin; task < end; ++task) {
        const int64_t bh = task / nqb, b = bh / s.n, head = bh % s.n;
        const int64_t i0 = (task % nqb) * kQueryBlock, i1 = std::min(l, i0 + kQueryBlock);
        const auto prob = pk.problem(bh, static_cast<A>(in.decay[head]));
        A* lse_b = lse + bh * l + i0;
        A* D_b = D + bh * l + i0;
        const A* g_b = g_all + (bh * l + i0) * dv;
        cpu::attend_forward(prob, i0, i1, ob.data(), lse_b, work.data());
        row_dots(g_b, ob.data(), i1 - i0, dv, D_b);
        cpu::attend_backward_dq(prob, i0, i1, g_b, lse_b, D_b, dqb.data(), work.data());
        for (int64_t t = i0; t < i1; ++t) {
          load_rotation(in, t, d, sn.data(), cs.data());
          unrotate(dqb.data() + (t - i0) * d, sn.data(), cs.data(), A(1), d,
                   gq + s.offset(b, t, head, d));
        }
      }
    });

    // Key blocks: dk and dv over every query.
    const int64_t nkb = (l + kKeyBlock - 1) / kKeyBlock;
    at::parallel_for(0, bn * nkb, grain_for(kKeyBlock * l * 4 * (d + dv)),
                     [&](int64_t begin, int64_t end) {
      std::vector<A> dkb(kKeyBlock * d), dvb(kKeyBlock * dv), sn(d), cs(d),
          work(cpu::workspace_size(d, dv));
      for (int64_t task = begin; task < end; ++task) {
        const int64_t bh = task / nkb, b = bh / s.n, head = bh % s.n;
        const int64_t j0 = (task % nkb) * kKeyBlock, j1 = std::min(l, j0 + kKeyBlock);
        const auto prob = pk.problem(bh, static_cast<A>(in.decay[head]));
        cpu::attend_backward_dkv(prob, j0, j1, g_all + bh * l * dv, lse + bh * l, D + bh * l,
                                 dkb.data(), dvb.data(), work.data());
        for (int64_t t = j0; t < j1; ++t) {
          load_rotation(in, t, d, sn.data(), cs.data());
          unrotate(dkb.data() + (t - j0) * d, sn.data(), cs.data(), sc, d,
                   gk + s.offset(b, t, head, d));
          std::copy_n(dvb.data() + (t - j0) * dv, dv, gv + s.offset(b, t, head, dv));
        }
      }
    });
  });
  return out.tuple();
}

}  // namespace
}  // namespace rmt::ops::masa

TORCH_LIBRARY_IMPL(rmt, CPU, m) {
  m.impl("masa_decomposed", TORCH_FN(rmt::ops::masa::decomposed_cpu));
  m.impl("masa_full", TORCH_FN(rmt::ops::masa::full_cpu));
  m.impl("_masa_decomposed_backward", TORCH_FN(rmt::ops::masa::decomposed_backward_cpu));
  m.impl("_masa_full_backward", TORCH_FN(rmt::ops::masa::full_backward_cpu));
}

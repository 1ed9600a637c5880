#pragma once
// CUDA kernels of the MaSA operators (device code, included by masa_forward.cu / masa_backward.cu).
//
// Every kernel works on "sequences": the decomposed operator's row pass has H sequences of W
// tokens per (batch, head), its column pass W sequences of H tokens, the full operator one
// sequence of H*W tokens. Token t of sequence s sits at grid position pos = s*sbase + t*tstride,
// and every tensor (q, k, v, the intermediates, the outputs) stores (b, pos, head, c) at
// ((b*L + pos)*heads + head)*dim + c, so one kernel serves all three.
//
// One thread owns one query (forward, dq) or one key (dk/dv): its rotated vector and its
// accumulators live in registers, and the block streams the other side through shared memory in
// tiles, rotating k (and scaling it) from the sin/cos tables as it loads them. Softmax is the
// online (flash-attention) form in base 2: scores are carried multiplied by log2(e), so exp2f
// serves for exp. The mask decay * (|y_i - y_j| + |x_i - x_j|) is computed from coordinates;
// neither a mask nor a score matrix is ever written to memory. Accumulation is float32 for every
// input type.
//
// Head dims: exact fast paths (fully unrolled, everything in registers) for d = d_v = 16 and
// d = d_v = 32; a generic path for any even d, d_v <= kMaxGenericDim (loops not unrolled, so its
// per-thread arrays sit in local memory: correct, slower).

#include <cstdint>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

namespace rmt::ops::masa::cuda {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr int kMaxThreads = 128;
constexpr int kMaxGenericDim = 256;

struct Geometry {
  int64_t L;        // H * W
  int heads;
  int nseq;         // sequences per (batch, head)
  int len;          // tokens per sequence
  int64_t sbase;    // grid position of token t of sequence s: s * sbase + t * tstride
  int64_t tstride;
  int coord_w;      // token t sits at (t / coord_w, t % coord_w) for the mask (coord_w = len: 1-D)
  int tiles;        // thread blocks per sequence: ceil(len / blockDim.x)
  int d, dv;
  float scale;
};

// Tile of the other side (keys, or queries for dk/dv) held in shared memory: at most ~34 KB.
template <int DMAX>
struct TileSize {
  static constexpr int value = DMAX <= 64 ? 64 : (DMAX <= 128 ? 32 : 16);
};

// Rows padded by 4 floats: the cooperative loads (consecutive threads along a row) stay free of
// bank conflicts and a row still starts on 16 bytes.
template <int DMAX, int DVMAX>
struct SideTile {
  static constexpr int kRows = TileSize<(DMAX > DVMAX ? DMAX : DVMAX)>::value;
  float a[kRows][DMAX + 4];   // rotated k (or q * log2e)
  float b[kRows][DVMAX + 4];  // v (or dO)
  float y[kRows], x[kRows];   // coordinates
  float lse[kRows], D[kRows]; // softmax statistics (dk/dv only)
};

template <typename T>
__device__ __forceinline__ float ld(const T* p) {
  return static_cast<float>(*p);
}

__device__ __forceinline__ int64_t grid_pos(const Geometry& g, int seq, int t) {
  return seq * g.sbase + t * g.tstride;
}

__device__ __forceinline__ int64_t at_of(const Geometry& g, int b, int64_t pos, int head, int dim) {
  return ((b * g.L + pos) * g.heads + head) * dim;
}

// The token a thread owns: its query (forward, dq) or its key (dk/dv). blockIdx.x -> (batch,
// head, sequence, tile), tile fastest, and one token per thread of the tile. Threads past the end
// of the sequence take its last token (they still help load the tiles) and write nothing.
struct OwnToken {
  int b, head, seq, t;
  bool valid;   // false past the end of the sequence
  int64_t pos;  // grid position of token t
  float y, x;   // its coordinates for the mask
};

__device__ __forceinline__ OwnToken own_token(const Geometry& g) {
  int64_t r = blockIdx.x;
  const int tile = static_cast<int>(r % g.tiles);
  r /= g.tiles;
  OwnToken o;
  o.head = static_cast<int>(r % g.heads);
  r /= g.heads;
  o.seq = static_cast<int>(r % g.nseq);
  o.b = static_cast<int>(r / g.nseq);
  const int t = tile * blockDim.x + threadIdx.x;
  o.valid = t < g.len;
  o.t = o.valid ? t : g.len - 1;
  o.pos = grid_pos(g, o.seq, o.t);
  o.y = static_cast<float>(o.t / g.coord_w);
  o.x = static_cast<float>(o.t % g.coord_w);
  return o;
}

// The theta shift of elements (c, c+1) of x (scaled by `mul` first, as the reference scales k):
// (x0 cos0 - x1 sin0, x1 cos1 + x0 sin1).
template <typename T>
__device__ __forceinline__ float2 rotate_pair(const T* x, const T* sn, const T* cs, int c,
                                              float mul) {
  const float x0 = ld(x + c) * mul, x1 = ld(x + c + 1) * mul;
  return make_float2(x0 * ld(cs + c) - x1 * ld(sn + c), x1 * ld(cs + c + 1) + x0 * ld(sn + c + 1));
}

// Adjoint of the rotation for a gradient pair (g0, g1) of the rotated vector.
template <typename T>
__device__ __forceinline__ float2 unrotate_pair(float g0, float g1, const T* sn, const T* cs,
                                                int c) {
  return make_float2(g0 * ld(cs + c) + g1 * ld(sn + c + 1), g1 * ld(cs + c + 1) - g0 * ld(sn + c));
}

// Loops over channels unroll fully on the exact paths (register arrays need compile-time indices)
// and stay rolled on the generic one. Loops over the key chunk always unroll.
#define RMT_UNROLL _Pragma("unroll (EXACT ? 256 : 1)")
#define RMT_UNROLL_ALWAYS _Pragma("unroll")

// Loads tile rows [0, kRows) with tokens first + r of the sequence: rotated k (times `kmul`:
// scale for keys, log2(e) for queries) into `a`, `vsrc` rows into `b`, coordinates. Rows past the
// sequence end are zero (so that 0-weighted rows never contribute NaN).
template <int DMAX, int DVMAX, bool EXACT, typename T, typename TV>
__device__ __forceinline__ void load_tile(SideTile<DMAX, DVMAX>& s, const Geometry& g,
                                          const T* __restrict__ xsrc, const TV* __restrict__ vsrc,
                                          const T* __restrict__ sn, const T* __restrict__ cs,
                                          float kmul, int b, int head, int seq, int first) {
  constexpr int R = SideTile<DMAX, DVMAX>::kRows;
  const int d = EXACT ? DMAX : g.d, dv = EXACT ? DVMAX : g.dv, half = d / 2;
  for (int idx = threadIdx.x; idx < R * half; idx += blockDim.x) {
    const int r = idx / half, c = 2 * (idx - r * half), t = first + r;
    float2 v = make_float2(0.f, 0.f);
    if (t < g.len) {
      const int64_t pos = grid_pos(g, seq, t);
      v = rotate_pair(xsrc + at_of(g, b, pos, head, d), sn + pos * d, cs + pos * d, c, kmul);
    }
    s.a[r][c] = v.x;
    s.a[r][c + 1] = v.y;
  }
  for (int idx = threadIdx.x; idx < R * dv; idx += blockDim.x) {
    const int r = idx / dv, c = idx - r * dv, t = first + r;
    s.b[r][c] = t < g.len ? ld(vsrc + at_of(g, b, grid_pos(g, seq, t), head, dv) + c) : 0.f;
  }
  for (int r = threadIdx.x; r < R; r += blockDim.x) {
    const int t = first + r;
    s.y[r] = static_cast<float>(t / g.coord_w);
    s.x[r] = static_cast<float>(t % g.coord_w);
  }
}

// This thread's own token: rotated row of xsrc times `mul` into reg[0, d).
template <int DMAX, bool EXACT, typename T>
__device__ __forceinline__ void load_own(float (&reg)[DMAX], const Geometry& g,
                                         const T* __restrict__ xsrc, const T* __restrict__ sn,
                                         const T* __restrict__ cs, float mul, int b, int head,
                                         int64_t pos) {
  const int d = EXACT ? DMAX : g.d;
  const T* x = xsrc + at_of(g, b, pos, head, d);
  RMT_UNROLL
  for (int c = 0; c < d; c += 2) {
    const float2 v = rotate_pair(x, sn + pos * d, cs + pos * d, c, mul);
    reg[c] = v.x;
    reg[c + 1] = v.y;
  }
}

template <int DMAX, bool EXACT>
__device__ __forceinline__ float dot_row(const float (&reg)[DMAX], const float* row, int d) {
  float acc = 0.f;
  RMT_UNROLL
  for (int c = 0; c < (EXACT ? DMAX : d); ++c) acc += reg[c] * row[c];
  return acc;
}

// Online-softmax attention of this thread's query (qr: rotated q * log2e) over the whole
// sequence: acc = sum_j p_j v_j (unnormalized), m = max score, l = sum of p (base 2).
template <int DMAX, int DVMAX, bool EXACT, typename T, typename TV>
__device__ __forceinline__ void attend_row(SideTile<DMAX, DVMAX>& s, const Geometry& g,
                                           const float (&qr)[DMAX], float qy, float qx,
                                           float decay2, const T* __restrict__ k,
                                           const TV* __restrict__ v, const T* __restrict__ sn,
                                           const T* __restrict__ cs, int b, int head, int seq,
                                           float (&acc)[DVMAX], float& m, float& l) {
  constexpr int R = SideTile<DMAX, DVMAX>::kRows;
  constexpr int kChunk = 8;  // keys per online-softmax rescale
  const int d = EXACT ? DMAX : g.d, dv = EXACT ? DVMAX : g.dv;
  m = -INFINITY;
  l = 0.f;
  RMT_UNROLL
  for (int c = 0; c < dv; ++c) acc[c] = 0.f;
  for (int first = 0; first < g.len; first += R) {
    __syncthreads();  // the previous tile is consumed
    load_tile<DMAX, DVMAX, EXACT>(s, g, k, v, sn, cs, g.scale, b, head, seq, first);
    __syncthreads();
    const int nk = min(R, g.len - first);
    for (int j0 = 0; j0 < nk; j0 += kChunk) {
      float sc[kChunk];
      float cmax = -INFINITY;
      RMT_UNROLL_ALWAYS
      for (int u = 0; u < kChunk; ++u) {
        const int j = j0 + u;
        const float dist = fabsf(qy - s.y[j]) + fabsf(qx - s.x[j]);
        sc[u] = j < nk ? dot_row<DMAX, EXACT>(qr, s.a[j], d) + decay2 * dist : -INFINITY;
        cmax = fmaxf(cmax, sc[u]);
      }
      const float mnew = fmaxf(m, cmax);
      const float corr = exp2f(m - mnew);
      l *= corr;
      RMT_UNROLL
      for (int c = 0; c < dv; ++c) acc[c] *= corr;
      RMT_UNROLL_ALWAYS
      for (int u = 0; u < kChunk; ++u) {
        const float p = exp2f(sc[u] - mnew);
        l += p;
        const float* vr = s.b[j0 + u];
        RMT_UNROLL
        for (int c = 0; c < dv; ++c)
          acc[c] += p * vr[c];
      }
      m = mnew;
    }
  }
}

// ---- forward -----------------------------------------------------------------------------------

template <typename T, typename TV, typename TO, int DMAX, int DVMAX, bool EXACT>
__global__ void __launch_bounds__(kMaxThreads)
    masa_forward_kernel(const T* __restrict__ q, const T* __restrict__ k,
                        const TV* __restrict__ v, const T* __restrict__ sn,
                        const T* __restrict__ cs, const T* __restrict__ decay,
                        TO* __restrict__ out, Geometry g) {
  __shared__ SideTile<DMAX, DVMAX> s;
  const auto [b, head, seq, tq, valid, pos, qy, qx] = own_token(g);
  const int dv = EXACT ? DVMAX : g.dv;
  float qr[DMAX];
  load_own<DMAX, EXACT>(qr, g, q, sn, cs, kLog2e, b, head, pos);
  const float decay2 = ld(decay + head) * kLog2e;
  float acc[DVMAX], m, l;
  attend_row<DMAX, DVMAX, EXACT>(s, g, qr, qy, qx, decay2, k, v, sn, cs, b, head, seq, acc, m, l);
  if (!valid) return;
  const float inv = 1.f / l;
  TO* o = out + at_of(g, b, pos, head, dv);
  RMT_UNROLL
  for (int c = 0; c < dv; ++c)
    o[c] = static_cast<TO>(acc[c] * inv);
}

// ---- backward: dq (one thread per query) -------------------------------------------------------
// Recomputes the row's softmax statistics (lse, in base 2) and D = dO . O, stores both for the
// dk/dv kernel, then dq_rot = sum_j dS_j k_j with dS_j = P_j (dO . v_j - D), and writes the
// adjoint-rotated dq (added to dq_acc when `accumulate`: the decomposed operator's second pass).

template <typename T, typename TV, typename TG, int DMAX, int DVMAX, bool EXACT>
__global__ void __launch_bounds__(kMaxThreads)
    masa_dq_kernel(const T* __restrict__ q, const T* __restrict__ k, const TV* __restrict__ v,
                   const T* __restrict__ sn, const T* __restrict__ cs,
                   const T* __restrict__ decay, const TG* __restrict__ dout,
                   float* __restrict__ dq_acc, float* __restrict__ lse_out,
                   float* __restrict__ D_out, Geometry g, bool accumulate) {
  __shared__ SideTile<DMAX, DVMAX> s;
  constexpr int R = SideTile<DMAX, DVMAX>::kRows;
  const auto [b, head, seq, tq, valid, pos, qy, qx] = own_token(g);
  const int d = EXACT ? DMAX : g.d, dv = EXACT ? DVMAX : g.dv;
  float qr[DMAX];
  load_own<DMAX, EXACT>(qr, g, q, sn, cs, kLog2e, b, head, pos);
  const float decay2 = ld(decay + head) * kLog2e;

  float go[DVMAX];
  const TG* gsrc = dout + at_of(g, b, pos, head, dv);
  RMT_UNROLL
  for (int c = 0; c < dv; ++c) go[c] = ld(gsrc + c);

  float lse2, Dq;
  {
    float acc[DVMAX], m, l;
    attend_row<DMAX, DVMAX, EXACT>(s, g, qr, qy, qx, decay2, k, v, sn, cs, b, head, seq, acc, m,
                                   l);
    lse2 = m + log2f(l);
    const float inv = 1.f / l;
    Dq = 0.f;
    RMT_UNROLL
    for (int c = 0; c < dv; ++c)
      Dq += go[c] * (acc[c] * inv);
  }

  float gq[DMAX];
  RMT_UNROLL
  for (int c = 0; c < d; ++c) gq[c] = 0.f;
  for (int first = 0; first < g.len; first += R) {
    __syncthreads();
    load_tile<DMAX, DVMAX, EXACT>(s, g, k, v, sn, cs, g.scale, b, head, seq, first);
    __syncthreads();
    const int nk = min(R, g.len - first);
    for (int j = 0; j < nk; ++j) {
      const float dist = fabsf(qy - s.y[j]) + fabsf(qx - s.x[j]);
      const float p = exp2f(dot_row<DMAX, EXACT>(qr, s.a[j], d) + decay2 * dist - lse2);
      float dp = 0.f;
      RMT_UNROLL
      for (int c = 0; c < dv; ++c) dp += go[c] * s.b[j][c];
      const float ds = p * (dp - Dq);
      RMT_UNROLL
      for (int c = 0; c < d; ++c) gq[c] += ds * s.a[j][c];
    }
  }
  if (!valid) return;
  const int64_t stat = (static_cast<int64_t>(b) * g.heads + head) * g.L + pos;
  lse_out[stat] = lse2;
  D_out[stat] = Dq;
  float* dst = dq_acc + at_of(g, b, pos, head, d);
  RMT_UNROLL
  for (int c = 0; c < d; c += 2) {
    const float2 r = unrotate_pair(gq[c], gq[c + 1], sn + pos * d, cs + pos * d, c);
    dst[c] = accumulate ? dst[c] + r.x : r.x;
    dst[c + 1] = accumulate ? dst[c + 1] + r.y : r.y;
  }
}

// ---- backward: dk, dv (one thread per key) -----------------------------------------------------
// Streams the sequence's queries (rotated q * log2e, dO, lse, D) through shared memory:
// dv_j = sum_i P_ij dO_i, dk_rot_j = sum_i dS_ij q_i. dk is written adjoint-rotated and times
// scale (the gradient of the unscaled k), added to dk_acc when `accumulate`; dv to dv_out.

template <typename T, typename TV, typename TG, int DMAX, int DVMAX, bool EXACT>
__global__ void __launch_bounds__(kMaxThreads)
    masa_dkv_kernel(const T* __restrict__ q, const T* __restrict__ k, const TV* __restrict__ v,
                    const T* __restrict__ sn, const T* __restrict__ cs,
                    const T* __restrict__ decay, const TG* __restrict__ dout,
                    const float* __restrict__ lse_in, const float* __restrict__ D_in,
                    float* __restrict__ dk_acc, float* __restrict__ dv_out, Geometry g,
                    bool accumulate) {
  __shared__ SideTile<DMAX, DVMAX> s;
  constexpr int R = SideTile<DMAX, DVMAX>::kRows;
  const auto [b, head, seq, tk, valid, pos, ky, kx] = own_token(g);
  const int d = EXACT ? DMAX : g.d, dv = EXACT ? DVMAX : g.dv;
  float kr[DMAX], vr[DVMAX];
  load_own<DMAX, EXACT>(kr, g, k, sn, cs, g.scale, b, head, pos);
  const TV* vsrc = v + at_of(g, b, pos, head, dv);
  RMT_UNROLL
  for (int c = 0; c < dv; ++c) vr[c] = ld(vsrc + c);
  const float decay2 = ld(decay + head) * kLog2e;
  const int64_t stat0 = (static_cast<int64_t>(b) * g.heads + head) * g.L;

  float gk[DMAX], gv[DVMAX];
  RMT_UNROLL
  for (int c = 0; c < d; ++c) gk[c] = 0.f;
  RMT_UNROLL
  for (int c = 0; c < dv; ++c) gv[c] = 0.f;
  for (int first = 0; first < g.len; first += R) {
    __syncthreads();
    load_tile<DMAX, DVMAX, EXACT>(s, g, q, dout, sn, cs, kLog2e, b, head, seq, first);
    for (int r = threadIdx.x; r < R; r += blockDim.x) {
      const int tq = first + r;
      const int64_t stat = stat0 + grid_pos(g, seq, tq < g.len ? tq : 0);
      s.lse[r] = tq < g.len ? lse_in[stat] : INFINITY;  // P = 0 for rows past the end
      s.D[r] = tq < g.len ? D_in[stat] : 0.f;
    }
    __syncthreads();
    const int nq = min(R, g.len - first);
    for (int i = 0; i < nq; ++i) {
      const float dist = fabsf(s.y[i] - ky) + fabsf(s.x[i] - kx);
      // Same operation order as the query side: q2 . k + decay2 * dist.
      const float p = exp2f(dot_row<DMAX, EXACT>(kr, s.a[i], d) + decay2 * dist - s.lse[i]);
      float dp = 0.f;
      RMT_UNROLL
      for (int c = 0; c < dv; ++c)
        {
          dp += s.b[i][c] * vr[c];
          gv[c] += p * s.b[i][c];
        }
      const float ds = p * (dp - s.D[i]);
      RMT_UNROLL
      for (int c = 0; c < d; ++c) gk[c] += ds * s.a[i][c];
    }
  }
  if (!valid) return;
  float* dk = dk_acc + at_of(g, b, pos, head, d);
  RMT_UNROLL
  for (int c = 0; c < d; c += 2) {
    // gk holds sum dS q * log2e: back to natural units, then the adjoint of scale and rotation.
    const float2 r = unrotate_pair(gk[c] * kLn2, gk[c + 1] * kLn2, sn + pos * d, cs + pos * d, c);
    dk[c] = accumulate ? dk[c] + r.x * g.scale : r.x * g.scale;
    dk[c + 1] = accumulate ? dk[c + 1] + r.y * g.scale : r.y * g.scale;
  }
  float* dvo = dv_out + at_of(g, b, pos, head, dv);
  RMT_UNROLL
  for (int c = 0; c < dv; ++c) dvo[c] = gv[c];
}

#undef RMT_UNROLL
#undef RMT_UNROLL_ALWAYS

}  // namespace rmt::ops::masa::cuda

#pragma once
// CPU kernel core of the MaSA operators: decay-masked softmax attention of M packed queries
// against N packed keys, in float or double, without ever holding more than one
// (query) x (key block) row of scores. Plain C++ (no ATen) so that the hot loops can be compiled
// for AVX2 next to the baseline build and picked at run time (see attend.cpp).
//
// The score of query i and key j is  q_i . k_j + decay * (|qy_i - ky_j| + |qx_i - kx_j|),
// q and k already rotated (and k scaled). One-dimensional problems (the row and column passes of
// the decomposed operator) put every y at 0, so the mask reduces to decay * |x_i - x_j| with the
// same rounding as the reference's.

#include <cstdint>

namespace rmt::ops::cpu {

// Key-side arrays indexed by the key (kt and vt columns, ky, kx) must be readable, and the kt / vt
// columns zero, up to padded(N): the kernels then run whole SIMD vectors over every key block and
// mask the padding themselves.
constexpr int64_t kKeyPad = 8;
constexpr int64_t padded(int64_t n) { return (n + kKeyPad - 1) / kKeyPad * kKeyPad; }

// Tokens of one attention problem, packed by the caller (row-major, contiguous).
template <class A>
struct Problem {
  const A* q = nullptr;   // M x d
  const A* qy = nullptr;  // M: query coordinates
  const A* qx = nullptr;
  const A* kt = nullptr;  // d x ldk: key j is column j (vectorizing over keys needs this layout)
  int64_t ldk = 0;        // >= padded(N)
  const A* k = nullptr;   // N x d (backward only)
  const A* v = nullptr;   // N x dv
  const A* vt = nullptr;  // dv x ldvt (backward only)
  int64_t ldvt = 0;       // >= padded(N)
  const A* ky = nullptr;  // padded(N): key coordinates
  const A* kx = nullptr;
  int64_t m = 0, n = 0, d = 0, dv = 0;
  A decay = 0;
};

// Elements of scratch space each call below needs (one buffer per thread).
int64_t workspace_size(int64_t d, int64_t dv);

// Query range [i0, i1): o (dv per query) and lse (log-sum-exp of its scores) are written from row 0,
// i.e. row r holds query i0 + r. lse may be null.
template <class A>
void attend_forward(const Problem<A>& p, int64_t i0, int64_t i1, A* o, A* lse, A* work);

// dq (d per query) for the query range [i0, i1), from dO (dv per query), lse, and D = dO . O per
// query; dO, lse, D and dq all start at query i0.
// Softmax backward: dS_ij = P_ij (dO_i . v_j - D_i); dq_i = sum_j dS_ij k_j. Needs p.k and p.vt.
template <class A>
void attend_backward_dq(const Problem<A>& p, int64_t i0, int64_t i1, const A* dO, const A* lse,
                        const A* D, A* dq, A* work);

// dk (d per key) and dv (dv per key) for the key range [j0, j1) (j0 a multiple of kKeyPad),
// written from row 0, summing over all m queries; dO (m x dv), lse (m) and D (m) cover every query:
// dv_j = sum_i P_ij dO_i, dk_j = sum_i dS_ij q_i. Needs p.vt.
template <class A>
void attend_backward_dkv(const Problem<A>& p, int64_t j0, int64_t j1, const A* dO, const A* lse,
                         const A* D, A* dk, A* dv, A* work);

}  // namespace rmt::ops::cpu

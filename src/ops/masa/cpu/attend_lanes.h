#pragma once
// The float forward of both operators (the decomposed operator's 1-D passes, the full operator's
// one problem per head) with the queries across the vector lanes (attend.h puts the keys there). A
// block of queries (two vectors of 16 lanes with AVX-512, two of 8 with AVX2, one of 4 otherwise)
// takes every key of the sequence in turn: score vectors per key from broadcast key channels, the
// softmax's maximum and sum lane by lane (no horizontal reductions), and the values broadcast into
// accumulator vectors. Short sequences (RMT's rows and columns are 7 to 56 tokens at 224)
// then waste no lanes on padded keys, and keys and values are read in place (any row stride).
//
// Score of query i and key j: q_i . k_j + decay * |i - j| (the 1-D mask; q and k rotated, k
// scaled), or decay * (|y_i - y_j| + |x_i - x_j|) for the full operator's grid of tokens. The
// kernel takes powers of 2, not of e (cheaper to compute): scores are in base 2, so the caller
// scales k by kLog2e besides 1 / sqrt(d), and the kernel multiplies the decay by it.
// Plain C++ (no ATen); variants per ISA picked at run time (cpu_simd.h).

#include <cstdint>

namespace rmt::ops::cpu {

// Columns of qt and ot are read and written in whole vectors of this many queries (the widest
// variant's lane count): ldq must be a multiple of it, and the padding columns of qt readable. (A
// block of two vectors starts only where more than one vector's queries are left, so it ends
// within lanes_padded(m).)
constexpr int64_t kQueryLanes = 16;
// log2(e): a score s in base e is s * kLog2e in base 2 (e^s = 2^(s log2 e)).
constexpr float kLog2e = 1.44269504088896341f;
constexpr int64_t lanes_padded(int64_t m) { return (m + kQueryLanes - 1) / kQueryLanes * kQueryLanes; }

struct LaneProblem {
  const float* qt = nullptr;  // d x ldq: query i is column i
  int64_t ldq = 0;            // lanes_padded(m) or more
  const float* k = nullptr;   // key j: d floats at k + j * k_stride, scaled by kLog2e
  int64_t k_stride = 0;
  const float* v = nullptr;   // value j: dv floats at v + j * v_stride
  int64_t v_stride = 0;
  int64_t m = 0, n = 0, d = 0, dv = 0;  // queries i < m sit at x = i, keys j < n at x = j ...
  float decay = 0;
  // ... unless these are set (the full operator: queries and keys are the same tokens): token t at
  // (y[t], x[t]) and the mask decay * (|dy| + |dx|); both readable up to lanes_padded(m).
  const float* y = nullptr;
  const float* x = nullptr;
};

// Floats of scratch space attend_forward_lanes needs for m queries and n keys (one buffer per
// thread).
int64_t lanes_workspace_size(int64_t m, int64_t n);

// ot: dv x ldq, ot[c * ldq + i] = channel c of query i's output (columns past m: scratch).
void attend_forward_lanes(const LaneProblem& p, float* ot, float* work);

// The theta shift of `tokens` consecutive tokens of `heads` heads of d channels each (x and out:
// (tokens, heads, d)), with the sin and cos rows (tokens, d) of their positions:
// out = x' * cos + rotate_every_two(x') * sin with x' = x * scale (k's scale; 1 for q), the pairs
// (a, b) rotating to (-b, a): the reference chain's operations per element.
// x_stride, out_stride: elements between x's tokens and between out's (heads * d when contiguous).
void theta_shift_tokens(const float* x, int64_t x_stride, const float* sn, const float* cs,
                        int64_t tokens, int64_t heads, int64_t d, float scale, float* out,
                        int64_t out_stride);

// The moves between tokens (rows of channels) and the lanes layout, by vector transposes:
// dst[c * ldd + t] = src[t * src_stride + c] for t < rows, c < cols, and the columns
// [rows, lanes_padded(rows)) of those dst rows get 0 (ldd >= lanes_padded(rows)) ...
void transpose_to_lanes(const float* src, int64_t src_stride, int64_t rows, int64_t cols,
                        float* dst, int64_t ldd);
// ... and back: dst[t * dst_stride + c] = src[c * lds + t] for t < rows, c < cols (src readable
// up to column lanes_padded(rows)).
void transpose_from_lanes(const float* src, int64_t lds, int64_t rows, int64_t cols, float* dst,
                          int64_t dst_stride);

}  // namespace rmt::ops::cpu

#include "nn/ffn_rows.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "ops/depthwise_conv/cpu/depthwise_conv_kernel.h"
#include "ops/layer_norm/cpu/layer_norm_kernel.h"

namespace rmt::nn::detail {

namespace {

// Tokens of a chunk's GEMMs at least (RMT-S's first stage: 5 rows of 56).
constexpr int64_t kChunkTokens = 256;
// Rows of an image a thread takes at least; fewer (small images on several threads) and the
// layer-by-layer path runs instead: the halo rows that two threads both compute would cost more.
constexpr int64_t kMinRowsPerThread = 8;

struct Geometry {
  int64_t height, width, channels, hidden, pad, chunk;
};

struct Layers {
  at::Tensor packed1, packed2;
  RowGemm gemm1, gemm2;
  at::Tensor dw_weight, dw_bias;
  const float* bias1;
  const float* bias2;
};

// The LayerNorm before the FFN, when the pipeline applies it (ffn_rows_norm_add_).
struct RowNorm {
  const float* weight;
  const float* bias;
  float eps;
};

// Where one share of rows finds fc1's input rows: x itself, or (with a norm) x's rows normalized
// into `normed` as they are needed; rows of the image outside the share [row0, row1) (the conv's
// halo, which the neighbouring share overwrites) come normalized from `above` and `below`, taken
// before any thread wrote.
struct Fc1Inputs {
  const float* x;
  const RowNorm* norm;
  const float* above;  // rows row0 - pad .. row0 - 1
  const float* below;  // rows row1 .. row1 + pad - 1
  float* normed;       // room for the most rows one fc1 call takes
};

// fc1's input rows [from, to) of image b, the share being [row0, row1): a pointer to them, one
// row after the other.
const float* fc1_input(const Geometry& g, const Fc1Inputs& in, int64_t b, int64_t row0,
                       int64_t row1, int64_t from, int64_t to) {
  const int64_t token_row = g.width * g.channels;
  const float* x_rows = in.x + (b * g.height + from) * token_row;
  if (!in.norm) return x_rows;
  for (int64_t row = from; row < to; ++row) {
    float* dst = in.normed + (row - from) * token_row;
    if (row < row0) {
      std::copy_n(in.above + (row - (row0 - g.pad)) * token_row, token_row, dst);
    } else if (row >= row1) {
      std::copy_n(in.below + (row - row1) * token_row, token_row, dst);
    }
  }
  // The share's own rows, in one call (four rows at a time in the kernel).
  const int64_t own0 = std::max(from, row0), own1 = std::min(to, row1);
  if (own0 < own1) {
    ops::layer_norm::layer_norm_rows(in.x + (b * g.height + own0) * token_row, in.norm->weight,
                                     in.norm->bias, in.normed + (own0 - from) * token_row,
                                     g.channels, in.norm->eps, (own1 - own0) * g.width);
  }
  return in.normed;
}

// Output rows [row0, row1) of image b: chunk by chunk, the hidden rows of the next chunk (and the
// conv's halo) appended to `slab`, which keeps the last rows the conv still reads.
void run_rows(const Geometry& g, const Layers& l, const Fc1Inputs& in, float* into, int64_t b,
              int64_t row0, int64_t row1, float* slab, int64_t capacity, float* middle) {
  const int64_t row_size = g.width * g.hidden, token_row = g.width * g.channels;
  int64_t first = std::max<int64_t>(0, row0 - g.pad), next = first;  // slab: rows [first, next)
  for (int64_t r = row0; r < row1;) {
    const int64_t r1 = std::min(row1, r + g.chunk);
    const int64_t last = std::min(g.height, r1 + g.pad);  // the hidden rows needed: up to last
    if (last - first > capacity) {  // slide: the rows before r - pad are read no more
      const int64_t keep = std::max<int64_t>(0, r - g.pad);
      std::memmove(slab, slab + (keep - first) * row_size,
                   (next - keep) * row_size * sizeof(float));
      first = keep;
    }
    l.gemm1(fc1_input(g, in, b, row0, row1, next, last), (last - next) * g.width, g.channels,
            l.packed1, g.hidden, l.bias1, /*gelu=*/true, 0.0f, slab + (next - first) * row_size);
    next = last;
    ops::depthwise_conv::conv_add_self_rows_cpu(slab, first, g.height, g.width, g.hidden,
                                                l.dw_weight, l.dw_bias, r, r1, middle);
    l.gemm2(middle, (r1 - r) * g.width, g.hidden, l.packed2, g.channels, l.bias2,
            /*gelu=*/false, 1.0f, into + (b * g.height + r) * token_row);
    r = r1;
  }
}

bool is_float_cpu(const at::Tensor& t) {
  return !t.defined() || (t.scalar_type() == at::kFloat && t.device().is_cpu());
}

// Both entry points: into += fc2(...(fc1's input)), fc1's input x's rows or (norm) their norms.
bool rows_add(const LinearTensors& fc1, const LinearTensors& fc2,
              const at::Tensor& dw_weight, const at::Tensor& dw_bias, int64_t dw_padding,
              const at::Tensor& x, at::Tensor& into, const RowNorm* norm, PackedLinear* packed1,
              PackedLinear* packed2) {
  if (x.dim() != 4 || !x.is_contiguous() || !into.is_contiguous() || into.sizes() != x.sizes() ||
      !is_float_cpu(x) || !is_float_cpu(into) || x.numel() == 0) {
    return false;
  }
  // into written while x's rows (a neighbour's halo among them) are still read: not in x's memory
  // (with a norm, x is into, its halo rows taken before anyone writes).
  if (!norm && x.storage().is_alias_of(into.storage())) return false;
  const int64_t batch = x.size(0), channels = x.size(3), hidden = fc1.weight.size(0);
  if (fc1.weight.size(1) != channels || fc2.weight.size(1) != hidden ||
      fc2.weight.size(0) != channels || dw_weight.dim() != 4 || dw_weight.size(0) != hidden ||
      !is_float_cpu(fc1.bias) || !is_float_cpu(fc2.bias) || !is_float_cpu(dw_bias) ||
      (fc1.bias.defined() && !fc1.bias.is_contiguous()) ||
      (fc2.bias.defined() && !fc2.bias.is_contiguous()) ||
      !ops::depthwise_conv::cpu_kernel_applies(x, dw_weight, dw_bias, 1, dw_padding)) {
    return false;
  }
  const Geometry g{x.size(1), x.size(2), channels, hidden, dw_padding,
                   std::min(x.size(1), (kChunkTokens + x.size(2) - 1) / x.size(2))};
  // Several threads outside a region and fewer images than threads: each image's rows shared.
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  const int64_t shares = batch >= threads ? 1 : (threads + batch - 1) / batch;
  if (shares > 1 && g.height / shares < kMinRowsPerThread) return false;
  const int64_t tokens = batch * g.height * g.width;  // as the layer-by-layer path packs them
  const auto w1 = row_gemm_weight(fc1, tokens, packed1);
  const auto w2 = w1 ? row_gemm_weight(fc2, tokens, packed2) : std::nullopt;
  if (!w2) return false;  // (each layer's GEMM may differ: LinearRole in token_linear.h)
  const Layers l{w1->packed, w2->packed, w1->gemm, w2->gemm, dw_weight, dw_bias,
                 fc1.bias.defined() ? fc1.bias.data_ptr<float>() : nullptr,
                 fc2.bias.defined() ? fc2.bias.data_ptr<float>() : nullptr};
  const float* xp = x.data_ptr<float>();
  float* ip = into.data_ptr<float>();
  const int64_t row_size = g.width * g.hidden, token_row = g.width * channels;
  const int64_t span = (g.height + shares - 1) / shares;
  auto share_rows = [&](int64_t share) {
    const int64_t row0 = std::min(g.height, share * span);
    return std::make_pair(row0, std::min(g.height, row0 + span));
  };
  // With a norm and shared images: every share's halo rows, normalized before anyone writes
  // (pad rows above and below each share; rows outside the image are never read).
  const int64_t units = batch * shares, halo = g.pad * token_row;
  std::vector<float> halos(norm && shares > 1 ? 2 * units * halo : 0);
  if (!halos.empty()) {
    auto normalize = [&](int64_t b, int64_t row, float* dst) {
      ops::layer_norm::layer_norm_rows(xp + (b * g.height + row) * token_row, norm->weight,
                                       norm->bias, dst, channels, norm->eps, g.width);
    };
    for (int64_t unit = 0; unit < units; ++unit) {
      const int64_t b = unit / shares;
      const auto [row0, row1] = share_rows(unit % shares);
      float* above = halos.data() + 2 * unit * halo;
      float* below = above + halo;
      for (int64_t d = 0; d < g.pad && row0 < row1; ++d) {
        if (row0 - g.pad + d >= 0) normalize(b, row0 - g.pad + d, above + d * token_row);
        if (row1 + d < g.height) normalize(b, row1 + d, below + d * token_row);
      }
    }
  }
  at::parallel_for(0, units, 1, [&](int64_t begin, int64_t end) {
    // The slab holds a few chunks before it slides; the middle buffer one chunk; the normed
    // buffer the most rows one fc1 call takes (a chunk and the halo on both sides).
    const int64_t capacity = std::min(g.height, 4 * g.chunk + 2 * g.pad);
    const std::unique_ptr<float[]> slab(new float[capacity * row_size]);
    const std::unique_ptr<float[]> middle(new float[g.chunk * row_size]);
    const std::unique_ptr<float[]> normed(
        new float[norm ? (g.chunk + 2 * g.pad) * token_row : 0]);
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t b = unit / shares;
      const auto [row0, row1] = share_rows(unit % shares);
      const float* share_halo = halos.empty() ? nullptr : halos.data() + 2 * unit * halo;
      const Fc1Inputs in{xp, norm, share_halo, share_halo ? share_halo + halo : nullptr,
                         normed.get()};
      if (row0 < row1) run_rows(g, l, in, ip, b, row0, row1, slab.get(), capacity, middle.get());
    }
  });
  return true;
}

}  // namespace

bool ffn_rows_add_(const LinearTensors& fc1, const LinearTensors& fc2,
                   const at::Tensor& dw_weight, const at::Tensor& dw_bias, int64_t dw_padding,
                   const at::Tensor& x, at::Tensor& into, PackedLinear* packed1,
                   PackedLinear* packed2) {
  return rows_add(fc1, fc2, dw_weight, dw_bias, dw_padding, x, into, nullptr, packed1, packed2);
}

bool ffn_rows_norm_add_(const LinearTensors& fc1, const LinearTensors& fc2,
                        const at::Tensor& dw_weight, const at::Tensor& dw_bias, int64_t dw_padding,
                        const at::Tensor& norm_weight, const at::Tensor& norm_bias, double eps,
                        at::Tensor& x, PackedLinear* packed1, PackedLinear* packed2) {
  auto fits = [&](const at::Tensor& t) {
    return t.defined() && is_float_cpu(t) && t.dim() == 1 && t.is_contiguous() &&
           x.dim() == 4 && t.size(0) == x.size(3);
  };
  if (!fits(norm_weight) || !fits(norm_bias)) return false;
  const RowNorm norm{norm_weight.data_ptr<float>(), norm_bias.data_ptr<float>(),
                     static_cast<float>(eps)};
  return rows_add(fc1, fc2, dw_weight, dw_bias, dw_padding, x, x, &norm, packed1, packed2);
}

}  // namespace rmt::nn::detail

#include "nn/winograd_conv.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <memory>

#include "nn/brgemm_gemm.h"
#include "ops/cpu/bias_gelu.h"
#include "ops/cpu/cpu_simd.h"
#include "runtime/cpu_cache.h"
#include "runtime/guided_parallel.h"

#if RMT_HAVE_AVX2_VARIANT && defined(CPUBLAS_BRGEMM_F32F32F32)
#define RMT_WINOGRAD 1
#else
#define RMT_WINOGRAD 0
#endif

namespace rmt::nn::detail::winograd {

namespace {

// The transforms' vectors: 8 floats (AVX2); channel counts must be multiples of it.
constexpr int64_t kLanes = 8;

// Output pixels along a tile's side, and input pixels: F(4x4, 3x3) maps each 6x6 block of the input
// to a 4x4 block of the output through kPlanes products a channel pair.
constexpr int64_t kTile = 4, kSpan = kTile + 2, kPlanes = kSpan * kSpan;

struct Shape {
  int64_t batch, height, width, in, out, tiles_y, tiles_x;
  int64_t tiles() const { return batch * tiles_y * tiles_x; }
};

#if RMT_WINOGRAD
// A tile's image, tile row and tile column from its index (image-major, then row, then column).
struct Tile {
  int64_t b, ty, tx;
};
Tile tile_at(const Shape& s, int64_t t) {
  return {t / s.tiles_x / s.tiles_y, t / s.tiles_x % s.tiles_y, t % s.tiles_x};
}

// Tiles a block takes: its transformed inputs and products (kPlanes x tiles x channels each) in
// half of the L2, so that the GEMMs and the output transform read them from there.
int64_t tile_block(const Shape& s) {
  const int64_t per_tile = kPlanes * static_cast<int64_t>(sizeof(float)) * (s.in + s.out);
  return std::clamp<int64_t>(runtime::l2_cache_bytes() / 2 / per_tile, 16, 128);
}

using V = ops::cpu::VecN<float, 32>;

// Floats between two of a block's planes (transformed inputs or products): the plane, then a
// cache line more, so that the planes a tile reads or writes do not map to one set of L1 ways
// (planes a multiple of 4 KiB apart made the transforms 2x slower).
int64_t plane_stride(int64_t count, int64_t channels) { return count * channels + 16; }

// B^T d for one column (or row) d0..d5 of an input block: the rows of F(4x4, 3x3)'s B^T
// (interpolation points 0, +-1, +-2 and infinity).
RMT_ALWAYS_INLINE void input_rows(const V* d, V* e) {
  const V d4_d2 = d[4] - d[2];
  e[0] = 4.0f * d[0] - 5.0f * d[2] + d[4];
  e[1] = (d[3] + d[4]) - 4.0f * (d[1] + d[2]);
  e[2] = 4.0f * (d[1] - d[2]) + (d[4] - d[3]);
  e[3] = 2.0f * (d[3] - d[1]) + d4_d2;
  e[4] = 2.0f * (d[1] - d[3]) + d4_d2;
  e[5] = 4.0f * d[1] - 5.0f * d[3] + d[5];
}

// A^T m for one column (or row) m0..m5 of a tile's products.
RMT_ALWAYS_INLINE void output_rows(const V* m, V* o) {
  const V sum12 = m[1] + m[2], diff12 = m[1] - m[2], sum34 = m[3] + m[4], diff34 = m[3] - m[4];
  o[0] = m[0] + sum12 + sum34;
  o[1] = diff12 + 2.0f * diff34;
  o[2] = sum12 + 4.0f * sum34;
  o[3] = diff12 + 8.0f * diff34 + m[5];
}

// Tiles [t0, t0 + count) (index: image, tile row, tile column): B^T d B of each one's 6x6 input
// block d (zeros outside the image), into v[xi][tile][channel], xi = 6 * row + column.
RMT_TARGET_AVX2 RMT_FLATTEN void input_transform(const float* x, const Shape& s, int64_t t0,
                                                 int64_t count, float* v) {
  const int64_t C = s.in, plane = plane_stride(count, C);
  for (int64_t i = 0; i < count; ++i) {
    const auto [b, ty, tx] = tile_at(s, t0 + i);
    const int64_t y0 = kTile * ty - 1, x0 = kTile * tx - 1;
    bool row_in[kSpan], col_in[kSpan];
    int64_t row_offset[kSpan];
    for (int r = 0; r < kSpan; ++r) {
      row_in[r] = y0 + r >= 0 && y0 + r < s.height;
      col_in[r] = x0 + r >= 0 && x0 + r < s.width;
      row_offset[r] = ((b * s.height + y0 + r) * s.width + x0) * C;
    }
    for (int64_t c = 0; c < C; c += kLanes) {
      V e[kSpan][kSpan];  // B^T d: down each column
      for (int q = 0; q < kSpan; ++q) {
        V d[kSpan], col[kSpan];
        for (int r = 0; r < kSpan; ++r) {
          d[r] = row_in[r] && col_in[q]
                     ? ops::cpu::vload<float, V>(x + row_offset[r] + q * C + c)
                     : V{};
        }
        input_rows(d, col);
        for (int r = 0; r < kSpan; ++r) e[r][q] = col[r];
      }
      float* out = v + i * C + c;
      for (int r = 0; r < kSpan; ++r) {  // then (B^T d) B: along each row
        V row[kSpan];
        input_rows(e[r], row);
        for (int q = 0; q < kSpan; ++q) ops::cpu::vstore(out + (kSpan * r + q) * plane, row[q]);
      }
    }
  }
}

// The same tiles' products m[xi][tile][out channel] to A^T m A, each tile's 4x4 outputs (those
// inside the image) into y, channels-last.
RMT_TARGET_AVX2 RMT_FLATTEN void output_transform(const float* m, const Shape& s, int64_t t0,
                                                  int64_t count, float* y) {
  const int64_t K = s.out, plane = plane_stride(count, K), row = s.width * K;
  for (int64_t i = 0; i < count; ++i) {
    const auto [b, ty, tx] = tile_at(s, t0 + i);
    const int64_t rows = std::min(kTile, s.height - kTile * ty);
    const int64_t cols = std::min(kTile, s.width - kTile * tx);
    float* dst = y + ((b * s.height + kTile * ty) * s.width + kTile * tx) * K;
    for (int64_t k = 0; k < K; k += kLanes) {
      const float* src = m + i * K + k;
      V e[kTile][kSpan];  // A^T m: down each column
      for (int q = 0; q < kSpan; ++q) {
        V a[kSpan], col[kTile];
        for (int r = 0; r < kSpan; ++r) {
          a[r] = ops::cpu::vload<float, V>(src + (kSpan * r + q) * plane);
        }
        output_rows(a, col);
        for (int r = 0; r < kTile; ++r) e[r][q] = col[r];
      }
      for (int64_t r = 0; r < rows; ++r) {  // (A^T m) A
        V out[kTile];
        output_rows(e[r], out);
        for (int64_t q = 0; q < cols; ++q) ops::cpu::vstore(dst + r * row + q * K + k, out[q]);
      }
    }
  }
}

// Bias and GELU on the outputs of tiles [t0, t0 + count), while they are in cache: per image row,
// the run of pixels those tiles cover.
void bias_gelu(const Shape& s, int64_t t0, int64_t count, const float* bias, bool gelu,
               float* y) {
  for (int64_t t = t0; t < t0 + count;) {
    const auto [b, ty, tx] = tile_at(s, t);
    const int64_t run = std::min(t0 + count - t, s.tiles_x - tx);
    const int64_t x0 = kTile * tx, x1 = std::min(s.width, kTile * (tx + run));
    for (int64_t oy = kTile * ty; oy < std::min(s.height, kTile * (ty + 1)); ++oy) {
      ops::cpu::add_bias_gelu(y + ((b * s.height + oy) * s.width + x0) * s.out, x1 - x0, s.out,
                              bias, gelu);
    }
    t += run;
  }
}
#endif

}  // namespace

bool available() {
#if RMT_WINOGRAD
  return brgemm::available();
#else
  return false;
#endif
}

bool applies(const at::Tensor& x, int64_t out_channels) {
  return available() && x.dim() == 4 && x.device().is_cpu() && x.scalar_type() == at::kFloat &&
         x.is_contiguous(at::MemoryFormat::ChannelsLast) && x.size(1) > 0 &&
         x.size(1) % kLanes == 0 && out_channels > 0 && out_channels % kLanes == 0;
}

at::Tensor transform_weight(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 4 && weight.size(2) == 3 && weight.size(3) == 3,
              "winograd: expected a (out, in, 3, 3) weight, found ", weight.sizes());
  // F(4x4, 3x3)'s G (points 0, +-1, +-2 and infinity), in double.
  const auto g = at::tensor({1.0 / 4, 0.0, 0.0,             //
                             -1.0 / 6, -1.0 / 6, -1.0 / 6,  //
                             -1.0 / 6, 1.0 / 6, -1.0 / 6,   //
                             1.0 / 24, 1.0 / 12, 1.0 / 6,   //
                             1.0 / 24, -1.0 / 12, 1.0 / 6,  //
                             0.0, 0.0, 1.0},
                            at::TensorOptions().dtype(at::kDouble))
                     .reshape({kSpan, 3});
  const auto u = at::einsum("ia,kcab,jb->ijck", {g, weight.to(at::kDouble), g});
  return u.reshape({kPlanes, weight.size(1), weight.size(0)}).to(at::kFloat).contiguous();
}

at::Tensor conv3x3(const at::Tensor& x, const at::Tensor& transformed, const at::Tensor& bias,
                   bool gelu) {
  TORCH_CHECK(transformed.dim() == 3 && transformed.size(0) == kPlanes &&
                  transformed.scalar_type() == at::kFloat && transformed.is_contiguous(),
              "winograd: expected a transformed weight (", kPlanes, ", in, out), found ",
              transformed.sizes());
  const int64_t K = transformed.size(2);
  TORCH_CHECK(applies(x, K) && transformed.size(1) == x.size(1),
              "winograd: expected a channels-last float32 CPU input of ", transformed.size(1),
              " channels (a multiple of ", kLanes, "), found ", x.sizes());
  TORCH_CHECK(!bias.defined() || (bias.numel() == K && bias.is_contiguous() &&
                                  bias.scalar_type() == at::kFloat),
              "winograd: expected a bias of ", K, " floats");
  const Shape s{x.size(0),         x.size(2), x.size(3), x.size(1), K,
                (x.size(2) + kTile - 1) / kTile, (x.size(3) + kTile - 1) / kTile};
  auto y = at::empty({s.batch, K, s.height, s.width},
                     x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (y.numel() == 0) return y;
#if RMT_WINOGRAD
  const int64_t block = tile_block(s), tiles = s.tiles();
  const float* xp = x.data_ptr<float>();
  const float* up = transformed.data_ptr<float>();
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  // Blocks in home shares that balance themselves: the threads of a shared host run at uneven
  // speeds (runtime/guided_parallel.h).
  const int64_t blocks = (tiles + block - 1) / block;
  runtime::parallel_for_guided(0, blocks, 1, 1, [&](int64_t first, int64_t last) {
    const std::unique_ptr<float[]> v(new float[kPlanes * plane_stride(block, s.in)]);
    const std::unique_ptr<float[]> m(new float[kPlanes * plane_stride(block, s.out)]);
    for (int64_t blk = first; blk < last; ++blk) {
      const int64_t t0 = blk * block, count = std::min(block, tiles - t0);
      input_transform(xp, s, t0, count, v.get());
      for (int64_t xi = 0; xi < kPlanes; ++xi) {
        at::native::cpublas::brgemm(count, s.out, s.in, s.in, s.out, s.out, /*add_C=*/false,
                                    v.get() + xi * plane_stride(count, s.in),
                                    up + xi * s.in * s.out,
                                    m.get() + xi * plane_stride(count, s.out));
      }
      output_transform(m.get(), s, t0, count, yp);
      bias_gelu(s, t0, count, bp, gelu, yp);
    }
  });
#endif
  return y;
}

}  // namespace rmt::nn::detail::winograd

#include "nn/packed_gemm_common.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include <c10/util/Exception.h>
#include <c10/util/accumulate.h>
#include <fmt/format.h>

#include "runtime/guided_parallel.h"
#include "runtime/tensor_text.h"

namespace rmt::nn::detail {

namespace {

// Rows a thread takes at least when the threads split the rows; with fewer the columns are split.
// Either way in guided chunks (runtime/guided_parallel.h): on a shared host the threads' speeds
// differ from moment to moment, and a fixed half each left one waiting at the end.
constexpr int64_t kRowsPerThread = 64;
// Rows of a chunk at least, and its multiple where the rows are split in guided chunks: two of the
// AVX2 kernel's 6-row register tiles (a chunk streams the whole weight once; fewer rows would
// make that stream, not the FMAs, the limit).
constexpr int64_t kLeastRowsPerChunk = 12;
constexpr int64_t kRowAlign = 6;
// Multiply-adds below which a layer runs on the calling thread.
constexpr int64_t kSerialMacs = 1 << 16;

// out (m, n) = x's rows times the packed weight + beta * out, plus bias, then GELU; threaded.
void run_blocks(BlockGemm block, int64_t column_align, const at::Tensor& x,
                const at::Tensor& packed, int64_t n, const at::Tensor& bias, bool gelu, float beta,
                float* out) {
  const int64_t k = x.size(-1);
  const int64_t m = k > 0 ? x.numel() / k : 0;
  const float* a = x.data_ptr<float>();
  const float* b = packed.data_ptr<float>();
  const auto bc = bias.defined() ? bias.contiguous() : bias;
  const float* bp = bc.defined() ? bc.data_ptr<float>() : nullptr;
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  if (threads <= 1 || m * n * k < kSerialMacs) {
    block(a, m, k, b, n, 0, n, bp, gelu, beta, out);
  } else if (m >= threads * kRowsPerThread) {
    runtime::parallel_for_guided(0, m, kLeastRowsPerChunk, kRowAlign, [&](int64_t r0, int64_t r1) {
      block(a + r0 * k, r1 - r0, k, b, n, 0, n, bp, gelu, beta, out + r0 * n);
    });
  } else {
    // Few rows (the last stage, a head): the threads take groups of column_align columns, so that
    // each reads only its part of the weight.
    const int64_t groups = (n + column_align - 1) / column_align;
    runtime::parallel_for_guided(0, groups, 1, 1, [&](int64_t g0, int64_t g1) {
      block(a, m, k, b, n, g0 * column_align, std::min(n, g1 * column_align), bp, gelu, beta, out);
    });
  }
}

}  // namespace

at::Tensor linear_in_blocks(BlockGemm block, int64_t column_align, const at::Tensor& x,
                            const at::Tensor& packed, int64_t out_features, const at::Tensor& bias,
                            bool gelu) {
  if (x.size(-1) == 0) return linear_without_inputs(x, out_features, bias, gelu);
  auto sizes = x.sizes().vec();
  sizes.back() = out_features;
  auto y = at::empty(sizes, x.options());
  if (y.numel() > 0) {
    run_blocks(block, column_align, x, packed, out_features, bias, gelu, 0.0f,
               y.data_ptr<float>());
  }
  return y;
}

void linear_add_in_blocks(BlockGemm block, int64_t column_align, const char* who,
                          const at::Tensor& x, const at::Tensor& packed, const at::Tensor& bias,
                          at::Tensor& into) {
  if (prepare_linear_add(who, x, bias, into)) {
    run_blocks(block, column_align, x, packed, into.size(-1), bias, false, 1.0f,
               into.data_ptr<float>());
  }
}

bool prepare_linear_add(const char* who, const at::Tensor& x, const at::Tensor& bias,
                        at::Tensor& into) {
  auto rows = [](const at::Tensor& t) {
    return c10::multiply_integers(t.sizes().slice(0, t.dim() - 1));
  };
  const int64_t x_rows = x.dim() >= 1 ? rows(x) : 0;
  TORCH_CHECK(into.is_contiguous() && into.dim() >= 1 && x.dim() >= 1 && rows(into) == x_rows,
              fmt::format("{}: the tensor to add to must be contiguous with the {} rows of x {}; "
                          "got {}{}",
                          who, x_rows, text::shape(x.sizes()), text::shape(into.sizes()),
                          into.is_contiguous() ? "" : " (not contiguous)"));
  if (x.size(-1) == 0) {
    if (bias.defined()) into.add_(bias);
    return false;
  }
  return into.numel() > 0;
}

at::Tensor linear_without_inputs(const at::Tensor& x, int64_t out_features, const at::Tensor& bias,
                                 bool gelu) {
  auto sizes = x.sizes().vec();
  sizes.back() = out_features;
  auto y = at::zeros(sizes, x.options());
  if (bias.defined()) y.add_(bias);
  return gelu ? at::gelu(y) : y;
}

}  // namespace rmt::nn::detail

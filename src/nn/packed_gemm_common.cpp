#include "nn/packed_gemm_common.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include <c10/util/Exception.h>
#include <c10/util/accumulate.h>
#include <fmt/format.h>

#include "runtime/tensor_text.h"

namespace rmt::nn::detail {

namespace {

// Rows a thread takes at least when the threads split the rows; with fewer the columns are split.
constexpr int64_t kRowsPerThread = 64;
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
    const int64_t share = (m + threads - 1) / threads;
    at::parallel_for(0, m, share, [&](int64_t r0, int64_t r1) {
      block(a + r0 * k, r1 - r0, k, b, n, 0, n, bp, gelu, beta, out + r0 * n);
    });
  } else {
    // At least one aligned group of columns a share (n may be below the thread count).
    const int64_t share =
        std::max(column_align, (n / threads + column_align - 1) / column_align * column_align);
    const int64_t shares = (n + share - 1) / share;
    at::parallel_for(0, shares, 1, [&](int64_t s0, int64_t s1) {
      for (int64_t s = s0; s < s1; ++s) {
        block(a, m, k, b, n, s * share, std::min(n, (s + 1) * share), bp, gelu, beta, out);
      }
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

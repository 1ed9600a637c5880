#include "nn/mkl_gemm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <dlfcn.h>
#include <fmt/format.h>
#include <sys/mman.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <new>

#include "nn/packed_gemm_common.h"
#include "ops/cpu/bias_gelu.h"

namespace rmt::nn::detail::mkl {

namespace {

// CBLAS's enumerators (mkl_cblas.h), and MKL_INT of the LP64 interface.
using MklInt = int;
// Rows of a thread's share at least (MKL's microkernel takes several rows at a time).
constexpr int64_t kRowsPerTask = 16;
// Output floats of one block (512 KiB: a quarter of the L2 of a current server core); gemm_rows's
// blocks hold at most 1.5 times this, and at least 0.75 times where it splits an output.
constexpr int64_t kBlockFloats = 131072;
// Output floats of one task of the bias/GELU pass at least (64 KiB: worth a thread's start).
constexpr int64_t kEpilogueFloats = 16384;
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112, kBMatrix = 162, kPacked = 151;

struct Functions {
  size_t (*pack_get_size)(int identifier, MklInt m, MklInt n, MklInt k) = nullptr;
  void (*pack)(int layout, int identifier, int trans, MklInt m, MklInt n, MklInt k, float alpha,
               const float* src, MklInt ld, float* dest) = nullptr;
  void (*compute)(int layout, MklInt transa, MklInt transb, MklInt m, MklInt n, MklInt k,
                  const float* a, MklInt lda, const float* b, MklInt ldb, float beta, float* c,
                  MklInt ldc) = nullptr;
  bool complete() const { return pack_get_size && pack && compute; }
};

const Functions& functions() {
  static const Functions f = [] {
    Functions r;
    r.pack_get_size = reinterpret_cast<decltype(r.pack_get_size)>(
        dlsym(RTLD_DEFAULT, "cblas_sgemm_pack_get_size"));
    r.pack = reinterpret_cast<decltype(r.pack)>(dlsym(RTLD_DEFAULT, "cblas_sgemm_pack"));
    r.compute = reinterpret_cast<decltype(r.compute)>(dlsym(RTLD_DEFAULT, "cblas_sgemm_compute"));
    return r;
  }();
  return f;
}

MklInt mkl_int(int64_t v, const char* what) {
  TORCH_CHECK(v >= 0 && v <= INT_MAX,
              fmt::format("MKL linear: {} {} exceeds MKL's 32-bit sizes", what, v));
  return static_cast<MklInt>(v);
}

}  // namespace

bool available() { return functions().complete(); }

int64_t threads() { return at::in_parallel_region() ? 1 : at::get_num_threads(); }

at::Tensor pack_linear(const at::Tensor& weight, int64_t rows) {
  const auto& f = functions();
  const auto w = weight.contiguous();
  const MklInt n = mkl_int(w.size(0), "out_features"), k = mkl_int(w.size(1), "in_features");
  const MklInt m = mkl_int(std::max<int64_t>(rows, 1), "rows");
  if (n == 0 || k == 0) return at::empty({0}, at::TensorOptions().dtype(at::kByte));  // no products
  const size_t bytes = f.pack_get_size(kBMatrix, m, n, k);
  // MKL sizes the buffer for its largest blocking (several MB even for a small weight) and writes
  // a fraction of it: mapped pages are resident only once written.
  void* buffer = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (buffer == MAP_FAILED) throw std::bad_alloc();
  f.pack(kRowMajor, kBMatrix, kTrans, m, n, k, 1.0f, w.data_ptr<float>(), k,
         static_cast<float*>(buffer));
  return at::from_blob(
      buffer, {static_cast<int64_t>(bytes)}, [bytes](void* p) { munmap(p, bytes); },
      at::TensorOptions().dtype(at::kByte));
}

namespace {

// out (rows, n) = x's rows times the packed weight + beta * out, then bias and GELU (either
// optional).
void run(const at::Tensor& x, const at::Tensor& packed, MklInt n, const at::Tensor& bias,
         bool gelu, float beta, float* out) {
  const MklInt k = mkl_int(x.size(-1), "in_features");
  const MklInt m = mkl_int(k > 0 ? x.numel() / k : 0, "rows");
  const float* a = x.data_ptr<float>();
  const auto bc = bias.defined() ? bias.contiguous() : bias;
  const float* bp = bc.defined() ? bc.data_ptr<float>() : nullptr;
  // Several threads, outside a parallel region: MKL threads the GEMM itself (it splits the columns
  // where the rows are few, so that each thread streams part of the weight, not all of it), then
  // one pass applies bias and GELU. RMT-S batch 1 on 2 threads: +8% over splitting the rows.
  if (threads() > 1) {
    const int64_t grain = std::max<int64_t>(1, kEpilogueFloats / n);
    functions().compute(kRowMajor, kNoTrans, kPacked, m, n, k, a, k,
                        static_cast<const float*>(packed.data_ptr()), n, beta, out, n);
    if (bp || gelu) {
      at::parallel_for(0, m, grain, [&](int64_t r0, int64_t r1) {
        ops::cpu::add_bias_gelu(out + r0 * n, r1 - r0, n, bp, gelu);
      });
    }
    return;
  }
  // One thread, or inside a region (batch chunks side by side: MKL runs sequential there).
  at::parallel_for(0, m, kRowsPerTask, [&](int64_t r0, int64_t r1) {
    gemm_rows(a + r0 * k, r1 - r0, k, packed, n, bp, gelu, beta, out + r0 * n);
  });
}

}  // namespace

void gemm_rows(const float* a, int64_t m, int64_t k, const at::Tensor& packed, int64_t n,
               const float* bias, bool gelu, float beta, float* out) {
  const auto* b = static_cast<const float*>(packed.data_ptr());
  // Blocks of rows, each small enough that its bias and GELU are applied while it is in cache:
  // as many as the output holds kBlockFloats (rounded to the nearest), of equal rows, so that no
  // block is a short remainder (RMT-S's 196 x 768 layers ran as 170 + 26 rows; as one block they
  // were 5-7% faster on a Xeon, 1 thread: benchmarks/RESULTS.md, session 40).
  const int64_t count = std::max<int64_t>(
      1, std::llround(static_cast<double>(m) * static_cast<double>(n) / kBlockFloats));
  const int64_t block = std::max<int64_t>(kRowsPerTask, (m + count - 1) / count);
  for (int64_t i = 0; i < m; i += block) {
    const int64_t rows = std::min(block, m - i);
    float* c = out + i * n;
    // The bias is added after the GEMM while the block is in cache (in the GELU's pass where
    // there is one), not copied into C beforehand for MKL to accumulate onto (beta 1): with MKL
    // writing C without reading it, RMT-S's layer shapes ran 1-14% faster on a Xeon (AVX-512),
    // 1 thread (benchmarks/RESULTS.md, session 40).
    functions().compute(kRowMajor, kNoTrans, kPacked, static_cast<MklInt>(rows),
                        static_cast<MklInt>(n), static_cast<MklInt>(k), a + i * k,
                        static_cast<MklInt>(k), b, static_cast<MklInt>(n), beta, c,
                        static_cast<MklInt>(n));
    ops::cpu::add_bias_gelu(c, rows, n, bias, gelu);
  }
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                  const at::Tensor& bias, bool gelu) {
  const MklInt n = mkl_int(out_features, "out_features");
  if (x.size(-1) == 0) return linear_without_inputs(x, n, bias, gelu);
  auto sizes = x.sizes().vec();
  sizes.back() = n;
  auto y = at::empty(sizes, x.options());
  if (y.numel() > 0) run(x, packed, n, bias, gelu, 0.0f, y.data_ptr<float>());
  return y;
}

void linear_add_(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& bias,
                 at::Tensor& into) {
  if (prepare_linear_add("MKL linear_add_", x, bias, into)) {
    run(x, packed, mkl_int(into.size(-1), "out_features"), bias, false, 1.0f,
        into.data_ptr<float>());
  }
}

}  // namespace rmt::nn::detail::mkl

#include "nn/token_linear.h"

#include "nn/brgemm_gemm.h"
#include "nn/mkl_gemm.h"
#include "nn/onednn.h"
#include "runtime/env_choice.h"

#include <array>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

namespace rmt::nn::detail {

namespace {

// Whether the CPU is Intel's: MKL's GEMM takes its generic code paths on other vendors' CPUs.
bool intel_cpu() {
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
  return __builtin_cpu_is("intel");
#else
  return false;
#endif
}

// The packed GEMM of the float32 layers: on Intel CPUs MKL's where the LibTorch exports it
// (nn/mkl_gemm.h; one parallel region and ~2 us a call); elsewhere oneDNN's batch-reduce
// microkernel (nn/brgemm_gemm.h) where the LibTorch exports it, else oneDNN's linear (nn/onednn.h).
// On an AMD EPYC (Zen 4), RMT-S: oneDNN's linear 5-17% ahead of MKL's; the microkernel level with
// oneDNN's linear at batch 1 on 1 thread, 3% ahead at batch 16, ahead on 2 threads (RMT-T +17%)
// (it runs the FFN a few rows at a time and has no per-call set-up); peak RSS at batch 16 on 2
// threads 521 MB, oneDNN's linear's 493, MKL's 619. On a Xeon (sessions 19-24) MKL's was ahead of
// oneDNN's linear; the microkernel was not measured there. RMT_CPU_LINEAR=mkl|onednn|brgemm picks
// one where it is there.
enum class Gemm { kMkl, kOnednn, kBrgemm, kNone };
Gemm packed_gemm() {
  static const Gemm gemm = [] {
    const auto forced = runtime::env_choice("RMT_CPU_LINEAR", {"mkl", "onednn", "brgemm"},
                                            "MKL's on Intel CPUs, else oneDNN's microkernel");
    const bool by_vendor = !forced && !intel_cpu();
    if ((forced == "brgemm" || by_vendor) && brgemm::available()) return Gemm::kBrgemm;
    if ((forced == "onednn" || by_vendor) && onednn::linear_available()) return Gemm::kOnednn;
    if (mkl::available()) return Gemm::kMkl;
    if (brgemm::available()) return Gemm::kBrgemm;
    return onednn::linear_available() ? Gemm::kOnednn : Gemm::kNone;
  }();
  return gemm;
}

// Whether the packed GEMM takes the layer (float32 CPU, no gradient recorded).
bool layer_fits(const torch::nn::LinearImpl& linear) {
  const auto& w = linear.weight;
  return packed_gemm() != Gemm::kNone && !at::GradMode::is_enabled() &&
         w.scalar_type() == at::kFloat && w.device().is_cpu() &&
         (!linear.bias.defined() || linear.bias.scalar_type() == at::kFloat);
}

// Whether the packed GEMM takes the layer on x (contiguous, at least 2-D).
bool packed_fits(const torch::nn::LinearImpl& linear, const at::Tensor& x) {
  return layer_fits(linear) && x.device().is_cpu() && x.scalar_type() == at::kFloat &&
         x.numel() > 0;
}

// weight (out, in) packed for the GEMM, for `rows` rows (MKL blocks for them; the others ignore it).
at::Tensor pack(const at::Tensor& weight, int64_t rows) {
  switch (packed_gemm()) {
    case Gemm::kMkl: return mkl::pack_linear(weight, rows);
    case Gemm::kBrgemm: return brgemm::pack_linear(weight);
    default: return onednn::pack_linear(weight);
  }
}

// The layer's packed weight, when x can run there.
std::optional<at::Tensor> packed_weight(const torch::nn::LinearImpl& linear, const at::Tensor& x,
                                        PackedLinear* packed) {
  if (!packed || !packed_fits(linear, x)) return std::nullopt;
  const auto& w = linear.weight;
  return packed->get({&w}, [&] { return pack(w, x.numel() / x.size(-1)); });
}

// x (contiguous, at least 2-D) viewed as rows of its last dimension, through `run` (rows ->
// (rows, out_features)), and back to x's shape with out_features last.
template <class Run>
at::Tensor on_rows(const at::Tensor& x, int64_t out_features, Run run) {
  auto sizes = x.sizes().vec();
  sizes.back() = out_features;
  return run(x.view({-1, x.size(-1)})).view(sizes);
}

// x (contiguous, at least 2-D) times the packed (out, in) weight, plus bias; with `gelu`, the
// exact GELU of that, inside the GEMM's pass over the output. MKL's takes x's rows in place.
at::Tensor packed_linear(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                         const at::Tensor& bias, bool gelu = false) {
  if (packed_gemm() == Gemm::kMkl) return mkl::linear(x, packed, out_features, bias, gelu);
  if (packed_gemm() == Gemm::kBrgemm) return brgemm::linear(x, packed, out_features, bias, gelu);
  return on_rows(x, out_features, [&](const at::Tensor& rows) {
    return onednn::linear(rows, packed, bias, gelu);
  });
}

}  // namespace

torch::Tensor linear_tokens(const torch::nn::LinearImpl& linear, const torch::Tensor& x,
                            PackedLinear* packed) {
  const auto& w = linear.weight;
  if (x.dim() < 2 || !x.is_contiguous()) return at::linear(x, w, linear.bias);
  const auto weight = packed_weight(linear, x, packed);
  if (weight) return packed_linear(x, *weight, w.size(0), linear.bias);
  return on_rows(x, w.size(0),
                 [&](const at::Tensor& rows) { return at::linear(rows, w, linear.bias); });
}

std::optional<torch::Tensor> stacked_linear_tokens(const torch::nn::LinearImpl& a,
                                                   const torch::nn::LinearImpl& b,
                                                   const torch::nn::LinearImpl& c,
                                                   const torch::Tensor& x,
                                                   PackedLinearStack* cache) {
  if (!cache || x.dim() < 2 || !x.is_contiguous()) return std::nullopt;
  const int64_t in = x.size(-1);
  const std::array<const torch::nn::LinearImpl*, 3> layers{&a, &b, &c};
  for (const auto* layer : layers) {
    if (!packed_fits(*layer, x) || layer->weight.size(1) != in ||
        layer->bias.defined() != a.bias.defined()) {
      return std::nullopt;
    }
  }
  const auto kept = cache->get({&a.weight, &a.bias, &b.weight, &b.bias, &c.weight, &c.bias}, [&] {
    const auto weight = at::cat({a.weight, b.weight, c.weight});
    return PackedStack{pack(weight, x.numel() / x.size(-1)),
                       a.bias.defined() ? at::cat({a.bias, b.bias, c.bias}) : at::Tensor()};
  });
  if (!kept) return std::nullopt;
  const int64_t out = a.weight.size(0) + b.weight.size(0) + c.weight.size(0);
  return packed_linear(x, kept->packed, out, kept->bias);
}

void linear_tokens_add_(const torch::nn::LinearImpl& linear, const torch::Tensor& x,
                        torch::Tensor& into, PackedLinear* packed) {
  const auto& w = linear.weight;
  const bool adds = packed_gemm() == Gemm::kMkl || packed_gemm() == Gemm::kBrgemm;
  const bool fits = adds && x.dim() >= 2 && x.is_contiguous() &&
                    into.is_contiguous() && into.scalar_type() == at::kFloat &&
                    into.device().is_cpu() && into.dim() == x.dim() &&
                    into.sizes().slice(0, x.dim() - 1) == x.sizes().slice(0, x.dim() - 1) &&
                    into.size(-1) == w.size(0);
  const auto weight = fits ? packed_weight(linear, x, packed) : std::nullopt;
  if (!weight) {
    into.add_(linear_tokens(linear, x, packed));
    return;
  }
  if (packed_gemm() == Gemm::kMkl) {
    mkl::linear_add_(x, *weight, linear.bias, into);
  } else {
    brgemm::linear_add_(x, *weight, linear.bias, into);
  }
}

std::optional<torch::Tensor> linear_gelu_tokens(const torch::nn::LinearImpl& linear,
                                                const torch::Tensor& x, PackedLinear* packed) {
  if (x.dim() < 2 || !x.is_contiguous()) return std::nullopt;
  const auto weight = packed_weight(linear, x, packed);
  if (!weight) return std::nullopt;
  return packed_linear(x, *weight, linear.weight.size(0), linear.bias, /*gelu=*/true);
}

std::optional<RowGemmWeight> row_gemm_weight(const torch::nn::LinearImpl& linear, int64_t rows,
                                              PackedLinear* packed) {
  const Gemm gemm = packed_gemm();
  if (!packed || (gemm != Gemm::kMkl && gemm != Gemm::kBrgemm) || !layer_fits(linear)) {
    return std::nullopt;
  }
  const auto& w = linear.weight;
  const auto kept = packed->get({&w}, [&] { return pack(w, rows); });
  if (!kept) return std::nullopt;
  return RowGemmWeight{*kept, gemm == Gemm::kMkl ? &mkl::gemm_rows : &brgemm::gemm_rows};
}

const char* packed_gemm_name() {
  switch (packed_gemm()) {
    case Gemm::kMkl: return "MKL's packed GEMM";
    case Gemm::kOnednn: return "oneDNN's packed linear";
    case Gemm::kBrgemm: return "oneDNN's brgemm microkernel";
    default: return "none (at::linear)";
  }
}

}  // namespace rmt::nn::detail

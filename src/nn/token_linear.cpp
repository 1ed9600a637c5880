#include "nn/token_linear.h"

#include "nn/avx2_gemm.h"
#include "nn/brgemm_gemm.h"
#include "nn/mkl_gemm.h"
#include "nn/onednn.h"
#include "runtime/env_choice.h"

#include <sys/mman.h>

#include <array>
#include <new>

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

// What token_linear needs of a packed GEMM back-end; the last two are null where it has none
// (oneDNN's linear computes whole tensors only).
struct PackedGemm {
  const char* name;
  at::Tensor (*pack)(const at::Tensor& weight, int64_t rows);  // (out, in) weight, for `rows` rows
  // x (contiguous, at least 2-D) times the packed weight, plus bias, then (gelu) the exact GELU.
  at::Tensor (*linear)(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                       const at::Tensor& bias, bool gelu);
  void (*linear_add_)(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& bias,
                      at::Tensor& into);
  RowGemm gemm_rows;
  // The threads a call made here runs the GEMM on, and a weight packed here is packed for (null:
  // the packed weight does not depend on them).
  int64_t (*threads)();
};

// x (contiguous, at least 2-D) viewed as rows of its last dimension, through `run` (rows ->
// (rows, out_features)), and back to x's shape with out_features last.
template <class Run>
at::Tensor on_rows(const at::Tensor& x, int64_t out_features, Run run) {
  auto sizes = x.sizes().vec();
  sizes.back() = out_features;
  return run(x.view({-1, x.size(-1)})).view(sizes);
}

const PackedGemm kMkl{"MKL's packed GEMM", &mkl::pack_linear, &mkl::linear, &mkl::linear_add_,
                      &mkl::gemm_rows, &mkl::threads};
const PackedGemm kBrgemm{
    "oneDNN's brgemm microkernel",
    [](const at::Tensor& weight, int64_t) { return brgemm::pack_linear(weight); }, &brgemm::linear,
    &brgemm::linear_add_, &brgemm::gemm_rows, nullptr};
const PackedGemm kAvx2{
    "rmt's AVX2 GEMM kernel",
    [](const at::Tensor& weight, int64_t) { return avx2_gemm::pack_linear(weight); },
    &avx2_gemm::linear, &avx2_gemm::linear_add_, &avx2_gemm::gemm_rows, nullptr};
const PackedGemm kOnednn{
    "oneDNN's packed linear",
    [](const at::Tensor& weight, int64_t) { return onednn::pack_linear(weight); },
    [](const at::Tensor& x, const at::Tensor& packed, int64_t out_features, const at::Tensor& bias,
       bool gelu) {
      return on_rows(x, out_features, [&](const at::Tensor& rows) {
        return onednn::linear(rows, packed, bias, gelu);
      });
    },
    nullptr, nullptr, nullptr};

// The packed GEMM of the float32 layers (null: none, at::linear runs them): on Intel CPUs MKL's
// where the LibTorch exports it (nn/mkl_gemm.h; one parallel region and ~2 us a call); on other
// CPUs with AVX2 but no AVX-512 our own kernel (nn/avx2_gemm.h); elsewhere oneDNN's batch-reduce
// microkernel (nn/brgemm_gemm.h) where the LibTorch exports it, else oneDNN's linear
// (nn/onednn.h). On an AMD EPYC (Zen 4), RMT-S: oneDNN's linear 5-17% ahead of MKL's; the
// microkernel level with oneDNN's linear at batch 1 on 1 thread, 3% ahead at batch 16, ahead on 2
// threads (RMT-T +17%) (it runs the FFN a few rows at a time and has no per-call set-up); peak RSS
// at batch 16 on 2 threads 521 MB, oneDNN's linear's 493, MKL's 619. On an AMD EPYC Zen 3 (AVX2
// only) our kernel runs RMT-S's layers at 92-100 GFLOP/s on a core, oneDNN's microkernel at 73-94.
// On a Xeon (sessions 19-24) MKL's was ahead of oneDNN's linear; neither the microkernel nor our
// kernel was measured there. RMT_CPU_LINEAR=mkl|onednn|brgemm|avx2 picks one where it is there.
struct GemmChoice {
  const PackedGemm* gemm;  // null: at::linear
  bool forced;             // RMT_CPU_LINEAR named it
};

const GemmChoice& gemm_choice() {
  static const GemmChoice choice = []() -> GemmChoice {
    const auto forced =
        runtime::env_choice("RMT_CPU_LINEAR", {"mkl", "onednn", "brgemm", "avx2"},
                            "MKL's on Intel CPUs, else ours on AVX2-only CPUs, else oneDNN's");
    const bool by_vendor = !forced && !intel_cpu();
    auto pick = [&]() -> const PackedGemm* {
      if (forced == "avx2" && avx2_gemm::available()) return &kAvx2;
      if (by_vendor && avx2_gemm::preferred()) return &kAvx2;
      if ((forced == "brgemm" || by_vendor) && brgemm::available()) return &kBrgemm;
      if ((forced == "onednn" || by_vendor) && onednn::linear_available()) return &kOnednn;
      if (mkl::available()) return &kMkl;
      if (brgemm::available()) return &kBrgemm;
      if (onednn::linear_available()) return &kOnednn;
      return avx2_gemm::available() ? &kAvx2 : nullptr;
    };
    return {pick(), forced.has_value()};
  }();
  return choice;
}

const PackedGemm* packed_gemm() { return gemm_choice().gemm; }

// The packed GEMM of a layer of this role (LinearRole): packed_gemm(), except an FFN's narrow fc2
// where MKL's is the default and oneDNN's microkernel is there. RMT-S, Intel Xeon, whole forwards
// of the one and the other alternated in one process (benchmarks/RESULTS.md, session 47): batch 16
// 0.4-4.5% faster, batch 1 on 2 threads 0.8-2.6%, batch 1 on 1 thread level.
const PackedGemm* packed_gemm(LinearRole role, int64_t out_features) {
  const auto& choice = gemm_choice();
  if (role == LinearRole::kFfnOutput && choice.gemm == &kMkl && !choice.forced &&
      out_features < kNarrowOutputFeatures && brgemm::available()) {
    return &kBrgemm;
  }
  return choice.gemm;
}

// The packed GEMM of the layer whose packed-weight cache is `packed` (null: packed_gemm()).
const PackedGemm* gemm_for(const LinearTensors& linear, const PackedLinear* packed) {
  return packed ? packed_gemm(packed->role, linear.weight.size(0)) : packed_gemm();
}

// The threads a call made here runs the packed GEMM on, and a weight packed here is packed for (0:
// the packed weight does not depend on them). A call takes a kept weight packed for at least its
// threads: MKL runs a packed weight's GEMM on at most the threads it was packed on (a weight
// packed on 1 thread, at a first forward on 1 thread or inside the batch chunks' parallel region,
// ran every later 2-thread call on 1: RMT-S batch 1 on a Xeon, 77 against 53 ms a forward;
// benchmarks/RESULTS.md, session 41).
int64_t pack_threads(const PackedGemm* gemm) {
  return gemm && gemm->threads ? gemm->threads() : 0;
}

// Whether the packed GEMM takes the layer (float32 CPU, no gradient recorded).
bool layer_fits(const LinearTensors& linear) {
  const auto& w = linear.weight;
  return packed_gemm() != nullptr && !at::GradMode::is_enabled() &&
         w.scalar_type() == at::kFloat && w.device().is_cpu() &&
         (!linear.bias.defined() || linear.bias.scalar_type() == at::kFloat);
}

// Whether the packed GEMM takes the layer on x (contiguous, at least 2-D).
bool packed_fits(const LinearTensors& linear, const at::Tensor& x) {
  return layer_fits(linear) && x.device().is_cpu() && x.scalar_type() == at::kFloat &&
         x.numel() > 0;
}

// What a packed weight is packed from: linear.scaled_weight(), where it is a new tensor in pages
// of its own, returned to the system when freed. It lives only while the pack is made, during a
// first forward; a heap block of its size (up to a few MB a layer) freed among that forward's
// activations left the heap larger for good under the freed-memory policy of the tools
// (rmt/runtime/memory.h): RMT-B's peak RSS 727 -> 776 MiB, level with it under a 1 MiB mmap
// threshold (691 / 688).
at::Tensor weight_to_pack(const LinearTensors& linear) {
  const auto& w = linear.weight;
  if (!linear.row_scale.defined() || w.numel() == 0) return linear.scaled_weight();
  const size_t bytes = static_cast<size_t>(w.numel()) * w.element_size();
  void* pages = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (pages == MAP_FAILED) throw std::bad_alloc();
  auto out = at::from_blob(pages, w.sizes(), [bytes](void* p) { munmap(p, bytes); }, w.options());
  at::mul_out(out, w, linear.row_scale.reshape({-1, 1}));
  return out;
}

// A layer's packed weight and the GEMM it is packed for.
struct PackedLayer {
  const PackedGemm* gemm;
  at::Tensor weight;
};

// The layer's packed weight, when x can run there.
std::optional<PackedLayer> packed_weight(const LinearTensors& linear, const at::Tensor& x,
                                         PackedLinear* packed) {
  if (!packed || !packed_fits(linear, x)) return std::nullopt;
  const PackedGemm* gemm = gemm_for(linear, packed);
  const int64_t threads = pack_threads(gemm);
  const auto weight = packed->get_at_least({&linear.weight, &linear.row_scale}, threads, threads,
                                           [&] {
    return gemm->pack(weight_to_pack(linear), x.numel() / x.size(-1));
  });
  if (!weight) return std::nullopt;
  return PackedLayer{gemm, *weight};
}

}  // namespace

at::Tensor LinearTensors::scaled_weight() const {
  return row_scale.defined() ? weight * row_scale.reshape({-1, 1}) : weight;
}

torch::Tensor linear_tokens(const LinearTensors& linear, const torch::Tensor& x,
                            PackedLinear* packed) {
  if (x.dim() < 2 || !x.is_contiguous()) return at::linear(x, linear.scaled_weight(), linear.bias);
  const auto layer = packed_weight(linear, x, packed);
  const int64_t out = linear.weight.size(0);
  if (layer) return layer->gemm->linear(x, layer->weight, out, linear.bias, false);
  const auto w = linear.scaled_weight();
  return on_rows(x, out, [&](const at::Tensor& rows) { return at::linear(rows, w, linear.bias); });
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
  const int64_t threads = pack_threads(packed_gemm());
  const auto sources = {&a.weight, &a.bias, &b.weight, &b.bias, &c.weight, &c.bias};
  const auto kept = cache->get_at_least(sources, threads, threads, [&] {
    const auto weight = at::cat({a.weight, b.weight, c.weight});
    return PackedStack{packed_gemm()->pack(weight, x.numel() / x.size(-1)),
                       a.bias.defined() ? at::cat({a.bias, b.bias, c.bias}) : at::Tensor()};
  });
  if (!kept) return std::nullopt;
  const int64_t out = a.weight.size(0) + b.weight.size(0) + c.weight.size(0);
  return packed_gemm()->linear(x, kept->packed, out, kept->bias, false);
}

void linear_tokens_add_(const LinearTensors& linear, const torch::Tensor& x,
                        torch::Tensor& into, PackedLinear* packed) {
  const auto& w = linear.weight;
  const bool fits = x.dim() >= 2 && x.is_contiguous() &&
                    into.is_contiguous() && into.scalar_type() == at::kFloat &&
                    into.device().is_cpu() && into.dim() == x.dim() &&
                    into.sizes().slice(0, x.dim() - 1) == x.sizes().slice(0, x.dim() - 1) &&
                    into.size(-1) == w.size(0);
  // (A GEMM without an adding call, oneDNN's linear, computes from the same packed weight below.)
  const auto layer = fits ? packed_weight(linear, x, packed) : std::nullopt;
  if (!layer || !layer->gemm->linear_add_) {
    into.add_(linear_tokens(linear, x, packed));
    return;
  }
  layer->gemm->linear_add_(x, layer->weight, linear.bias, into);
}

std::optional<torch::Tensor> linear_gelu_tokens(const torch::nn::LinearImpl& linear,
                                                const torch::Tensor& x, PackedLinear* packed) {
  if (x.dim() < 2 || !x.is_contiguous()) return std::nullopt;
  const auto layer = packed_weight(linear, x, packed);
  if (!layer) return std::nullopt;
  return layer->gemm->linear(x, layer->weight, linear.weight.size(0), linear.bias, /*gelu=*/true);
}

std::optional<RowGemmWeight> row_gemm_weight(const LinearTensors& linear, int64_t rows,
                                              PackedLinear* packed) {
  const PackedGemm* gemm = gemm_for(linear, packed);
  if (!packed || !gemm || !gemm->gemm_rows || !layer_fits(linear)) return std::nullopt;
  // The row GEMM runs on the calling thread: any kept weight serves it.
  const auto kept =
      packed->get_at_least({&linear.weight, &linear.row_scale}, 0, pack_threads(gemm),
                           [&] { return gemm->pack(weight_to_pack(linear), rows); });
  if (!kept) return std::nullopt;
  return RowGemmWeight{*kept, gemm->gemm_rows};
}

std::optional<LinearTensors> ScaledLinear::get(const torch::nn::LinearImpl& linear,
                                               const at::Tensor& gamma) {
  const auto& w = linear.weight;
  if (!layer_fits(linear) || !gamma.defined() || gamma.numel() != w.size(0) ||
      gamma.scalar_type() != w.scalar_type() || gamma.device() != w.device()) {
    return std::nullopt;
  }
  std::optional<at::Tensor> bias = at::Tensor();
  if (linear.bias.defined()) {
    bias = bias_.get({&linear.bias, &gamma}, [&] { return linear.bias * gamma.reshape({-1}); });
  }
  if (!bias) return std::nullopt;
  return LinearTensors(w, *bias, gamma);
}

std::optional<std::pair<LinearTensors, PackedLinear*>> ScaledLinear::layer_for(
    const torch::nn::LinearImpl& linear, PackedLinear* own, const at::Tensor& scale) {
  if (!scale.defined()) return std::make_pair(LinearTensors(linear), own);
  const auto folded = get(linear, scale);
  if (!folded) return std::nullopt;
  return std::make_pair(*folded, &packed_);
}

const char* packed_gemm_name() { return packed_gemm() ? packed_gemm()->name : "none (at::linear)"; }

const char* packed_gemm_name(LinearRole role, int64_t out_features) {
  const PackedGemm* gemm = packed_gemm(role, out_features);
  return gemm ? gemm->name : "none (at::linear)";
}

std::string packed_gemm_description() {
  std::string line = packed_gemm_name();
  const PackedGemm* narrow_fc2 = packed_gemm(LinearRole::kFfnOutput, 1);
  if (narrow_fc2 != packed_gemm()) {
    line += std::string("; the FFNs' fc2 of fewer than ") + std::to_string(kNarrowOutputFeatures) +
            " outputs: " + narrow_fc2->name;
  }
  return line;
}

}  // namespace rmt::nn::detail

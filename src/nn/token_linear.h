#pragma once
// A Linear layer on (B, H, W, C) tokens at inference, as one 2-D GEMM with the bias inside it.
// LibTorch's at::linear runs a 4-D input as a matmul followed by a separate bias add_: one more
// pass over the output and one more parallel region per layer. Where LibTorch exports MKL's packed
// GEMM (nn/mkl_gemm.h) a float32 CPU layer runs there, with its weight packed into MKL's
// layout once for the threads of its calls, and again, once, for a call on more threads (MKL
// runs a packed GEMM on at most its packing's threads); kept in a PackedLinear, beside the
// weight: one more copy of the Linear weights in memory; off Intel CPUs our AVX2 kernel
// (nn/avx2_gemm.h, CPUs without AVX-512) with the weight in strips of 16 columns, oneDNN's
// batch-reduce microkernel (nn/brgemm_gemm.h) with the weight transposed once, or oneDNN's linear
// (nn/onednn.h) the same way (RMT_CPU_LINEAR picks); elsewhere addmm. Same function; the rounding
// differs from at::linear's by about an ulp (another summation order).

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <utility>
#include <torch/nn/modules/linear.h>

#include "nn/derived_weights.h"

namespace rmt::nn::detail {

// What a Linear layer is to the choice of its GEMM (packed_gemm_name(role, ...)).
enum class LinearRole {
  kGeneral,
  // An FFN's fc2: 3x as many inputs as outputs. Where MKL's packed GEMM is the default (Intel CPUs,
  // RMT_CPU_LINEAR unset), oneDNN's microkernel runs it when it has fewer than
  // kNarrowOutputFeatures outputs. The FFN alone on an Intel Xeon, 1 thread (benchmarks/RESULTS.md,
  // session 47): 1.02-1.08x at RMT-S's and RMT-B's first three stages (64-320 channels) and RMT-L's
  // first two; 0.96-0.99x at 384, 0.87-1.01x at RMT-L's 448.
  kFfnOutput,
};
inline constexpr int64_t kNarrowOutputFeatures = 384;

// A Linear weight in the packed layout of oneDNN, MKL or our AVX2 kernel (or transposed for
// oneDNN's microkernel), for a layer of the given role.
class PackedLinear : public DerivedWeights<at::Tensor> {
 public:
  explicit PackedLinear(LinearRole role = LinearRole::kGeneral) : role(role) {}
  const LinearRole role;
};

// The tensors a Linear layer computes with: a module's own (converted implicitly), or with its
// output scaled per feature (ScaledLinear's).
struct LinearTensors {
  at::Tensor weight, bias;  // (out, in); (out) or undefined
  // Undefined, or out values that multiply weight's rows (bias is then the scaled bias): the
  // layer computes with scaled_weight(), packed weights are packed from it.
  at::Tensor row_scale;
  LinearTensors(const torch::nn::LinearImpl& linear)  // NOLINT: implicit, as the module itself
      : weight(linear.weight), bias(linear.bias) {}
  LinearTensors(at::Tensor weight_, at::Tensor bias_, at::Tensor row_scale_)
      : weight(std::move(weight_)), bias(std::move(bias_)), row_scale(std::move(row_scale_)) {}
  // weight, its rows multiplied by row_scale where there is one (then a new tensor).
  at::Tensor scaled_weight() const;
};

// A Linear layer whose output is scaled per feature, gamma * linear(x) (a block's layer scale),
// with gamma folded into its weight and bias: gamma (W x + b) = (gamma W) x + gamma b, so that the
// layer can add its scaled product to the block's residual in its own GEMM pass (the steps of
// blocks without layer scale). Rounding differs from gamma * linear(x) by about an ulp. The scaled
// weight exists only in packed_ (packed from a temporary), the scaled bias here; both are made
// again when the layer's tensors or gamma change (derived_weights.h).
class ScaledLinear {
 public:
  // role: the layer's (its folded weight's cache packs for the GEMM the role picks).
  explicit ScaledLinear(LinearRole role = LinearRole::kGeneral) : packed_(role) {}
  // What computes scale * linear(x) in one GEMM: the layer's tensors and its own packed-weight
  // cache `own` where scale is undefined, else get()'s and packed_; nullopt where get() has none
  // (the caller then scales a separate output).
  std::optional<std::pair<LinearTensors, PackedLinear*>> layer_for(
      const torch::nn::LinearImpl& linear, PackedLinear* own, const at::Tensor& scale);

 private:
  // The layer's tensors with gamma (the module's parameter, out_features values) as row_scale and
  // the scaled bias; nullopt where the packed GEMM would not take the layer or the scaled bias
  // cannot be kept (inference tensors).
  std::optional<LinearTensors> get(const torch::nn::LinearImpl& linear, const at::Tensor& gamma);
  PackedLinear packed_;
  DerivedWeights<at::Tensor> bias_;
};

// linear(x) over the last dimension of x. `packed` (optional): the layer's packed-weight cache,
// used for float32 CPU inputs when no gradient is recorded and the weight is not an inference
// tensor (whose changes the cache cannot follow).
torch::Tensor linear_tokens(const LinearTensors& linear, const torch::Tensor& x,
                            PackedLinear* packed = nullptr);

// Linear layers that read the same input, their weights stacked and packed for the packed GEMM as one.
struct PackedStack {
  at::Tensor packed, bias;
};
class PackedLinearStack : public DerivedWeights<PackedStack> {};

// The layers a, b and c (same input features) on x as one GEMM over their stacked weights, where
// linear_tokens would run the packed GEMM for each: the (..., out_a + out_b + out_c) output, whose
// channel slices are the three outputs (one read of x, one parallel region instead of three).
// nullopt where it would not (or the biases are not all defined or all absent).
std::optional<torch::Tensor> stacked_linear_tokens(const torch::nn::LinearImpl& a,
                                                   const torch::nn::LinearImpl& b,
                                                   const torch::nn::LinearImpl& c,
                                                   const torch::Tensor& x,
                                                   PackedLinearStack* cache);

// into += linear(x) (into: linear(x)'s shape), with the GEMM adding its product to `into` (one
// pass over it, no output tensor) where MKL's packed GEMM or oneDNN's microkernel runs the layer;
// otherwise linear_tokens and an add_. Not under autograd (the packed path's condition; the add_
// is then in place anyway).
void linear_tokens_add_(const LinearTensors& linear, const torch::Tensor& x,
                        torch::Tensor& into, PackedLinear* packed = nullptr);

// gelu(linear(x)) (the exact GELU) with the GELU inside the packed GEMM's pass over its output,
// where linear_tokens would run one; nullopt where it would not (the caller applies its own GELU).
std::optional<torch::Tensor> linear_gelu_tokens(const torch::nn::LinearImpl& linear,
                                                const torch::Tensor& x, PackedLinear* packed);

// A GEMM that runs a block of rows on the calling thread, cheap enough a call to take a few image
// rows at a time (nn/ffn_rows.h): out (m, n) = a (m, k) times the packed weight + beta * out
// (beta 0 or 1), plus bias (may be null), then the exact GELU (gelu).
using RowGemm = void (*)(const float* a, int64_t m, int64_t k, const at::Tensor& packed, int64_t n,
                         const float* bias, bool gelu, float beta, float* out);
struct RowGemmWeight {
  at::Tensor packed;
  RowGemm gemm;
};

// The layer's weight packed for the row GEMM of the packed GEMM the layers run on (MKL's, blocked
// for `rows` rows, ours for AVX2, or oneDNN's microkernel), from the same cache linear_tokens
// uses; nullopt where that GEMM has no cheap row calls (oneDNN's linear) or linear_tokens would not
// run a packed GEMM on a float32 CPU input (gradients recorded, another dtype or device).
std::optional<RowGemmWeight> row_gemm_weight(const LinearTensors& linear, int64_t rows,
                                             PackedLinear* packed);

// The packed GEMM the float32 CPU layers run on, in words ("MKL's packed GEMM", "oneDNN's packed
// linear", "oneDNN's brgemm microkernel" (nn/brgemm_gemm.h), "rmt's AVX2 GEMM kernel"
// (nn/avx2_gemm.h), or none: at::linear); RMT_CPU_LINEAR's choice, else MKL's on Intel CPUs, ours
// on other CPUs with AVX2 but no AVX-512, and oneDNN's microkernel on the rest ...
const char* packed_gemm_name();
// ... and the one a layer of this role with `out_features` outputs runs on (LinearRole).
const char* packed_gemm_name(LinearRole role, int64_t out_features);
// One line for logs: packed_gemm_name(), and the layers that take another GEMM, if any.
std::string packed_gemm_description();

}  // namespace rmt::nn::detail

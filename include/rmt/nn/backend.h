#pragma once
// Which implementation a module runs. Every choice computes the same function; they differ in
// speed, memory and in how closely they follow the authors' code.

#include <c10/core/DeviceType.h>

namespace rmt::nn {

enum class Backend {
  // Fused on the CPU; the authors' op chain for the attention on CUDA, until the CUDA kernels have
  // been validated on a GPU (they compile, but no GPU has run them yet: see
  // benchmarks/masa_ops_notes.md).
  Auto,
  // The library's kernels: the rmt::masa_* torch operators (CPU and CUDA) for the attention, the
  // channels-last depthwise convolution with its residual fused (CPU, when no gradient is
  // recorded), GELU in place at inference.
  Fused,
  // The authors' op sequence step for step: materialized masks and score matrices, the same
  // permutes, at::conv2d on permuted views, a separate pass for every add. The yardstick of the
  // fused path (parity tests, the "literal" column of benchmarks/bench_models).
  Reference,
};

// A Backend resolved, once, when it is set, into the two decisions the modules make from it.
class BackendPolicy {
 public:
  explicit BackendPolicy(Backend backend = Backend::Auto)
      : backend_(backend),
        literal_(backend == Backend::Reference),
        fused_cuda_attention_(backend == Backend::Fused) {}

  Backend backend() const { return backend_; }
  // The authors' op sequence (Reference): no fused kernel, no BatchNorm folded into its conv, no
  // in-place update, no cached sin/cos tables.
  bool literal() const { return literal_; }
  // The rmt::masa_* operators for the attention on a device of this type, else the authors' op
  // chain (Auto keeps it on CUDA).
  bool fused_attention(c10::DeviceType device) const {
    return !literal_ && (device != c10::DeviceType::CUDA || fused_cuda_attention_);
  }

 private:
  Backend backend_;
  bool literal_;
  bool fused_cuda_attention_;
};

// What every module with a backend choice derives from, beside torch::nn::Module: the resolved
// policy, held the same way by each. A module whose children have one passes the choice on in its
// set_backend, so that setting it on a model sets it on every part.
class WithBackend {
 public:
  virtual ~WithBackend() = default;
  virtual void set_backend(Backend backend) { policy_ = BackendPolicy(backend); }
  const BackendPolicy& backend_policy() const { return policy_; }

 protected:
  BackendPolicy policy_;
};

}  // namespace rmt::nn

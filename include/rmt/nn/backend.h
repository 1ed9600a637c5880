#pragma once
// Which implementation a module runs. Every choice computes the same function; they differ in
// speed, memory and in how closely they follow the authors' code.

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

}  // namespace rmt::nn

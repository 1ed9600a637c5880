#pragma once
// How many images of a batch a stage runs at a time on the CPU at inference. A stage's ops each
// sweep the whole batch's activations; at batch 16 those outgrow the caches in the early stages
// (RMT-S stage 1: 800 KB an image) and every op streams them from memory, while one image at a time
// keeps them in L2. The later stages, with little activation and much weight, want the whole batch.

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace rmt::nn::detail {

// Images per chunk for a stage whose input is `stage_input` (B, H, W, C): as many as keep one
// activation of the chunk within half the L2 cache of each thread (at least 1, at most B).
// RMT_CPU_BATCH_CHUNK overrides it: `off` (the whole batch) or a positive count; any other value
// throws std::invalid_argument naming it.
int64_t images_per_chunk(const at::Tensor& stage_input);

}  // namespace rmt::nn::detail

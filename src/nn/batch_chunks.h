#pragma once
// How a stage runs a batch on the CPU at inference: a few images at a time. A stage's ops each
// sweep the whole batch's activations; at batch 16 those outgrow the caches in the early stages
// (RMT-S stage 1: 800 KB an image) and every op streams them from memory, while one image at a time
// keeps them in L2. With several threads, the chunks can also run side by side, one thread each,
// instead of every op splitting one chunk between the threads (fewer, longer parallel regions).

#include <cstdint>
#include <functional>
#include <vector>

#include <ATen/core/Tensor.h>

namespace rmt::nn::detail {

struct BatchChunks {
  std::vector<int64_t> starts;  // the first image of each chunk, then the batch size
  bool side_by_side = false;    // the chunks on the threads, one thread each
  int64_t count() const { return static_cast<int64_t>(starts.size()) - 1; }
  int64_t size(int64_t i) const { return starts[i + 1] - starts[i]; }
  bool operator==(const BatchChunks& other) const {
    return starts == other.starts && side_by_side == other.side_by_side;
  }
};

// The chunks of a stage whose input is `stage_input` (B, H, W, C) (or of the stem, its images):
// as many images a chunk as keep one activation within half of a core's L2 cache, and where an
// image has `tokens` > 0 tokens but fewer than 64 (a last stage), at least 512 tokens a chunk;
// side by side when there are several threads and at least as many images. RMT_CPU_BATCH_CHUNK
// overrides the size: `off` (the whole batch, no chunks) or a positive count; any other value
// throws std::invalid_argument naming it.
BatchChunks plan_batch_chunks(const at::Tensor& stage_input, int64_t tokens = 0);

// The plan of a batch of `batch` images like those of `part` (one chunk of it), on `threads`
// threads: what the overload above gives the whole batch, computed inside a chunk's run, where
// at::get_num_threads() no longer tells the batch's thread count.
BatchChunks plan_batch_chunks(const at::Tensor& part, int64_t batch, int64_t tokens,
                              int64_t threads);

// run(i) for every chunk: in order on this thread, or side by side on LibTorch's intra-op threads
// (each takes the next chunk when done, so a thread that the system deschedules holds up no other),
// with this thread's grad mode and dispatch state. Rethrows the first exception.
void run_batch_chunks(const BatchChunks& chunks, const std::function<void(int64_t)>& run);

}  // namespace rmt::nn::detail

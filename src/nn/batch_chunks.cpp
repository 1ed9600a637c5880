#include "nn/batch_chunks.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <fmt/format.h>

#include "runtime/cpu_cache.h"
#include "runtime/whole_integer.h"

namespace rmt::nn::detail {

namespace {

constexpr int64_t kWholeBatch = -1;
constexpr int64_t kAuto = 0;

// RMT_CPU_BATCH_CHUNK, read once: kAuto, kWholeBatch or a positive count.
int64_t forced_chunk() {
  static const int64_t forced = [] {
    const char* value = std::getenv("RMT_CPU_BATCH_CHUNK");
    if (value == nullptr || std::string(value) == "auto") return kAuto;
    if (std::string(value) == "off") return kWholeBatch;
    const auto count = runtime::whole_integer(value);
    if (!count || *count < 1) {
      throw std::invalid_argument(fmt::format(
          "RMT_CPU_BATCH_CHUNK='{}': expected auto, off or a positive number of images",
          std::string(value).substr(0, 64)));
    }
    return *count;
  }();
  return forced;
}

// Half of a core's L2: the rest holds the weights' tiles.
int64_t budget_per_thread() { return runtime::l2_cache_bytes() / 2; }

// Images of fewer tokens than this (RMT's last stage at 224x224: 49) take chunks of at least
// kSmallImageRows tokens: their stage's weights (RMT-S's last: 42 MB) outgrow the caches and come
// from memory once a chunk, so one or two images a chunk would read them 8 to 16 times at batch
// 16 (RMT-S's last stage at batch 16, 1 thread, Zen 3: 2 images a chunk 14.1-14.3 ms an image,
// 8 (this rule) 13.1, the whole batch 13.3-13.9, medians of 4 runs).
constexpr int64_t kSmallImageTokens = 64;
constexpr int64_t kSmallImageRows = 512;

// `count` chunks of near-equal size.
BatchChunks equal_chunks(int64_t batch, int64_t count) {
  BatchChunks chunks;
  for (int64_t i = 0; i <= count; ++i) chunks.starts.push_back(i * batch / count);
  return chunks;
}

}  // namespace

BatchChunks plan_batch_chunks(const at::Tensor& stage_input, int64_t tokens) {
  return plan_batch_chunks(stage_input, stage_input.size(0), tokens, at::get_num_threads());
}

BatchChunks plan_batch_chunks(const at::Tensor& part, int64_t batch, int64_t tokens,
                              int64_t threads) {
  const int64_t forced = forced_chunk();
  if (forced == kWholeBatch || batch <= 1 || part.size(0) < 1) return equal_chunks(batch, 1);
  const int64_t image_bytes = std::max<int64_t>(
      part.numel() / part.size(0) * static_cast<int64_t>(part.element_size()), 1);
  int64_t per_thread =
      forced != kAuto ? forced : std::max<int64_t>(budget_per_thread() / image_bytes, 1);
  if (forced == kAuto && tokens > 0 && tokens < kSmallImageTokens) {
    per_thread = std::max(per_thread, (kSmallImageRows + tokens - 1) / tokens);
  }
  if (threads > 1 && batch >= threads) {
    // Side by side, a multiple of the thread count, so that the threads finish together when
    // nothing else runs.
    const int64_t rounds = (batch + threads * per_thread - 1) / (threads * per_thread);
    auto chunks = equal_chunks(batch, std::min(rounds * threads, batch));
    chunks.side_by_side = true;
    return chunks;
  }
  return equal_chunks(batch, (batch + per_thread - 1) / per_thread);
}

void run_batch_chunks(const BatchChunks& chunks, const std::function<void(int64_t)>& run) {
  if (!chunks.side_by_side) {
    for (int64_t i = 0; i < chunks.count(); ++i) run(i);
    return;
  }
  const at::ThreadLocalState state;  // grad mode, inference mode, dispatch keys
  std::atomic<int64_t> next{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    at::ThreadLocalStateGuard guard(state);
    for (int64_t i = next++; i < chunks.count(); i = next++) run(i);
  });
}

}  // namespace rmt::nn::detail

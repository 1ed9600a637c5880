#pragma once
// at::parallel_for with guided chunks. On a shared host the threads of one parallel region run at
// different speeds from moment to moment (a vCPU's sibling busy, an interrupt, the hypervisor):
// with one fixed share a thread, as at::parallel_for splits a range, the faster thread waits at
// the region's end (measured at batch 1 on 2 vCPUs: ~7% of the two threads' time). Here the
// threads take chunks in turn from a shared counter, each chunk 1/(2 x threads) of what is left
// (at least `least`), so the faster thread takes more of them and both finish nearly together,
// while the first chunks stay as large as a fixed share's half. Each index is computed the same
// way whichever thread takes it: the results are bit for bit those of a fixed split.

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace rmt::runtime {

// f(i0, i1) for chunks covering [begin, end) on LibTorch's intra-op threads (the calling thread
// alone inside a parallel region or for a range of at most `least`). Chunk sizes are multiples of
// `align` where enough is left (a GEMM's register tile of rows).
template <class F>
void parallel_for_guided(int64_t begin, int64_t end, int64_t least, int64_t align, const F& f) {
  if (begin >= end) return;
  least = std::max<int64_t>(1, least);
  align = std::max<int64_t>(1, align);
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  if (threads <= 1 || end - begin <= least) {
    f(begin, end);
    return;
  }
  std::atomic<int64_t> next{begin};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    int64_t i0 = next.load(std::memory_order_relaxed);
    for (;;) {
      int64_t i1;
      do {
        if (i0 >= end) return;
        const int64_t left = end - i0;
        const int64_t size = (std::max(least, left / (2 * threads)) + align - 1) / align * align;
        i1 = i0 + std::min(left, size);
      } while (!next.compare_exchange_weak(i0, i1, std::memory_order_relaxed));
      f(i0, i1);
      i0 = next.load(std::memory_order_relaxed);
    }
  });
}

}  // namespace rmt::runtime

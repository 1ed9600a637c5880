#pragma once
// at::parallel_for with shares that stay put and balance themselves. Two things matter on a shared
// host with a few cores:
// - Uneven speeds: the threads of one parallel region run at different speeds from moment to
//   moment (a vCPU's sibling busy, an interrupt, the hypervisor); with one fixed share a thread, as
//   at::parallel_for splits a range, the faster thread waits at the region's end (measured at
//   batch 1 on 2 vCPUs: ~7% of the two threads' time).
// - Where the data is: consecutive operators of a block read what the one before wrote. Where each
//   thread takes the same part of the tokens every time, that part is still in its core's cache;
//   where chunks go to whichever thread comes first, about half of every operator's input comes
//   from the other core (measured at batch 1 on 2 threads: 1.8-3.6% of the forward).
// So thread t starts on its home share, the t-th of `threads` equal parts of the range, front to
// back, half of what is left of it at a time; a thread done with its own share takes the back half
// of what is left of the fullest other one, until nothing is left. Each index is computed the same
// way whichever thread takes it: the results are bit for bit those of a fixed split.

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>

namespace rmt::runtime {

namespace detail {

// What is left of one home share: [front, back). Claims are a few per share and region, so a lock
// costs nothing measurable.
struct alignas(64) Share {
  std::mutex lock;
  int64_t front = 0, back = 0;
};

}  // namespace detail

// f(i0, i1) for chunks covering [begin, end) on LibTorch's intra-op threads (the calling thread
// alone inside a parallel region or for a range of at most `least`). Every chunk holds at least
// `least` indices and starts `begin` plus a multiple of `align` indices, its size a multiple of
// `align` except where it ends the range (a GEMM's register tile of rows).
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
  const int64_t n = end - begin;
  // Shares in whole units of `align` (share t: units [t * units / count, (t + 1) * units / count)),
  // each more than `least` indices (the last unit may be short).
  const int64_t count = std::max<int64_t>(1, std::min(threads, n / (least + 2 * align)));
  const int64_t units = (n + align - 1) / align;
  const std::unique_ptr<detail::Share[]> shares(new detail::Share[threads]);
  for (int64_t t = 0; t < count; ++t) {
    shares[t].front = begin + std::min(n, t * units / count * align);
    shares[t].back = begin + std::min(n, (t + 1) * units / count * align);
  }
  // What a claim takes of the `left` indices of a share, so that it and what it leaves hold at
  // least `least` indices (or nothing is left): the owner, from the front, about half, in whole
  // units of `align`; a thief, from the back, all but the front's half in whole units of `align`.
  auto owner_takes = [&](int64_t left) {
    const int64_t take = std::min(left, ((left + 1) / 2 + align - 1) / align * align);
    return left - take < least ? left : take;
  };
  auto thief_leaves = [&](int64_t left) {
    const int64_t keep = left / 2 / align * align;
    return keep < least || left - keep < least ? 0 : keep;
  };
  // (at::parallel_for hands thread t the index t of [0, threads); a share that no thread starts, or
  // one beyond `count` (empty), is taken by the others.)
  at::parallel_for(0, threads, 1, [&](int64_t home, int64_t) {
    detail::Share& own = shares[home];
    for (;;) {  // its own share, from the front
      int64_t i0, i1;
      {
        std::lock_guard<std::mutex> guard(own.lock);
        if (own.front >= own.back) break;
        const int64_t left = own.back - own.front;
        i0 = own.front;
        i1 = own.front += owner_takes(left);
      }
      f(i0, i1);
    }
    for (;;) {  // then the back of the fullest other share
      int64_t fullest = -1, most = 0;
      for (int64_t t = 0; t < threads; ++t) {
        std::lock_guard<std::mutex> guard(shares[t].lock);
        if (shares[t].back - shares[t].front > most) {
          most = shares[t].back - shares[t].front;
          fullest = t;
        }
      }
      if (fullest < 0) return;
      int64_t i0, i1;
      {
        detail::Share& other = shares[fullest];
        std::lock_guard<std::mutex> guard(other.lock);
        const int64_t left = other.back - other.front;
        if (left <= 0) continue;
        i1 = other.back;
        i0 = other.back = other.front + thief_leaves(left);
      }
      f(i0, i1);
    }
  });
}

}  // namespace rmt::runtime

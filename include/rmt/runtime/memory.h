#pragma once
// Whether freed activation memory goes back to the system at once, and rmt's default for programs.
//
// glibc serves an allocation above its mmap threshold (128 KiB, raised on the fly up to 32 MiB)
// with a fresh mapping and unmaps it on free, and gives a free heap top above its trim threshold
// back to the system. A forward allocates and frees some 450 activations of up to a few MB, so
// many of them arrive as fresh pages, faulted in and zeroed on first touch: about 3% of an RMT-S
// batch-1 forward (benchmarks/RESULTS.md). retain_freed_memory() sets the mmap threshold to 64 MiB
// and the trim threshold to 256 MiB (mallopt), so that the next forward reuses the memory the last
// one freed. The price is resident memory: what was freed stays in the process (RMT-S, batch 1:
// about +120 MiB peak RSS in bench_models).
//
// The library never calls it (the allocator belongs to the host program); the tools and the
// benchmarks do, at start-up. A setting the user made wins: with MALLOC_MMAP_THRESHOLD_,
// MALLOC_TRIM_THRESHOLD_ or GLIBC_TUNABLES in the environment it changes nothing.

namespace rmt::runtime {

// True when it applied the thresholds (glibc, and no setting of the user's); see above.
bool retain_freed_memory();

// What retain_freed_memory() did, in words, for the tools' and benchmarks' headers.
const char* freed_memory_policy();

}  // namespace rmt::runtime

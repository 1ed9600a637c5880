// The calling core's cache size that the CPU kernels block for.
#pragma once

#include <cstdint>

namespace rmt::runtime {

// Bytes of one core's L2 cache, as the system reports it (1 MiB where it does not say); read once.
int64_t l2_cache_bytes();

}  // namespace rmt::runtime

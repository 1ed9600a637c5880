#include "runtime/cpu_cache.h"

#include <unistd.h>

namespace rmt::runtime {

int64_t l2_cache_bytes() {
  static const int64_t bytes = [] {
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return l2 > 0 ? static_cast<int64_t>(l2) : int64_t{1} << 20;
  }();
  return bytes;
}

}  // namespace rmt::runtime

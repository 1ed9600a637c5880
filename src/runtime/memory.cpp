#include "rmt/runtime/memory.h"

#include <cstdlib>
#include <initializer_list>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace rmt::runtime {
namespace {

const char* policy = "the C library's default";

bool user_chose() {
  for (const char* name : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

}  // namespace

bool retain_freed_memory() {
#if defined(__GLIBC__)
  if (user_chose()) {
    policy = "the user's (MALLOC_*_THRESHOLD_ / GLIBC_TUNABLES)";
    return false;
  }
  // Setting either threshold turns off glibc's own adjustment of both.
  const bool done = mallopt(M_MMAP_THRESHOLD, 64 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 256 << 20) == 1;
  if (done) policy = "freed memory kept (glibc mmap threshold 64 MiB, trim threshold 256 MiB)";
  return done;
#else
  return false;
#endif
}

const char* freed_memory_policy() { return policy; }

}  // namespace rmt::runtime

#include "rmt/runtime/busy_cpus.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <algorithm>
#include <fstream>

#include "runtime/env_choice.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace rmt::runtime {

std::optional<double> run_queue_wait_seconds() {
  // "cpu time (ns) run-queue wait (ns) time slices"
  std::ifstream in("/proc/thread-self/schedstat");
  unsigned long long on_cpu = 0, waited = 0;
  if (!(in >> on_cpu >> waited)) return std::nullopt;
  return static_cast<double>(waited) * 1e-9;
}

int BusyCpuGovernor::threads_for_next(int planned) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (planned <= 1 || single_left_ <= 0) return planned;
  --single_left_;
  return 1;
}

void BusyCpuGovernor::record(int threads, double wall, double waited) {
  if (threads <= 1 || wall <= 0) return;  // one thread waits only where even it does not fit
  const double share = waited / wall;
  std::lock_guard<std::mutex> lock(mutex_);
  if (share > kBusyShare) {
    single_left_ = backoff_;
    backoff_ = std::min(2 * backoff_, kLastBackoff);
  } else if (share < kFreeShare) {
    backoff_ = kFirstBackoff;
  }
}

namespace {

// MKL's thread-local thread count (C interface), where the LibTorch exports it.
using MklLocal = int (*)(int);
MklLocal mkl_local() {
  static const MklLocal f =
      reinterpret_cast<MklLocal>(dlsym(RTLD_DEFAULT, "MKL_Set_Num_Threads_Local"));
  return f;
}

}  // namespace

ScopedThreadCount::ScopedThreadCount(int threads) {
#ifdef _OPENMP
  // at::get_num_threads first: on a thread's first call LibTorch sets OpenMP's count to its own
  // setting, which would undo ours below.
  previous_omp_ = at::get_num_threads();
  if (threads < 1 || threads == previous_omp_) return;
  omp_set_num_threads(threads);
  if (auto f = mkl_local()) previous_mkl_ = f(threads);
  active_ = true;
#endif
}

ScopedThreadCount::~ScopedThreadCount() {
#ifdef _OPENMP
  if (!active_) return;
  omp_set_num_threads(previous_omp_);
  if (auto f = mkl_local()) f(previous_mkl_);  // 0: back to MKL's global count
#endif
}

bool busy_cpu_feedback_enabled() {
  static const bool enabled =
      runtime::env_choice("RMT_BUSY_CPUS", {"follow", "ignore"},
                          "follow: fewer threads while other work keeps the CPUs busy") !=
      "ignore";
  return enabled;
}

}  // namespace rmt::runtime

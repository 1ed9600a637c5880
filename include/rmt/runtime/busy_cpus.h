#pragma once
// Fewer threads while the CPUs are busy with other work: the run-queue feedback Model::forward
// applies at CPU inference.
//
// The thread count is planned once (rmt/runtime/threads.h: affinity, cgroup quota), but another
// process can take CPUs at any time. With 2 threads on 2 CPUs beside one busy process, every
// parallel region (~500 a forward) waits for whichever thread the kernel descheduled: RMT-S at
// batch 1 drops to ~0.7 of its quiet 1-thread speed, while 1 thread beside the same process keeps
// ~0.93. Linux says how long the calling thread waited for a CPU (/proc/thread-self/schedstat):
// when the last forward on several threads spent a large share of its time waiting, the next ones
// run on one thread, for a number of forwards that doubles (up to 64) each time a new try on
// several threads still finds the CPUs busy, so that a busy machine costs one slow forward in 64
// and a machine that became quiet again gets its threads back within 64 forwards. Not for a batch
// of at least as many images as threads: its stages run chunks of whole images side by side, each
// thread taking the next when done, so a descheduled thread holds up no other, and two threads
// beside a busy process get more CPU time than one (RMT-S batch 16: 11.4 img/s against 8.3).
//
// The thread count changes for the calling thread only (OpenMP's nthreads ICV and MKL's
// thread-local count, restored after the forward): other threads of the program, and the
// program's own setting, are untouched. RMT_BUSY_CPUS=ignore turns the feedback off.

#include <cstdint>
#include <mutex>
#include <optional>

namespace rmt::runtime {

// Seconds the calling thread has waited on a run queue since it started; nullopt where the
// kernel does not tell (not Linux, no schedstat).
std::optional<double> run_queue_wait_seconds();

class BusyCpuGovernor {
 public:
  // Share of a forward's wall time spent waiting for a CPU above which the CPUs count as busy, and
  // below which (on several threads) as free again.
  static constexpr double kBusyShare = 0.15;
  static constexpr double kFreeShare = 0.05;
  static constexpr int kFirstBackoff = 4, kLastBackoff = 64;

  // The threads for the next forward: `planned`, or 1 while the CPUs count as busy.
  int threads_for_next(int planned);
  // After a forward on `threads` threads that took `wall` seconds, of which the calling thread
  // waited `waited` for a CPU.
  void record(int threads, double wall, double waited);

 private:
  std::mutex mutex_;
  int single_left_ = 0;  // forwards still to run on one thread
  int backoff_ = kFirstBackoff;
};

// For the scope's lifetime the calling thread's parallel regions (ATen's, oneDNN's, MKL's) run on
// `threads` threads; the previous counts come back at the end.
class ScopedThreadCount {
 public:
  explicit ScopedThreadCount(int threads);
  ~ScopedThreadCount();
  ScopedThreadCount(const ScopedThreadCount&) = delete;
  ScopedThreadCount& operator=(const ScopedThreadCount&) = delete;

 private:
  int previous_omp_ = 0, previous_mkl_ = 0;
  bool active_ = false;
};

// Whether Model::forward applies the feedback: not with RMT_BUSY_CPUS=ignore. Any other value
// than ignore or follow is an error that names it.
bool busy_cpu_feedback_enabled();

}  // namespace rmt::runtime

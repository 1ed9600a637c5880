#pragma once
// How idle OpenMP threads wait, and how a program gets rmt's default.
//
// At the end of each parallel region (an RMT-S forward opens ~450) libgomp's threads spin, by
// default for 300,000 iterations (milliseconds), before they sleep. On a loaded machine a thread
// that spins waits for a partner that the kernel has descheduled, and holds a core that the partner
// (or another process) could run on. GOMP_SPINCOUNT=20000 (200-400 us on an Intel Xeon VM, where
// 2000 is 20-50 us) bridges the serial gaps between the regions of one forward on a quiet machine,
// the longest among them too (oneDNN's set-up before a strided conv, 70-105 us): a thread that
// fell asleep costs the next region 35-110 us to wake on that VM, against ~1 us while it spins.
// Under load, Model::forward's busy-CPU feedback (busy_cpus.h) runs batch 1 on one thread, so no
// thread spins for a descheduled partner, and a batch runs whole images side by side.
// Measured (RMT-S, 2 threads; benchmarks/RESULTS.md, sessions 41, 42 and 47): quiet batch 1,
// 20,000 reached at least 2000's share of the GEMM floor in 13 of 15 alternated rounds (medians
// +2 to +5 points); beside one busy process it is level with 2000 at batch 1 and 16 (both about
// the quiet 1-thread speed of the hour or above it). Before that feedback existed, 10,000 lost half the throughput
// beside a busy process.
//
// libgomp reads these variables once, in its own constructor, which runs before any constructor
// or main() of a program or library that depends on it: setenv() from main() is too late, and so
// is setenv() from an executable's .preinit_array (which runs before every shared library's
// constructor, but glibc's own initialisation then resets `environ` to the process's original
// block). So a program that wants rmt's default puts RMT_OPENMP_WAIT_POLICY_PREINIT() in one of
// its source files (the tools and benchmarks do): from .preinit_array, before any library has
// initialised, it executes itself again (/proc/self/exe, same arguments) with GOMP_SPINCOUNT added
// to the environment, when neither variable is set. Only the loading of the shared libraries is
// done twice (LibTorch's constructors run once). A variable the user set always wins, and where the
// re-execution is not possible (no /proc, the program started through ld.so) it starts as it is.
// A library cannot do this for its host program: an application that links librmt keeps its own
// setting (README.md, Threads).

#include <alloca.h>
#include <unistd.h>

#include <cstring>

namespace rmt::runtime {

// rmt's default spin count for libgomp's idle threads, as the environment entry the tools add and
// as the value alone.
inline constexpr char kDefaultSpinCountEntry[] = "GOMP_SPINCOUNT=20000";
inline constexpr const char* kDefaultSpinCount = kDefaultSpinCountEntry + 15;  // after "="

// True when the program should start again with GOMP_SPINCOUNT=kDefaultSpinCount: neither
// OMP_WAIT_POLICY nor GOMP_SPINCOUNT is in `envp`.
inline bool wants_default_wait_policy(char** envp) noexcept {
  for (char** e = envp; e != nullptr && *e != nullptr; ++e) {
    if (std::strncmp(*e, "OMP_WAIT_POLICY=", 16) == 0 || std::strncmp(*e, "GOMP_SPINCOUNT=", 15) == 0) {
      return false;
    }
  }
  return envp != nullptr;
}

// From an executable's .preinit_array (RMT_OPENMP_WAIT_POLICY_PREINIT): executes the program again
// with GOMP_SPINCOUNT=kDefaultSpinCount added to `envp`, unless the user chose a wait policy. Only
// system calls and the stack: it runs before the C and C++ runtimes have initialised. Returns
// (and the program goes on as it is) when it cannot.
inline void reexec_with_default_wait_policy(char** argv, char** envp) noexcept {
  if (argv == nullptr || !wants_default_wait_policy(envp)) return;
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return;
  exe[n] = '\0';
  // Started as `ld.so PROGRAM ...`: /proc/self/exe is the loader, which would read argv differently.
  if (std::strstr(exe, "/ld-linux") != nullptr || std::strstr(exe, "/ld.so") != nullptr) return;
  size_t count = 0;
  while (envp[count] != nullptr) ++count;
  char** env = static_cast<char**>(alloca((count + 2) * sizeof(char*)));
  for (size_t i = 0; i < count; ++i) env[i] = envp[i];
  env[count] = const_cast<char*>(kDefaultSpinCountEntry);  // execve reads, never writes, it
  env[count + 1] = nullptr;
  execve(exe, argv, env);  // returns only on failure
}

}  // namespace rmt::runtime

// In one source file of an executable (not a shared library: .preinit_array is an executable's):
// rmt::runtime::reexec_with_default_wait_policy() before any shared library starts.
#define RMT_OPENMP_WAIT_POLICY_PREINIT()                                                      \
  static void rmt_openmp_wait_policy_preinit(int, char** argv, char** envp) {                 \
    rmt::runtime::reexec_with_default_wait_policy(argv, envp);                                \
  }                                                                                           \
  __attribute__((section(".preinit_array"), used)) static void (*rmt_openmp_wait_policy_preinit_entry)( \
      int, char**, char**) = rmt_openmp_wait_policy_preinit

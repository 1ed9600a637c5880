#pragma once
// Runs a piece of code in a child process (fork) with a CPU-time watchdog (and a longer wall-clock
// one), and reports what it did: finished or killed at the deadline, the exception message it
// threw, and how much its peak resident memory rose above what it started with. The tests of hostile checkpoints use it to
// check "refused or loaded in bounded time and memory" without a hang or an OOM taking the test
// program (or the machine) down. The deadline is a generous guard against hangs, not a speed
// measurement; under sanitizers it is longer and the memory figure is not meaningful (shadow
// memory), so `sanitized()` lets tests skip memory bounds there.
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <string>

namespace rmt::test {

constexpr bool sanitized() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
  return true;
#else
  return false;
#endif
#else
  return false;
#endif
}

struct BoundedResult {
  bool finished = false;  // exited by itself before the deadline
  bool threw = false;     // with a std::exception, whose what() is `message`
  std::string message;
  double seconds = 0;            // wall clock, until exit or kill
  long peak_increase_kb = 0;     // peak RSS minus RSS at the start, in KiB
  std::string failure;           // what went wrong in the child itself (a signal, ...)
};

namespace detail {

inline long statm_kb(int field) {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  long values[2] = {0, 0};
  const int n = std::fscanf(f, "%ld %ld", &values[0], &values[1]);
  std::fclose(f);
  if (n != 2) return 0;
  return values[field] * (::sysconf(_SC_PAGESIZE) / 1024);
}

inline void write_all(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    const ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

}  // namespace detail

// `seconds`: the deadline (a guard against hangs). `address_space_headroom_mb`: without
// sanitizers, the child's address space is limited to what it has plus this, so a reader that
// would allocate without bound gets std::bad_alloc instead of exhausting the machine.
// How much longer than the CPU deadline a child may take by the wall clock (a loaded machine).
constexpr double kWallClockFactor = 6.0;

inline BoundedResult run_bounded(const std::function<void()>& body, double seconds,
                                 long address_space_headroom_mb = 4096) {
  BoundedResult r;
  int fds[2];
  if (::pipe(fds) != 0) {
    r.failure = "pipe failed";
    return r;
  }
  std::fflush(nullptr);
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid < 0) {
    r.failure = "fork failed";
    return r;
  }
  if (pid == 0) {  // the child: run, report "<status><baseline KiB>\n<message>", exit
    ::close(fds[0]);
    const long baseline = detail::statm_kb(1);
    // The deadline counts CPU time (SIGXCPU), so that a busy machine does not fail a bounded run;
    // the wall clock below, several times longer, still catches a child that blocks.
    const auto cpu_limit = static_cast<rlim_t>(std::ceil(seconds));
    const struct rlimit cpu = {cpu_limit, cpu_limit + 1};
    ::setrlimit(RLIMIT_CPU, &cpu);
    if (!sanitized()) {
      const rlim_t limit =
          static_cast<rlim_t>(detail::statm_kb(0) + address_space_headroom_mb * 1024) * 1024;
      const struct rlimit rl = {limit, limit};
      ::setrlimit(RLIMIT_AS, &rl);
    }
    std::string report;
    try {
      body();
      report = "R";
    } catch (const std::exception& e) {
      report = std::string("T") + e.what();
    } catch (...) {
      report = "Tunknown exception";
    }
    detail::write_all(fds[1], std::to_string(baseline) + "\n" + report);
    ::close(fds[1]);
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string data;
  const auto deadline = start + std::chrono::duration<double>(kWallClockFactor * seconds);
  bool eof = false;
  while (!eof) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) break;
    struct pollfd p = {fds[0], POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(left));
    if (ready <= 0) continue;
    char buf[65536];
    const ssize_t n = ::read(fds[0], buf, sizeof(buf));
    if (n <= 0) {
      eof = true;
    } else {
      data.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fds[0]);
  int status = 0;
  struct rusage usage {};
  if (!eof) {  // the deadline passed
    ::kill(pid, SIGKILL);
    ::wait4(pid, &status, 0, &usage);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    r.failure = "still running after " + std::to_string(kWallClockFactor * seconds) +
                " s of wall clock: killed";
    return r;
  }
  ::wait4(pid, &status, 0, &usage);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    r.failure = WIFSIGNALED(status) && WTERMSIG(status) == SIGXCPU
                    ? "used more than " + std::to_string(seconds) + " s of CPU: killed"
                : WIFSIGNALED(status) ? "killed by signal " + std::to_string(WTERMSIG(status))
                                    : "exit status " + std::to_string(WEXITSTATUS(status));
    return r;
  }
  const size_t newline = data.find('\n');
  if (newline == std::string::npos || newline + 1 >= data.size()) {
    r.failure = "no report from the child";
    return r;
  }
  const long baseline = std::atol(data.substr(0, newline).c_str());
  r.finished = true;
  r.threw = data[newline + 1] == 'T';
  r.message = data.substr(newline + 2);
  r.peak_increase_kb = usage.ru_maxrss - baseline;
  return r;
}

}  // namespace rmt::test

// The thread count rmt picks: cgroup CPU quotas (v1 and v2, read from fake cgroup trees), the
// affinity mask, and the environment variables that override them. No timing here: speed under
// load is shown by benchmarks/bench_models --contend. Also the guided split of a range over the
// threads that the CPU kernels share.
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "rmt/models/model.h"
#include "rmt/runtime/busy_cpus.h"
#include "rmt/runtime/threads.h"
#include "tool_runner.h"
#include "rmt/runtime/wait_policy.h"
#include "runtime/guided_parallel.h"

namespace fs = std::filesystem;
using rmt::runtime::cgroup_cpu_quota;
using rmt::runtime::parse_cgroup1_cfs_quota;
using rmt::runtime::parse_cgroup2_cpu_max;

namespace {

// A fake root: files written under it at their real paths.
class FakeRoot {
 public:
  FakeRoot() {
    path_ = fs::temp_directory_path() /
            ("rmt_threads_" + std::to_string(getpid()) + "_" + std::to_string(counter_++));
    fs::create_directories(path_);
  }
  ~FakeRoot() { rmt::test::remove_tree(path_.string()); }
  void write(const std::string& file, const std::string& text) const {
    const fs::path p = path_.string() + file;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }
  std::string str() const { return path_.string(); }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

const char* kMountinfoV2 =
    "25 1 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n";
// This machine's kind of hybrid setup: v1 controllers, and v2 mounted without them.
const char* kMountinfoHybrid =
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
    "34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

}  // namespace

TEST(Threads, ParsesCgroup2CpuMax) {
  EXPECT_FALSE(parse_cgroup2_cpu_max("max 100000\n").has_value());
  EXPECT_DOUBLE_EQ(*parse_cgroup2_cpu_max("150000 100000\n"), 1.5);
  EXPECT_DOUBLE_EQ(*parse_cgroup2_cpu_max("50000 100000"), 0.5);
  EXPECT_DOUBLE_EQ(*parse_cgroup2_cpu_max("200000"), 2.0);  // the period defaults to 100 ms
  for (const char* bad : {"", "max max", "-5 100000", "1.5 100000", "100000 0", "1 2 3", "lots"}) {
    try {
      parse_cgroup2_cpu_max(bad);
      ADD_FAILURE() << "accepted \"" << bad << "\"";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("cpu.max: expected"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(std::string("found \"") + bad), std::string::npos) << e.what();
    }
  }
}

TEST(Threads, ParsesCgroup1CfsQuota) {
  EXPECT_FALSE(parse_cgroup1_cfs_quota("-1\n", "100000\n").has_value());
  EXPECT_DOUBLE_EQ(*parse_cgroup1_cfs_quota("250000\n", "100000\n"), 2.5);
  EXPECT_DOUBLE_EQ(*parse_cgroup1_cfs_quota("50000", "200000"), 0.25);
  EXPECT_THROW(parse_cgroup1_cfs_quota("0", "100000"), std::invalid_argument);
  EXPECT_THROW(parse_cgroup1_cfs_quota("-2", "100000"), std::invalid_argument);
  EXPECT_THROW(parse_cgroup1_cfs_quota("x", "100000"), std::invalid_argument);
  try {
    parse_cgroup1_cfs_quota("100000", "0");
    ADD_FAILURE() << "accepted a period of 0";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("cpu.cfs_period_us"), std::string::npos) << e.what();
  }
}

TEST(Threads, QuotaPaysForThreadsRoundedUp) {
  EXPECT_EQ(rmt::runtime::threads_for_quota(0.25), 1);
  EXPECT_EQ(rmt::runtime::threads_for_quota(1.0), 1);
  EXPECT_EQ(rmt::runtime::threads_for_quota(1.5), 2);
  EXPECT_EQ(rmt::runtime::threads_for_quota(4.0), 4);
}

TEST(Threads, Cgroup2QuotaIsTheTightestOnThePath) {
  FakeRoot root;
  root.write("/sys/fs/cgroup/cpu.max", "max 100000\n");
  root.write("/sys/fs/cgroup/kubepods/cpu.max", "300000 100000\n");
  root.write("/sys/fs/cgroup/kubepods/pod1/cpu.max", "150000 100000\n");
  root.write("/sys/fs/cgroup/kubepods/pod1/app/cpu.max", "max 100000\n");
  auto quota = cgroup_cpu_quota("0::/kubepods/pod1/app\n", kMountinfoV2, root.str());
  ASSERT_TRUE(quota.has_value());
  EXPECT_DOUBLE_EQ(quota->cpus, 1.5);
  EXPECT_EQ(quota->file, "/sys/fs/cgroup/kubepods/pod1/cpu.max");

  // No quota anywhere on the path.
  EXPECT_FALSE(cgroup_cpu_quota("0::/other\n", kMountinfoV2, root.str()).has_value());
}

TEST(Threads, Cgroup2InAContainerNamespace) {
  // Inside a cgroup namespace the process sees its own cgroup as "/" at the mount point.
  FakeRoot root;
  root.write("/sys/fs/cgroup/cpu.max", "200000 100000\n");
  auto quota = cgroup_cpu_quota("0::/\n", kMountinfoV2, root.str());
  ASSERT_TRUE(quota.has_value());
  EXPECT_DOUBLE_EQ(quota->cpus, 2.0);
  // A mount whose root is the container's cgroup: the path is taken relative to it.
  const std::string mountinfo =
      "25 1 0:23 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
  root.write("/sys/fs/cgroup/job/cpu.max", "50000 100000\n");
  quota = cgroup_cpu_quota("0::/docker/abc/job\n", mountinfo, root.str());
  ASSERT_TRUE(quota.has_value());
  EXPECT_DOUBLE_EQ(quota->cpus, 0.5);
}

TEST(Threads, Cgroup1CpuController) {
  FakeRoot root;
  root.write("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
  root.write("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
  root.write("/sys/fs/cgroup/cpu,cpuacct/slurm/job7/cpu.cfs_quota_us", "100000\n");
  root.write("/sys/fs/cgroup/cpu,cpuacct/slurm/job7/cpu.cfs_period_us", "100000\n");
  const std::string cgroup =
      "4:memory:/slurm/job7\n3:cpuset:/\n2:cpu,cpuacct:/slurm/job7\n0::/slurm/job7\n";
  auto quota = cgroup_cpu_quota(cgroup, kMountinfoHybrid, root.str());
  ASSERT_TRUE(quota.has_value());
  EXPECT_DOUBLE_EQ(quota->cpus, 1.0);
  EXPECT_EQ(quota->file, "/sys/fs/cgroup/cpu,cpuacct/slurm/job7/cpu.cfs_quota_us");
}

TEST(Threads, MissingOrMalformedFilesMeanNoLimit) {
  FakeRoot root;
  EXPECT_FALSE(cgroup_cpu_quota("0::/a\n", kMountinfoV2, root.str()).has_value());
  root.write("/sys/fs/cgroup/a/cpu.max", "garbage\n");
  EXPECT_FALSE(cgroup_cpu_quota("0::/a\n", kMountinfoV2, root.str()).has_value());
  // No cgroup file system mounted, or an empty /proc/self/cgroup.
  EXPECT_FALSE(cgroup_cpu_quota("0::/a\n", "", root.str()).has_value());
  EXPECT_FALSE(cgroup_cpu_quota("", kMountinfoHybrid, root.str()).has_value());
}

TEST(Threads, AffinityMaskBoundsTheCount) {
  const int all = rmt::runtime::affinity_cpu_count();
  EXPECT_GE(all, 1);
  // A thread pinned to one CPU sees one.
  int pinned = 0;
  std::thread t([&] {
    cpu_set_t set;
    CPU_ZERO(&set);
    ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
    int first = 0;
    while (!CPU_ISSET(first, &set)) ++first;
    CPU_ZERO(&set);
    CPU_SET(first, &set);
    ASSERT_EQ(sched_setaffinity(0, sizeof set, &set), 0);
    pinned = rmt::runtime::affinity_cpu_count();
    const auto plan = rmt::runtime::plan_threads(0, nullptr, nullptr);
    EXPECT_LE(plan.threads, 1);
    EXPECT_EQ(plan.affinity_cpus, 1);
  });
  t.join();
  EXPECT_EQ(pinned, 1);
}

TEST(Threads, EnvironmentAndRequestOverrideTheDefault) {
  using rmt::runtime::plan_threads;
  EXPECT_EQ(plan_threads(3, "5", nullptr).threads, 3);
  EXPECT_EQ(plan_threads(3, "5", nullptr).source, "requested");
  EXPECT_EQ(plan_threads(0, "5", "7").threads, 5);
  EXPECT_EQ(plan_threads(0, "5", "7").source, "OMP_NUM_THREADS");
  EXPECT_EQ(plan_threads(0, "4,2", nullptr).threads, 4);  // nested levels: the outer one
  EXPECT_EQ(plan_threads(0, nullptr, "7").threads, 7);
  EXPECT_EQ(plan_threads(0, "", "7").source, "MKL_NUM_THREADS");
  const auto by_default = plan_threads(0, nullptr, nullptr);
  EXPECT_EQ(by_default.threads, rmt::runtime::default_thread_count());
  EXPECT_EQ(plan_threads(0, nullptr, nullptr, 1 << 20).threads, 1);  // never 0
  // Ranks started together share the CPUs; an explicit count or OMP_NUM_THREADS is not divided.
  EXPECT_EQ(plan_threads(0, nullptr, nullptr, 2).threads, std::max(1, by_default.threads / 2));
  EXPECT_EQ(plan_threads(0, "3", nullptr, 2).threads, 3);
  EXPECT_EQ(plan_threads(4, nullptr, nullptr, 2).threads, 4);
  try {
    plan_threads(0, "two", nullptr);
    ADD_FAILURE() << "accepted OMP_NUM_THREADS=two";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("OMP_NUM_THREADS=\"two\""), std::string::npos) << e.what();
  }
  EXPECT_THROW(plan_threads(0, "0", nullptr), std::invalid_argument);
}

TEST(Threads, ConfigureSetsLibTorch) {
  const auto s = rmt::runtime::configure_threads(1);
  EXPECT_EQ(s.threads, 1);
  EXPECT_EQ(at::get_num_threads(), 1);
  EXPECT_NE(rmt::runtime::describe(s).find("1 thread (requested"), std::string::npos)
      << rmt::runtime::describe(s);
}

// This program has the preinit entry: libgomp, started before main(), took GOMP_SPINCOUNT=20000,
// unless the user had chosen a wait policy. OMP_DISPLAY_ENV=VERBOSE makes it print what it took.
RMT_OPENMP_WAIT_POLICY_PREINIT();

TEST(Threads, Nothing) {}

std::string run_self(const std::string& environment) {
  const std::string command = "env -u GOMP_SPINCOUNT -u OMP_WAIT_POLICY OMP_DISPLAY_ENV=VERBOSE " +
                              environment + " /proc/" + std::to_string(getpid()) +
                              "/exe --gtest_filter=Threads.Nothing 2>&1";
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return out;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) out.append(buffer, n);
  pclose(pipe);
  return out;
}

TEST(Threads, PreinitSetsTheSpinCountBeforeOpenMPStarts) {
  const std::string by_default = run_self("");
  EXPECT_NE(by_default.find("GOMP_SPINCOUNT = '20000'"), std::string::npos) << by_default;
  const std::string passive = run_self("OMP_WAIT_POLICY=PASSIVE");
  EXPECT_NE(passive.find("OMP_WAIT_POLICY = 'PASSIVE'"), std::string::npos) << passive;
  EXPECT_NE(passive.find("GOMP_SPINCOUNT = '0'"), std::string::npos) << passive;
  const std::string chosen = run_self("GOMP_SPINCOUNT=12345");
  EXPECT_NE(chosen.find("GOMP_SPINCOUNT = '12345'"), std::string::npos) << chosen;
}

TEST(Threads, ToolsStartWithTheDefaultSpinCount) {
  const std::string tool = rmt::test::tool_path("rmt-infer");
  if (!std::filesystem::exists(tool)) GTEST_SKIP() << tool << " is not built";
  const auto display = [&](const std::string& environment) {
    std::string out;
    FILE* pipe = popen(("env -u GOMP_SPINCOUNT -u OMP_WAIT_POLICY OMP_DISPLAY_ENV=VERBOSE " + environment +
                        " " + rmt::test::quote(tool) + " --help 2>&1").c_str(), "r");
    if (pipe == nullptr) return out;
    char buffer[4096];
    size_t n;
    while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) out.append(buffer, n);
    pclose(pipe);
    return out;
  };
  const std::string by_default = display("");
  EXPECT_NE(by_default.find("GOMP_SPINCOUNT = '20000'"), std::string::npos) << by_default;
  EXPECT_NE(by_default.find("--threads"), std::string::npos) << by_default;  // the tool ran
  const std::string active = display("OMP_WAIT_POLICY=ACTIVE");
  EXPECT_NE(active.find("OMP_WAIT_POLICY = 'ACTIVE'"), std::string::npos) << active;
  EXPECT_EQ(active.find("GOMP_SPINCOUNT = '20000'"), std::string::npos) << active;
}

// Model::forward's run-queue feedback (rmt/runtime/busy_cpus.h): the decisions on made-up
// forwards, the scoped thread count, and the kernel's wait counter. Its effect on speed is shown
// by benchmarks/bench_models --contend 1.
TEST(BusyCpus, OneThreadForADoublingRunOfForwardsWhileTheCpusAreBusy) {
  using rmt::runtime::BusyCpuGovernor;
  BusyCpuGovernor g;
  auto single_run = [&] {  // forwards on one thread before the next try on two
    int n = 0;
    while (g.threads_for_next(2) == 1) {
      g.record(1, 1.0, 0.0);
      ++n;
      if (n > 1000) break;
    }
    return n;
  };
  EXPECT_EQ(g.threads_for_next(2), 2);
  g.record(2, 1.0, 0.01);  // quiet
  EXPECT_EQ(g.threads_for_next(2), 2);
  g.record(2, 1.0, 0.10);  // between the thresholds: no change
  EXPECT_EQ(g.threads_for_next(2), 2);
  g.record(2, 1.0, 0.30);  // busy
  EXPECT_EQ(g.threads_for_next(1), 1);  // one planned thread stays one and counts nothing
  EXPECT_EQ(single_run(), BusyCpuGovernor::kFirstBackoff);
  // (single_run's last call was the try on two threads.) Still busy each time: 8, 16, 32, 64, 64.
  for (int expected : {8, 16, 32, 64, 64}) {
    g.record(2, 1.0, 0.30);
    EXPECT_EQ(single_run(), expected);
  }
  g.record(2, 1.0, 0.01);  // free again: the next busy spell starts from the first backoff
  g.record(2, 1.0, 0.30);
  EXPECT_EQ(single_run(), BusyCpuGovernor::kFirstBackoff);
  g.record(1, 1.0, 0.9);  // a forward on one thread never counts
  EXPECT_EQ(g.threads_for_next(2), 2);
}

TEST(BusyCpus, ScopedThreadCountComesBack) {
  at::set_num_threads(2);
  {
    rmt::runtime::ScopedThreadCount one(1);
    EXPECT_EQ(at::get_num_threads(), 1);
  }
  EXPECT_EQ(at::get_num_threads(), 2);
  // The model's forward leaves the caller's count as it found it.
  auto model = rmt::Model::from_preset("rmt_t");
  model.eval();
  torch::NoGradGuard no_grad;
  model.forward(torch::randn({1, 3, 64, 64}));
  EXPECT_EQ(at::get_num_threads(), 2);
}

TEST(BusyCpus, RunQueueWaitIsCountedOnLinux) {
  const auto before = rmt::runtime::run_queue_wait_seconds();
  ASSERT_TRUE(before.has_value()) << "no /proc/thread-self/schedstat";
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  const auto after = rmt::runtime::run_queue_wait_seconds();
  ASSERT_TRUE(after.has_value());
  EXPECT_GE(*after, *before);
}

// Registered again by tests/CMakeLists.txt with RMT_BUSY_CPUS=bogus, which must be refused by name.
TEST(BusyCpus, Setting) {
  const char* v = std::getenv("RMT_BUSY_CPUS");
  EXPECT_EQ(rmt::runtime::busy_cpu_feedback_enabled(), !(v && std::string(v) == "ignore"));
}

// runtime/guided_parallel.h: every index exactly once, in chunks of at least `least` that start a
// multiple of `align` after `begin` and hold a multiple of `align` except the one that ends the
// range, on 1 to 3 threads (in a parallel region where there are several); inside a parallel
// region the calling thread takes the whole range as one chunk.
TEST(GuidedParallel, ChunksCoverTheRangeOnce) {
  const int before = at::get_num_threads();
  struct Case {
    int64_t begin, end, least, align;
  };
  // slow: every thread but the calling one sleeps in each chunk, so the calling thread takes from
  // the others' shares (and, where it is the slow one in turn, they from its own).
  for (const int threads : {1, 2, 3}) for (const bool slow : {false, true}) {
    at::set_num_threads(threads);
    for (const Case c : {Case{0, 0, 1, 1}, Case{5, 6, 1, 1}, Case{0, 196, 12, 6},
                         Case{3, 1000, 1, 1}, Case{0, 49, 64, 1}, Case{10, 43, 2, 4},
                         Case{7, 3143, 12, 6}, Case{0, 31, 5, 8}, Case{1, 100, 17, 6}}) {
      std::vector<std::atomic<int>> seen(static_cast<size_t>(c.end + 1));
      std::atomic<int> bad_chunks{0}, serial_chunks{0};
      const bool threaded = threads > 1 && c.end - c.begin > c.least;
      rmt::runtime::parallel_for_guided(c.begin, c.end, c.least, c.align,
                                        [&](int64_t i0, int64_t i1) {
        if (i1 - i0 < std::min(c.least, c.end - c.begin) || (i0 - c.begin) % c.align != 0 ||
            (i1 != c.end && (i1 - i0) % c.align != 0)) {
          ++bad_chunks;
        }
        if (threaded && !at::in_parallel_region()) ++serial_chunks;
        for (int64_t i = i0; i < i1; ++i) ++seen[static_cast<size_t>(i)];
        if (slow && at::get_thread_num() != 0) {
          std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
      });
      for (int64_t i = 0; i < c.end; ++i) {
        EXPECT_EQ(seen[static_cast<size_t>(i)].load(), i >= c.begin ? 1 : 0)
            << "index " << i << " of [" << c.begin << ", " << c.end << ") on " << threads
            << " threads" << (slow ? ", slow helpers" : "");
      }
      EXPECT_EQ(bad_chunks.load(), 0) << "[" << c.begin << ", " << c.end << ") on " << threads;
      EXPECT_EQ(serial_chunks.load(), 0) << "[" << c.begin << ", " << c.end << ") on " << threads
                                         << " threads ran outside a parallel region";
    }
  }
  at::set_num_threads(2);
  std::atomic<int> calls{0}, whole{0};
  at::parallel_for(0, 2, 1, [&](int64_t, int64_t) {
    rmt::runtime::parallel_for_guided(0, 100, 1, 1, [&](int64_t i0, int64_t i1) {
      ++calls;
      whole += i0 == 0 && i1 == 100;
    });
  });
  EXPECT_EQ(calls.load(), whole.load());
  EXPECT_GE(calls.load(), 1);
  at::set_num_threads(before);
}

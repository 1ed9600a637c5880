#pragma once
// How many CPU threads the model runs on, and how they wait: the CPUs this process may really use
// (its affinity mask, its cgroup's CPU quota) rather than the CPUs the machine has, and OpenMP
// threads that sleep soon instead of spinning through a time slice their partner needs.
//
// The library never changes the thread settings by itself: an application calls
// configure_threads() (the tools do at start-up), or sets at::set_num_threads itself. README.md,
// "Threads", lists every knob.

#include <optional>
#include <string>

namespace rmt::runtime {

// A CPU quota in CPUs' worth of time (cpu.max "150000 100000" is 1.5).
struct CpuQuota {
  double cpus = 0;
  std::string file;  // the file it was read from
};

// The text of cgroup v2's cpu.max ("max 100000", "150000 100000"): the quota in CPUs, or nullopt
// for "max" (no limit). Throws std::invalid_argument, naming the text, for anything else.
std::optional<double> parse_cgroup2_cpu_max(const std::string& text);

// cgroup v1's cpu.cfs_quota_us and cpu.cfs_period_us texts ("-1" is no limit). Throws
// std::invalid_argument, naming the text, for a malformed number or a period <= 0.
std::optional<double> parse_cgroup1_cfs_quota(const std::string& quota_us, const std::string& period_us);

// The tightest CPU quota on this process's cgroup and its ancestors, from the texts of
// /proc/self/cgroup and /proc/self/mountinfo (cgroup v2, and v1's cpu controller, hybrid setups
// included); `root` is prepended to every cgroup file path (tests point it at fake files). Files
// that are missing, unreadable or malformed count as no limit: a tool must still start.
std::optional<CpuQuota> cgroup_cpu_quota(const std::string& proc_self_cgroup,
                                         const std::string& proc_self_mountinfo,
                                         const std::string& root = "");

// The same for this process (reads /proc/self/cgroup and /proc/self/mountinfo).
std::optional<CpuQuota> cgroup_cpu_quota();

// CPUs in the calling thread's affinity mask (sched_getaffinity; taskset, numactl, a Slurm or
// Kubernetes cpuset), or std::thread::hardware_concurrency() where that fails; at least 1.
int affinity_cpu_count();

// The threads a CPU quota pays for: ceil(cpus), at least 1 (a quota of 1.5 CPUs runs 2 threads
// 75% of each period, more work than 1 thread all of it).
int threads_for_quota(double cpus);

// What a process should use: min(affinity_cpu_count(), threads_for_quota(quota)), divided among
// `processes_sharing` processes started together on this machine (torchrun's LOCAL_WORLD_SIZE),
// at least 1.
int default_thread_count(int processes_sharing = 1);

// Where the thread count came from, and what was set.
struct ThreadSettings {
  int threads = 1;          // what at::set_num_threads was given
  std::string source;       // "requested", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "affinity", "cgroup quota"
  int affinity_cpus = 0;
  std::optional<CpuQuota> quota;
  std::string wait_policy;  // OMP_WAIT_POLICY and GOMP_SPINCOUNT as this process started with them
};

// The thread count to use, without setting anything: `requested` when > 0; else the leading number
// of OMP_NUM_THREADS, then MKL_NUM_THREADS, when set (`omp_num_threads`, `mkl_num_threads`: their
// texts, nullptr when unset; a text without a leading positive integer throws
// std::invalid_argument naming it); else default_thread_count(processes_sharing).
ThreadSettings plan_threads(int requested, const char* omp_num_threads, const char* mkl_num_threads,
                            int processes_sharing = 1);

// plan_threads() with this process's environment, then at::set_num_threads (OpenMP and MKL) and,
// when OpenBLAS is loaded (Debian's LibTorch), openblas_set_num_threads. Call it before the first
// forward, from the thread that runs the model. It cannot change the OpenMP wait policy, which the
// OpenMP runtime reads once when it loads: see rmt/runtime/wait_policy.h.
ThreadSettings configure_threads(int requested = 0, int processes_sharing = 1);

// One line for logs: "2 threads (affinity: 2 CPUs, cgroup quota: none; GOMP_SPINCOUNT=20000)".
std::string describe(const ThreadSettings& settings);

}  // namespace rmt::runtime

#include "rmt/runtime/threads.h"

#include <dlfcn.h>
#include <sched.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include <ATen/Parallel.h>
#include <fmt/format.h>

#include "rmt/io/untrusted.h"
#include "runtime/whole_integer.h"

namespace rmt::runtime {
namespace {

// The text quoted for an error message: escaped and cut as every message of the library is.
std::string quoted(const std::string& text) {
  return fmt::format("\"{}\"", escape_and_cut(text, 80));
}

std::string trimmed(const std::string& s) {
  const auto begin = s.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos) return {};
  return s.substr(begin, s.find_last_not_of(" \t\r\n") - begin + 1);
}

std::vector<std::string> split(const std::string& s, char separator) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, separator)) out.push_back(item);
  return out;
}

std::optional<std::string> read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::string text;
  char buffer[4096];
  // cgroup files are a line; never read more than a page of a file that is not one.
  in.read(buffer, sizeof buffer);
  text.assign(buffer, static_cast<size_t>(in.gcount()));
  return text;
}

// A cgroup hierarchy mounted here: its mount point and the cgroup path of the mount's root.
struct Mount {
  std::string point, root;
};

// The mount of cgroup v2 (`v2`) or of the v1 hierarchy with the cpu controller, from mountinfo:
// "ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS".
std::optional<Mount> find_mount(const std::string& mountinfo, bool v2) {
  std::stringstream in(mountinfo);
  std::string line;
  while (std::getline(in, line)) {
    std::stringstream fields(line);
    std::vector<std::string> f;
    std::string word;
    while (fields >> word) f.push_back(word);
    const auto dash = std::find(f.begin(), f.end(), "-");
    if (f.size() < 5 || dash == f.end() || f.end() - dash < 4) continue;
    const std::string& type = dash[1];
    if (v2 ? type != "cgroup2" : type != "cgroup") continue;
    if (!v2) {
      const auto options = split(dash[3], ',');
      if (std::find(options.begin(), options.end(), "cpu") == options.end()) continue;
    }
    return Mount{f[4], f[3]};
  }
  return std::nullopt;
}

// This process's cgroup path in the v2 hierarchy ("0::PATH") or in the v1 hierarchy whose
// controller list holds "cpu" ("N:cpu,cpuacct:PATH").
std::optional<std::string> cgroup_path(const std::string& proc_self_cgroup, bool v2) {
  std::stringstream in(proc_self_cgroup);
  std::string line;
  while (std::getline(in, line)) {
    const auto first = line.find(':');
    const auto second = first == std::string::npos ? first : line.find(':', first + 1);
    if (second == std::string::npos) continue;
    const std::string id = line.substr(0, first);
    const std::string controllers = line.substr(first + 1, second - first - 1);
    const std::string path = trimmed(line.substr(second + 1));
    if (v2) {
      if (id == "0" && controllers.empty()) return path;
    } else {
      const auto list = split(controllers, ',');
      if (std::find(list.begin(), list.end(), "cpu") != list.end()) return path;
    }
  }
  return std::nullopt;
}

// The folders to read, from this process's cgroup up to the mount point: the tightest quota on the
// way applies. A path outside the mount's root (another cgroup namespace) reads the mount point.
std::vector<std::string> folders_up(const Mount& mount, const std::string& path) {
  std::string relative;
  if (mount.root == "/") {
    relative = path;
  } else if (path.compare(0, mount.root.size(), mount.root) == 0 &&
             (path.size() == mount.root.size() || path[mount.root.size()] == '/')) {
    relative = path.substr(mount.root.size());
  }
  std::vector<std::string> folders;
  while (!relative.empty() && relative != "/") {
    folders.push_back(mount.point + relative);
    relative = relative.substr(0, relative.find_last_of('/'));
  }
  folders.push_back(mount.point);
  return folders;
}

void keep_tighter(std::optional<CpuQuota>& best, std::optional<double> cpus, const std::string& file) {
  if (cpus && (!best || *cpus < best->cpus)) best = CpuQuota{*cpus, file};
}

// The leading positive integer of an OMP_NUM_THREADS-like text ("4", "4,2" for nested levels).
int leading_count(const char* name, const char* text) {
  const std::string s = trimmed(text);
  const auto value = whole_integer(s.substr(0, s.find(',')));
  if (!value || *value < 1 || *value > 1 << 20) {
    throw std::invalid_argument(fmt::format(
        "{0}={1}: expected a positive number of threads (e.g. {0}=2)", name, quoted(text)));
  }
  return static_cast<int>(*value);
}

std::string wait_policy_text() {
  std::string out;
  for (const char* name : {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"}) {
    if (const char* v = std::getenv(name)) {
      fmt::format_to(std::back_inserter(out), "{}{}={}", out.empty() ? "" : " ", name, v);
    }
  }
  return out.empty() ? "OpenMP's default wait policy (spinning)" : out;
}

}  // namespace

std::optional<double> parse_cgroup2_cpu_max(const std::string& text) {
  const auto fields = split(trimmed(text), ' ');
  if (fields.size() == 1 || fields.size() == 2) {
    const auto period = fields.size() == 2 ? whole_integer(fields[1]) : std::optional<int64_t>(100000);
    if (period && *period > 0) {
      if (fields[0] == "max") return std::nullopt;
      const auto quota = whole_integer(fields[0]);
      if (quota && *quota > 0) return static_cast<double>(*quota) / static_cast<double>(*period);
    }
  }
  throw std::invalid_argument(fmt::format("cpu.max: expected \"max PERIOD\" or \"QUOTA PERIOD\" "
                                          "(positive microseconds), found {}",
                                          quoted(text)));
}

std::optional<double> parse_cgroup1_cfs_quota(const std::string& quota_us, const std::string& period_us) {
  const auto quota = whole_integer(trimmed(quota_us));
  const auto period = whole_integer(trimmed(period_us));
  if (!quota || (*quota <= 0 && *quota != -1)) {
    throw std::invalid_argument(fmt::format("cpu.cfs_quota_us: expected -1 or a positive number of "
                                            "microseconds, found {}",
                                            quoted(quota_us)));
  }
  if (!period || *period <= 0) {
    throw std::invalid_argument(
        fmt::format("cpu.cfs_period_us: expected a positive number of microseconds, found {}",
                    quoted(period_us)));
  }
  if (*quota == -1) return std::nullopt;
  return static_cast<double>(*quota) / static_cast<double>(*period);
}

std::optional<CpuQuota> cgroup_cpu_quota(const std::string& proc_self_cgroup,
                                         const std::string& proc_self_mountinfo,
                                         const std::string& root) {
  std::optional<CpuQuota> best;
  // cgroup v2 (also the unified part of a hybrid setup, where it usually has no cpu.max).
  const auto mount2 = find_mount(proc_self_mountinfo, true);
  const auto path2 = cgroup_path(proc_self_cgroup, true);
  if (mount2 && path2) {
    for (const auto& folder : folders_up(*mount2, *path2)) {
      const std::string file = root + folder + "/cpu.max";
      if (const auto text = read_text(file)) {
        try {
          keep_tighter(best, parse_cgroup2_cpu_max(*text), folder + "/cpu.max");
        } catch (const std::invalid_argument&) {
          // The kernel writes these files: a malformed one is not ours to refuse.
        }
      }
    }
  }
  // cgroup v1's cpu controller.
  const auto mount1 = find_mount(proc_self_mountinfo, false);
  const auto path1 = cgroup_path(proc_self_cgroup, false);
  if (mount1 && path1) {
    for (const auto& folder : folders_up(*mount1, *path1)) {
      const auto quota = read_text(root + folder + "/cpu.cfs_quota_us");
      const auto period = read_text(root + folder + "/cpu.cfs_period_us");
      if (!quota || !period) continue;
      try {
        keep_tighter(best, parse_cgroup1_cfs_quota(*quota, *period), folder + "/cpu.cfs_quota_us");
      } catch (const std::invalid_argument&) {
      }
    }
  }
  return best;
}

std::optional<CpuQuota> cgroup_cpu_quota() {
  const auto cgroup = read_text("/proc/self/cgroup");
  std::ifstream in("/proc/self/mountinfo");
  std::stringstream mountinfo;
  mountinfo << in.rdbuf();
  if (!cgroup) return std::nullopt;
  return cgroup_cpu_quota(*cgroup, mountinfo.str());
}

int affinity_cpu_count() {
  // Masks for up to 8192 CPUs; a larger machine falls back to the count of its CPUs.
  const int max_cpus = 8192;
  cpu_set_t* set = CPU_ALLOC(max_cpus);
  int count = 0;
  if (set != nullptr) {
    const size_t size = CPU_ALLOC_SIZE(max_cpus);
    if (sched_getaffinity(0, size, set) == 0) count = CPU_COUNT_S(size, set);
    CPU_FREE(set);
  }
  if (count <= 0) count = static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1, count);
}

int threads_for_quota(double cpus) {
  if (!(cpus > 0) || !std::isfinite(cpus)) return 1;
  return static_cast<int>(std::max(1.0, std::min(std::ceil(cpus - 1e-9), 1e6)));
}

int default_thread_count(int processes_sharing) {
  return plan_threads(0, nullptr, nullptr, processes_sharing).threads;
}

ThreadSettings plan_threads(int requested, const char* omp_num_threads, const char* mkl_num_threads,
                            int processes_sharing) {
  ThreadSettings s;
  s.affinity_cpus = affinity_cpu_count();
  s.quota = cgroup_cpu_quota();
  s.wait_policy = wait_policy_text();
  if (requested > 0) {
    s.threads = requested;
    s.source = "requested";
  } else if (omp_num_threads != nullptr && *omp_num_threads != '\0') {
    s.threads = leading_count("OMP_NUM_THREADS", omp_num_threads);
    s.source = "OMP_NUM_THREADS";
  } else if (mkl_num_threads != nullptr && *mkl_num_threads != '\0') {
    s.threads = leading_count("MKL_NUM_THREADS", mkl_num_threads);
    s.source = "MKL_NUM_THREADS";
  } else {
    int threads = s.affinity_cpus;
    s.source = "affinity";
    if (s.quota && threads_for_quota(s.quota->cpus) < threads) {
      threads = threads_for_quota(s.quota->cpus);
      s.source = "cgroup quota";
    }
    s.threads = std::max(1, threads / std::max(1, processes_sharing));
    if (processes_sharing > 1) {
      fmt::format_to(std::back_inserter(s.source), " / {} processes", processes_sharing);
    }
  }
  return s;
}

ThreadSettings configure_threads(int requested, int processes_sharing) {
  auto s = plan_threads(requested, std::getenv("OMP_NUM_THREADS"), std::getenv("MKL_NUM_THREADS"),
                        processes_sharing);
  at::set_num_threads(s.threads);
  // Debian's LibTorch uses OpenBLAS, whose own thread pool at::set_num_threads does not size.
  using SetThreads = void (*)(int);
  if (auto openblas = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    if (std::getenv("OPENBLAS_NUM_THREADS") == nullptr || requested > 0) openblas(s.threads);
  }
  return s;
}

std::string describe(const ThreadSettings& s) {
  // The quota as an ostream shows a double: 6 significant digits (%g).
  return fmt::format("{} {} ({}; affinity: {} CPUs, cgroup quota: {}; {})", s.threads,
                     s.threads == 1 ? "thread" : "threads", s.source, s.affinity_cpus,
                     s.quota ? fmt::format("{:g} CPUs", s.quota->cpus) : std::string("none"),
                     s.wait_policy);
}

}  // namespace rmt::runtime

// End-to-end throughput and peak memory of RMT models: the library's path (fused MaSA operators)
// against the literal path (the authors' op chain: materialized masks and score matrices, the same
// permutes), in one run on one machine.
//
//   bench_models [--device cpu|cuda] [--dtype float32|float16|bfloat16] [--repeats N]
//                [--models rmt_t,rmt_s,rmt_b,rmt_l] [--batches 1,16] [--dense 512,1024]
//
// Each measurement runs in a child process of its own, so that its peak resident memory (CPU) is
// its own; on CUDA the caching allocator's peak is reported. Times are the median of --repeats runs
// after one warm-up run. Random weights: speed does not depend on their values.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include <torch/cuda.h>

#include "rmt/rmt.h"

#ifdef RMT_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace {

struct Options {
  std::string device = "cpu";
  at::ScalarType dtype = at::kFloat;
  int repeats = 3;
  std::vector<std::string> models{"rmt_t", "rmt_s", "rmt_b", "rmt_l"};
  std::vector<int64_t> batches{1, 16};
  std::vector<int64_t> dense_sizes{512, 1024};
  std::string dense_model = "rmt_t_dense";
};

struct Result {
  double seconds = 0;       // median per forward
  double peak_mib = 0;      // CPU: peak RSS of the child; CUDA: allocator peak
  double baseline_mib = 0;  // CPU: RSS after building the model, before the first forward
  char error[256] = {0};
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(item);
  return out;
}

double rss_mib_now() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  long pages = 0, resident = 0;
  if (f) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return resident * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1 << 20);
}

void synchronize(const torch::Device& device) {
#ifdef RMT_WITH_CUDA
  if (device.is_cuda()) c10::cuda::device_synchronize();
#endif
}

Result measure(const Options& opt, const std::string& preset, int64_t batch, int64_t size,
               rmt::nn::Backend backend) {
  Result r;
  const torch::Device device(opt.device);
  auto model = rmt::Model::from_preset(preset);
  model.to(device, opt.dtype);
  model.eval();
  model.set_backend(backend);
  torch::NoGradGuard no_grad;
  auto images = torch::randn({batch, 3, size, size}).to(device, opt.dtype);
  r.baseline_mib = rss_mib_now();
#ifdef RMT_WITH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
#endif
  std::vector<double> times;
  for (int i = 0; i <= opt.repeats; ++i) {
    synchronize(device);
    const auto start = std::chrono::steady_clock::now();
    auto out = model.forward(images);
    synchronize(device);
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    if (i > 0) times.push_back(elapsed.count());  // run 0 warms up
  }
  std::sort(times.begin(), times.end());
  r.seconds = times[times.size() / 2];
  if (device.is_cuda()) {
#ifdef RMT_WITH_CUDA
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    r.peak_mib = stats.allocated_bytes[0].peak / double(1 << 20);
#endif
  } else {
    struct rusage usage {};
    getrusage(RUSAGE_SELF, &usage);
    r.peak_mib = usage.ru_maxrss / 1024.0;  // kilobytes on Linux
  }
  return r;
}

// Runs measure() in a child process and returns its result through a pipe.
Result measure_isolated(const Options& opt, const std::string& preset, int64_t batch, int64_t size,
                        rmt::nn::Backend backend) {
  int fds[2];
  Result r;
  if (pipe(fds) != 0) {
    std::snprintf(r.error, sizeof r.error, "pipe failed");
    return r;
  }
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    Result child;
    try {
      child = measure(opt, preset, batch, size, backend);
    } catch (const std::exception& e) {
      std::snprintf(child.error, sizeof child.error, "%s", e.what());
    }
    if (write(fds[1], &child, sizeof child) != static_cast<ssize_t>(sizeof child)) _exit(2);
    _exit(0);
  }
  close(fds[1]);
  if (read(fds[0], &r, sizeof r) != static_cast<ssize_t>(sizeof r)) {
    std::snprintf(r.error, sizeof r.error, "the measuring process died (out of memory?)");
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return r;
}

void row(const Options& opt, const std::string& preset, int64_t batch, int64_t size) {
  const auto fused = measure_isolated(opt, preset, batch, size, rmt::nn::Backend::Fused);
  const auto literal = measure_isolated(opt, preset, batch, size, rmt::nn::Backend::Reference);
  std::printf("| %s | %lldx%lld | %lld |", preset.c_str(), static_cast<long long>(size),
              static_cast<long long>(size), static_cast<long long>(batch));
  for (const auto* r : {&fused, &literal}) {
    if (r->error[0]) {
      std::printf(" error: %s | |", r->error);
    } else {
      std::printf(" %.2f | %.0f |", batch / r->seconds, r->peak_mib);
    }
  }
  if (!fused.error[0] && !literal.error[0]) {
    std::printf(" %.2fx | %.2f |\n", literal.seconds / fused.seconds,
                fused.peak_mib / literal.peak_mib);
  } else {
    std::printf(" | |\n");
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_models: %s needs a value\n", a.c_str());
        std::exit(1);
      }
      return argv[++i];
    };
    if (a == "--device") {
      opt.device = value();
    } else if (a == "--dtype") {
      const auto d = value();
      opt.dtype = d == "float16" ? at::kHalf : d == "bfloat16" ? at::kBFloat16 : at::kFloat;
    } else if (a == "--repeats") {
      opt.repeats = std::max(1, std::stoi(value()));
    } else if (a == "--models") {
      opt.models = split(value());
    } else if (a == "--batches") {
      opt.batches.clear();
      for (const auto& b : split(value())) opt.batches.push_back(std::stoll(b));
    } else if (a == "--dense-model") {
      opt.dense_model = value();
    } else if (a == "--dense") {
      opt.dense_sizes.clear();
      for (const auto& s : split(value())) opt.dense_sizes.push_back(std::stoll(s));
    } else {
      std::fprintf(stderr,
                   "usage: %s [--device cpu|cuda] [--dtype float32|float16|bfloat16] [--repeats N] "
                   "[--models a,b] [--batches 1,16] [--dense 512,1024] [--dense-model rmt_t_dense]\n",
                   argv[0]);
      return a == "--help" ? 0 : 1;
    }
  }
  if (opt.device == "cuda" && !torch::cuda::is_available()) {
    std::fprintf(stderr, "bench_models: --device cuda: no CUDA device\n");
    return 1;
  }
  // No ATen call that starts the thread pool before fork(): each child starts its own.
  std::printf("# RMT end to end: %s, %s, %ld cores, median of %d runs\n\n", opt.device.c_str(),
              c10::toString(opt.dtype), sysconf(_SC_NPROCESSORS_ONLN), opt.repeats);
  const char* memory = opt.device == "cuda" ? "peak GPU MiB" : "peak RSS MiB";
  std::printf("| model | input | batch | library img/s | library %s | literal img/s | literal %s | speed-up | memory ratio |\n",
              memory, memory);
  std::printf("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& m : opt.models) {
    for (const auto b : opt.batches) row(opt, m, b, 224);
  }
  for (const auto s : opt.dense_sizes) row(opt, opt.dense_model, 1, s);
  return 0;
}

// End-to-end throughput and peak memory of RMT models: the library's path (Backend::Fused) against
// the literal path (Backend::Reference: the authors' op sequence, materialized masks and score
// matrices, the same permutes, at::conv2d on permuted views), in one run on one machine.
//
//   bench_models [--device cpu|cuda] [--dtype float32|float16|bfloat16] [--repeats N]
//                [--min-seconds S] [--models rmt_t,rmt_s,rmt_b,rmt_l] [--batches 1,16]
//                [--dense 512,1024] [--dense-model rmt_t_dense] [--paths rmt,literal]
//                [--threads N] [--contend K] [--no-memory] [--linears] [--tag TEXT]
//                [--train rmt_t] [--train-batch 4] [--train-size 224]
//
// One row per implementation: `rmt` (the library's path) and `literal`; benchmarks/anchors.py
// prints the authors' model (eager and through ONNX Runtime) in the same format, and
// benchmarks/compare.sh runs both for the side-by-side table.
//
// Threads: --threads N (default: rmt::runtime::configure_threads(), what the tools use: the CPUs
// this process may run on, or OMP_NUM_THREADS); like the tools, this program starts its OpenMP
// threads with GOMP_SPINCOUNT=20000 unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set.
// --contend K starts K busy processes (a spinning loop each) before each row's timing and stops
// them after it: the machine under load.
//
// GEMM floor (CPU): each round also times a 1024x1024x1024 float32 at::mm on the same threads, under
// the same load; the floor is the model's FLOPs (2 x the multiply-accumulates rmt::summarize
// counts: convs, linear layers, attention matmuls) at that sgemm rate, in img/s, and "of floor" is
// the implementation's img/s as a share of it.
//
// --linears (CPU, float32): each round also runs the model's linear layers alone, in the forward's
// order, on as many tokens as the forward gives each and through the library's own GEMM path (the
// packed weights, q/k/v stacked as one GEMM, bias in the GEMM's pass): how fast this model's GEMMs
// run here at their own shapes (K of 64, 49 rows, every weight read once a forward), against the
// 1024^3 sgemm the floor assumes. A second table prints that rate, and a floor that counts the
// linear layers at it (the other FLOPs still at the sgemm rate) with the library's share of it.
//
// --against-batch B: for each batch size N other than B, one more child process times rmt's path on
// N images and on the same number of images in batches of B, alternately (one forward of N, then
// N/B forwards of B, repeated; 7 pairs at least, and until batch N has run --min-seconds), and
// prints the per-image speed of batch N against batch B as the median of the pairs' ratios
// ("# per image: ..."): two batch sizes compared under the same conditions, which separate
// processes on a shared host are not. No sgemm calls between them.
//
// Speed: one child process builds the model and times the two paths alternately (fused, literal,
// fused, literal, ...) after one warm-up run of each, at least --repeats times and until each path
// has run --min-seconds (default 10), and reports the median time of each. Alternating within one process makes the ratio robust to a machine whose speed drifts (a
// shared VM): both paths see the same conditions. Memory: each path runs one forward in a child
// process of its own, whose peak resident set (CPU) or caching-allocator peak (CUDA) is reported.
// Random weights: speed does not depend on their values.
//
// Training memory (--train, "none" to skip): the peak memory of one training step (forward and
// backward of a loss on the output, BatchNorm and stochastic depth in training mode) without and
// with activation checkpointing (use_checkpoints / use_checkpoint on every stage), each in a child
// process of its own.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/cuda.h>

#include "nn/token_linear.h"  // the library's GEMM path, for --linears
#include "rmt/rmt.h"
#include "rmt/runtime/memory.h"
#include "rmt/runtime/threads.h"
#include "rmt/runtime/wait_policy.h"

RMT_OPENMP_WAIT_POLICY_PREINIT();

#ifdef RMT_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace {

struct Options {
  std::string device = "cpu";
  at::ScalarType dtype = at::kFloat;
  int repeats = 3;        // at least this many timed runs of each path
  double min_seconds = 10;  // and more until each path has run this long
  std::vector<std::string> models{"rmt_t", "rmt_s", "rmt_b", "rmt_l"};
  std::vector<int64_t> batches{1, 16};
  std::vector<int64_t> dense_sizes{512, 1024};
  std::string dense_model = "rmt_t_dense";
  std::string train_model = "rmt_t";
  int64_t train_batch = 4, train_size = 224;
  int threads = 0;   // 0: rmt::runtime::configure_threads()'s default
  int contend = 0;   // busy processes during the timing
  bool memory = true;
  bool linears = false;  // time the model's linear layers alone too
  bool run_rmt = true, run_literal = true;
  std::string tag;  // appended to the path's name: "rmt [TAG]"
  int64_t against = 0;  // --against-batch: also time each batch size against this one, alternated
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(item);
  return out;
}

void synchronize(const torch::Device& device) {
#ifdef RMT_WITH_CUDA
  if (device.is_cuda()) c10::cuda::device_synchronize();
#endif
}

// Seconds `work` takes on `device`, its queued kernels included (CUDA: synchronized either side).
template <class F>
double seconds_of(const torch::Device& device, F&& work) {
  synchronize(device);
  const auto start = std::chrono::steady_clock::now();
  work();
  synchronize(device);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

struct Speed {
  double fused = 0, literal = 0;  // median seconds per forward
  double gemm_flops = 0;          // sgemm FLOP/s on the same threads (CPU; 0 on CUDA)
  double model_flops = 0;         // per image: 2 x rmt::summarize's multiply-accumulates
  double linear_flops = 0;        // per image: the linear layers' share of model_flops
  double linear_seconds = 0;      // median time of the linear layers alone (--linears), a batch
  int threads = 0;
};

// K processes that spin until stopped: the load a shared machine puts on the model.
class Contenders {
 public:
  explicit Contenders(int count) {
    for (int i = 0; i < count; ++i) {
      const pid_t pid = fork();
      if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        volatile unsigned long spin = 0;
        for (;;) spin = spin + 1;
      }
      if (pid > 0) pids_.push_back(pid);
    }
  }
  ~Contenders() {
    for (const pid_t pid : pids_) kill(pid, SIGKILL);
    for (const pid_t pid : pids_) waitpid(pid, nullptr, 0);
  }
  Contenders(const Contenders&) = delete;
  Contenders& operator=(const Contenders&) = delete;

 private:
  std::vector<pid_t> pids_;
};

int apply_threads(const Options& opt) {
  if (opt.device != "cpu") return at::get_num_threads();
  return rmt::runtime::configure_threads(opt.threads).threads;
}

rmt::Model build(const Options& opt, const std::string& preset, const torch::Device& device) {
  auto model = rmt::Model::from_preset(preset);
  model.to(device, opt.dtype);
  model.eval();
  return model;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The model's linear layers in the forward's order, each with its own weight and packed-weight
// cache, on inputs of the forward's token counts (one input tensor per shape, reused as the forward
// reuses freed activations). q_proj, k_proj and v_proj of one MaSA run as the library runs them:
// one GEMM over their stacked weights.
class LinearSweep {
 public:
  LinearSweep(const rmt::Model& model, const rmt::ModelSummary& summary) {
    const auto modules = model.module()->named_modules();
    std::map<std::pair<int64_t, int64_t>, at::Tensor> inputs;
    for (const auto& layer : summary.layers) {
      if (layer.kind != rmt::CostKind::Linear) continue;
      const auto* linear = modules[layer.name]->as<torch::nn::Linear>();
      const int64_t in = linear->options.in_features(), out = linear->options.out_features();
      const int64_t tokens = layer.macs / (in * out);
      auto& x = inputs[{tokens, in}];
      if (!x.defined()) x = torch::randn({tokens, in});
      const bool k_or_v = ends_with(layer.name, ".k_proj") || ends_with(layer.name, ".v_proj");
      if (k_or_v && !steps_.empty() && steps_.back().stacked) {
        steps_.back().linears.push_back(linear);
        continue;
      }
      Step step{{linear}, x, std::make_shared<rmt::nn::detail::PackedLinear>(),
                std::make_shared<rmt::nn::detail::PackedLinearStack>(),
                ends_with(layer.name, ".q_proj")};
      steps_.push_back(std::move(step));
    }
  }
  double seconds() {
    return seconds_of(torch::kCPU, [&] {
      for (auto& step : steps_) {
        if (step.stacked && step.linears.size() == 3) {
          const auto y = rmt::nn::detail::stacked_linear_tokens(
              *step.linears[0], *step.linears[1], *step.linears[2], step.x, step.stack.get());
          if (y) continue;
        }
        for (const auto* linear : step.linears)
          rmt::nn::detail::linear_tokens(*linear, step.x, step.packed.get());
      }
    });
  }

 private:
  static bool ends_with(const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
  }
  struct Step {
    std::vector<const torch::nn::LinearImpl*> linears;
    at::Tensor x;
    std::shared_ptr<rmt::nn::detail::PackedLinear> packed;
    std::shared_ptr<rmt::nn::detail::PackedLinearStack> stack;
    bool stacked = false;  // a q_proj, with its k_proj and v_proj
  };
  std::vector<Step> steps_;
};

Speed measure_speed(const Options& opt, const std::string& preset, int64_t batch, int64_t size) {
  Speed speed;
  speed.threads = apply_threads(opt);
  const torch::Device device(opt.device);
  auto model = build(opt, preset, device);
  const auto summary = rmt::summarize(model, size, size, batch);
  speed.model_flops = 2.0 * static_cast<double>(summary.total_macs()) / batch;
  speed.linear_flops = 2.0 * static_cast<double>(summary.linear_macs) / batch;
  torch::NoGradGuard no_grad;
  const bool sweep = opt.linears && device.is_cpu() && opt.dtype == at::kFloat;
  std::optional<LinearSweep> linears;
  if (sweep) linears.emplace(model, summary);
  auto images = torch::randn({batch, 3, size, size}).to(device, opt.dtype);
  auto timed = [&](rmt::nn::Backend backend) {
    model.set_backend(backend);
    return seconds_of(device, [&] { model.forward(images); });
  };
  const bool cpu = device.is_cpu();
  const int64_t n = 1024;
  auto a = torch::randn({n, n}), b = torch::randn({n, n}), c = torch::empty({n, n});
  auto gemm = [&] { return seconds_of(torch::kCPU, [&] { at::mm_out(c, a, b); }); };
  if (opt.run_rmt) timed(rmt::nn::Backend::Fused);  // warm-up
  if (opt.run_literal) timed(rmt::nn::Backend::Reference);
  if (cpu) gemm();
  if (sweep) linears->seconds();  // packs the weights
  std::vector<double> fused, literal, gemms, sweeps;
  double spent = 0;
  for (int i = 0; i < opt.repeats || spent < opt.min_seconds; ++i) {
    double least = 1e30;
    if (opt.run_rmt) {
      fused.push_back(timed(rmt::nn::Backend::Fused));
      least = fused.back();
    }
    if (opt.run_literal) {
      literal.push_back(timed(rmt::nn::Backend::Reference));
      least = std::min(least, literal.back());
    }
    // Enough sgemm calls for ~1/10 of a forward, timed as one: the rate under the same conditions.
    if (cpu) {
      double t = 0;
      int calls = 0;
      do {
        t += gemm();
        ++calls;
      } while (t < 0.1 * least && calls < 50);
      gemms.push_back(t / calls);
    }
    if (sweep) sweeps.push_back(linears->seconds());
    spent += least;
  }
  if (opt.run_rmt) speed.fused = median(fused);
  if (opt.run_literal) speed.literal = median(literal);
  if (cpu) speed.gemm_flops = 2.0 * n * n * n / median(gemms);
  if (sweep) speed.linear_seconds = median(sweeps);
  return speed;
}

// Per-image speed of batch `batch` against batch `against`, alternated in one process (see
// --against-batch): the median, least and greatest ratio over the pairs (> 1: `batch` is faster).
struct BatchRatio {
  double median = 0, least = 0, greatest = 0;
  int pairs = 0, threads = 0;
};

// Pairs at least: one pair's ratio swings by 10-20% on a shared host; the median of 7 much less.
constexpr int kLeastPairs = 7;

BatchRatio measure_batch_ratio(const Options& opt, const std::string& preset, int64_t batch,
                               int64_t size) {
  BatchRatio ratio;
  ratio.threads = apply_threads(opt);
  const torch::Device device(opt.device);
  auto model = build(opt, preset, device);
  model.set_backend(rmt::nn::Backend::Fused);
  torch::NoGradGuard no_grad;
  const int64_t calls = (batch + opt.against - 1) / opt.against;  // forwards of `against` a pair
  auto many = torch::randn({batch, 3, size, size}).to(device, opt.dtype);
  auto few = torch::randn({opt.against, 3, size, size}).to(device, opt.dtype);
  auto timed = [&](const at::Tensor& images, int64_t times) {
    return seconds_of(device, [&] {
      for (int64_t i = 0; i < times; ++i) model.forward(images);
    });
  };
  timed(many, 1);  // warm-up
  timed(few, 1);
  std::vector<double> ratios;
  double spent = 0;
  const int least_pairs = std::max(opt.repeats, kLeastPairs);
  while (static_cast<int>(ratios.size()) < least_pairs || spent < opt.min_seconds) {
    const double whole = timed(many, 1) / batch;
    const double parts = timed(few, calls) / (calls * opt.against);
    ratios.push_back(parts / whole);
    spent += whole * batch;
  }
  ratio.pairs = static_cast<int>(ratios.size());
  ratio.median = median(ratios);
  ratio.least = *std::min_element(ratios.begin(), ratios.end());
  ratio.greatest = *std::max_element(ratios.begin(), ratios.end());
  return ratio;
}

// Peak memory of one forward (after building the model and the input).
double measure_peak(const Options& opt, const std::string& preset, int64_t batch, int64_t size,
                    rmt::nn::Backend backend) {
  apply_threads(opt);
  const torch::Device device(opt.device);
  auto model = build(opt, preset, device);
  model.set_backend(backend);
  torch::NoGradGuard no_grad;
  auto images = torch::randn({batch, 3, size, size}).to(device, opt.dtype);
#ifdef RMT_WITH_CUDA
  const int index = device.index() < 0 ? 0 : device.index();
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(index);
#endif
  model.forward(images);
  synchronize(device);
  if (device.is_cuda()) {
#ifdef RMT_WITH_CUDA
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
    return stats.allocated_bytes[0].peak / double(1 << 20);
#endif
  }
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;  // kilobytes on Linux
}

// Peak memory of one training step, with activation checkpointing in every stage or without.
double measure_train_peak(const Options& opt, bool checkpoint) {
  apply_threads(opt);
  const torch::Device device(opt.device);
  auto p = rmt::preset(opt.train_model);
  p.config.use_checkpoint = checkpoint;
  p.config.use_checkpoints.assign(p.config.depths.size(), checkpoint);
  rmt::Model model(p.config, p.kind);
  model.to(device, opt.dtype);
  model.train();
  auto images = torch::randn({opt.train_batch, 3, opt.train_size, opt.train_size}).to(device, opt.dtype);
#ifdef RMT_WITH_CUDA
  const int index = device.index() < 0 ? 0 : device.index();
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(index);
#endif
  auto loss = torch::zeros({}, images.options());
  for (const auto& out : model.forward(images)) loss = loss + out.to(at::kFloat).square().mean();
  loss.backward();
  synchronize(device);
  if (device.is_cuda()) {
#ifdef RMT_WITH_CUDA
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
    return stats.allocated_bytes[0].peak / double(1 << 20);
#endif
  }
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

// Runs `work` in a child process and returns what it wrote (a trivially copyable T) through a
// pipe, or the error it threw.
template <class T, class F>
bool isolated(F work, T& result, std::string& error) {
  struct Message {
    T value;
    char error[256];
  } message{};
  int fds[2];
  if (pipe(fds) != 0) {
    error = "pipe failed";
    return false;
  }
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    Message out{};
    try {
      out.value = work();
    } catch (const std::exception& e) {
      *fmt::format_to_n(out.error, sizeof out.error - 1, "{}", e.what()).out = '\0';
    }
    if (write(fds[1], &out, sizeof out) != static_cast<ssize_t>(sizeof out)) _exit(2);
    _exit(0);
  }
  close(fds[1]);
  const bool got = read(fds[0], &message, sizeof message) == static_cast<ssize_t>(sizeof message);
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!got) {
    error = "the measuring process died (out of memory?)";
    return false;
  }
  if (message.error[0]) {
    error = message.error;
    return false;
  }
  result = message.value;
  return true;
}

void print_row(const Options& opt, const std::string& preset, const char* path, int64_t batch,
               int64_t size, const Speed& speed, double seconds, double peak) {
  const std::string name = opt.tag.empty() ? path : fmt::format("{} [{}]", path, opt.tag);
  fmt::print("| {} | {} | {}x{} | {} | {} | {} | {:.2f} |", preset, name, size, size, batch,
             speed.threads, opt.contend, batch / seconds);
  if (opt.memory) {
    fmt::print(" {:.0f} |", peak);
  } else {
    fmt::print(" |");
  }
  if (speed.gemm_flops > 0) {
    const double floor = speed.gemm_flops / speed.model_flops;  // img/s
    fmt::print(" {:.1f} | {:.2f} | {:.0f}% |\n", speed.gemm_flops / 1e9, floor,
               100.0 * batch / seconds / floor);
  } else {
    fmt::print(" | | |\n");
  }
}

// The --linears table's rows, printed after the main table.
std::vector<std::string> linear_rows;

void add_linear_row(const Options& opt, const std::string& preset, int64_t batch, int64_t size,
                    const Speed& speed) {
  if (speed.linear_seconds <= 0 || speed.gemm_flops <= 0) return;
  const double linear_rate = batch * speed.linear_flops / speed.linear_seconds;
  // The floor with the linear layers at their measured rate, everything else at the sgemm's.
  const double other = batch * (speed.model_flops - speed.linear_flops) / speed.gemm_flops;
  const double floor = batch / (speed.linear_seconds + other);
  linear_rows.push_back(fmt::format(
      "| {} | {}x{} | {} | {} | {} | {:.2f} | {:.2f} | {:.1f} | {:.1f} | {:.0f}% | {:.2f} | {} |\n",
      preset, size, size, batch, speed.threads, opt.contend, speed.linear_flops / 1e9,
      batch / speed.linear_seconds, linear_rate / 1e9, speed.gemm_flops / 1e9,
      100.0 * linear_rate / speed.gemm_flops, floor,
      opt.run_rmt ? fmt::format("{:.0f}%", 100.0 * batch / speed.fused / floor) : ""));
}

// The --against-batch lines, printed after the main table.
std::vector<std::string> ratio_lines;

void row(const Options& opt, const std::string& preset, int64_t batch, int64_t size) {
  Speed speed;
  double fused_peak = 0, literal_peak = 0;
  std::string error;
  bool ok;
  {
    Contenders load(opt.contend);
    ok = isolated([&] { return measure_speed(opt, preset, batch, size); }, speed, error);
  }
  if (ok && opt.memory && opt.run_rmt) {
    ok = isolated([&] { return measure_peak(opt, preset, batch, size, rmt::nn::Backend::Fused); },
                  fused_peak, error);
  }
  if (ok && opt.memory && opt.run_literal) {
    ok = isolated([&] { return measure_peak(opt, preset, batch, size, rmt::nn::Backend::Reference); },
                  literal_peak, error);
  }
  if (!ok) {
    fmt::print("| {} | | {}x{} | {} | | {} | error: {} | | | | |\n", preset, size, size, batch,
               opt.contend, error);
  } else {
    if (opt.run_rmt) print_row(opt, preset, "rmt", batch, size, speed, speed.fused, fused_peak);
    if (opt.run_literal) print_row(opt, preset, "literal", batch, size, speed, speed.literal, literal_peak);
    add_linear_row(opt, preset, batch, size, speed);
  }
  if (opt.against > 0 && batch != opt.against) {
    BatchRatio ratio;
    std::string why;
    bool measured;
    {
      Contenders load(opt.contend);
      measured =
          isolated([&] { return measure_batch_ratio(opt, preset, batch, size); }, ratio, why);
    }
    if (measured) {
      ratio_lines.push_back(fmt::format(
          "# per image: {} batch {} vs batch {}, {} threads, {} busy: {:.3f}x (median of {} pairs "
          "alternated in one process; least {:.3f}x, greatest {:.3f}x)\n",
          preset, batch, opt.against, ratio.threads, opt.contend, ratio.median, ratio.pairs,
          ratio.least, ratio.greatest));
    } else {
      ratio_lines.push_back(fmt::format("# per image: {} batch {} vs batch {}: error: {}\n", preset,
                                        batch, opt.against, why));
    }
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) try {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        fmt::print(stderr, "bench_models: {} needs a value\n", a);
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
    } else if (a == "--min-seconds") {
      opt.min_seconds = std::stod(value());
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
    } else if (a == "--threads") {
      opt.threads = std::max(0, std::stoi(value()));
    } else if (a == "--contend") {
      opt.contend = std::max(0, std::stoi(value()));
    } else if (a == "--against-batch") {
      opt.against = std::max(1LL, std::stoll(value()));
    } else if (a == "--tag") {
      opt.tag = value();
    } else if (a == "--linears") {
      opt.linears = true;
    } else if (a == "--no-memory") {
      opt.memory = false;
    } else if (a == "--paths") {
      opt.run_rmt = opt.run_literal = false;
      for (const auto& p : split(value())) {
        if (p == "rmt") {
          opt.run_rmt = true;
        } else if (p == "literal") {
          opt.run_literal = true;
        } else {
          fmt::print(stderr, "bench_models: --paths: expected rmt and/or literal, found '{}'\n", p);
          return 1;
        }
      }
    } else if (a == "--train") {
      opt.train_model = value();
    } else if (a == "--train-batch") {
      opt.train_batch = std::max(1LL, std::stoll(value()));
    } else if (a == "--train-size") {
      opt.train_size = std::max(1LL, std::stoll(value()));
    } else {
      fmt::print(stderr,
                 "usage: {} [--device cpu|cuda] [--dtype float32|float16|bfloat16] [--repeats N] "
                 "[--min-seconds S] "
                 "[--models a,b] [--batches 1,16] [--dense 512,1024] [--dense-model rmt_t_dense] "
                 "[--paths rmt,literal] [--threads N] [--contend K] [--no-memory] [--linears] [--against-batch B] [--tag TEXT] "
                 "[--train rmt_t|none] [--train-batch 4] [--train-size 224]\n",
                 argv[0]);
      return a == "--help" ? 0 : 1;
    }
  } catch (const std::logic_error&) {  // std::stoi and friends: not a number
    fmt::print(stderr, "bench_models: {}: expected a number, found '{}'\n", argv[i - 1],
               i < argc ? argv[i] : "");
    return 1;
  }
  if (opt.device == "cuda" && !torch::cuda::is_available()) {
    fmt::print(stderr, "bench_models: --device cuda: no CUDA device\n");
    return 1;
  }
  // No ATen call that starts the thread pool before fork(): each child starts its own. The plan
  // below only reads the affinity mask, the cgroup files and the environment.
  const auto plan = rmt::runtime::plan_threads(opt.threads, std::getenv("OMP_NUM_THREADS"),
                                               std::getenv("MKL_NUM_THREADS"));
  rmt::runtime::retain_freed_memory();  // as the tools do (rmt/runtime/memory.h)
  fmt::print("# RMT end to end: {}, {}, {} CPUs online; median of >= {} alternating runs and >= "
             "{:g} s per path\n# threads: {}; {} busy processes during the timing\n"
             "# malloc: {}\n# CPU linear layers: {} (RMT_CPU_LINEAR={})\n",
             opt.device, c10::toString(opt.dtype), sysconf(_SC_NPROCESSORS_ONLN), opt.repeats,
             opt.min_seconds,
             opt.device == "cpu" ? rmt::runtime::describe(plan) : std::string("(CUDA)"),
             opt.contend, rmt::runtime::freed_memory_policy(),
             rmt::nn::detail::packed_gemm_description(),
             std::getenv("RMT_CPU_LINEAR") ? std::getenv("RMT_CPU_LINEAR") : "unset: by CPU vendor");
  for (const auto& m : opt.models) {
    double gflop = 0;  // built in a child: building initialises weights, which may start OpenMP
    std::string error;
    if (isolated([&] { return 2e-9 * static_cast<double>(rmt::summarize(rmt::Model::from_preset(m)).total_macs()); },
                 gflop, error)) {
      fmt::print("# {}: {:.2f} GFLOP per image at 224x224 (2 x rmt::summarize's MACs)\n", m, gflop);
    }
  }
  fmt::print("\n");
  const char* memory = opt.device == "cuda" ? "peak GPU MiB" : "peak RSS MiB";
  fmt::print("| model | path | input | batch | threads | busy procs | img/s | {} | sgemm GFLOP/s | "
             "GEMM floor img/s | of floor |\n", memory);
  fmt::print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& m : opt.models) {
    for (const auto b : opt.batches) row(opt, m, b, 224);
  }
  for (const auto s : opt.dense_sizes) row(opt, opt.dense_model, 1, s);
  if (!ratio_lines.empty()) fmt::print("\n");
  for (const auto& line : ratio_lines) fmt::print("{}", line);
  if (!linear_rows.empty()) {
    fmt::print("\n# The linear layers alone (--linears), timed in the same rounds; the last two "
               "columns: a floor with the linear layers at their own rate, the other FLOPs at the "
               "sgemm's, and rmt's img/s as a share of it\n\n| model | input | batch | threads | "
               "busy procs | linear GFLOP/img | linears alone img/s | linear GFLOP/s | sgemm GFLOP/s "
               "| linear / sgemm | floor, linears at their rate img/s | rmt of that |\n"
               "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (const auto& line : linear_rows) fmt::print("{}", line);
  }
  if (opt.train_model != "none") {
    fmt::print("\n# Training step (forward + backward), activation checkpointing off and on\n\n");
    fmt::print("| model | input | batch | {0} | {0}, checkpointed | ratio |\n|---|---|---:|---:|---:|---:|\n",
               memory);
    double plain = 0, checkpointed = 0;
    std::string error;
    fmt::print("| {} | {}x{} | {} |", opt.train_model, opt.train_size, opt.train_size,
               opt.train_batch);
    if (isolated([&] { return measure_train_peak(opt, false); }, plain, error) &&
        isolated([&] { return measure_train_peak(opt, true); }, checkpointed, error)) {
      fmt::print(" {:.0f} | {:.0f} | {:.2f} |\n", plain, checkpointed, checkpointed / plain);
    } else {
      fmt::print(" error: {} | | |\n", error);
    }
  }
  return 0;
}

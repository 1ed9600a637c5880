// Times the MaSA operators on the feature maps of every RMT stage: the fused operator (rmt::ops),
// the authors' op chain (rmt::ops::reference), and the chain's rotation followed by
// at::scaled_dot_product_attention with a materialized decay mask.
//
//   bench_ops [--device auto|cpu|cuda] [--batch N] [--dense-batch N] [--dtype float|half|bfloat16]
//             [--groups N] [--no-backward] [--only 224|1024]
//
// Two input settings: a 224x224 image (RMT-S stages 56x56, 28x28, 14x14, 7x7, heads 4/4/8/16, head
// dims 16/32/32/32; batch 64 on a GPU, 1 on the CPU) and a 1024x1024 dense input (stages 256x256 ...
// 32x32; batch 8 on a GPU, 1 on the CPU). Every operator runs on every stage, except where an
// implementation would not fit (the chain's L x L scores, the mask) or would take too long; those
// cells read "skip". GB/s counts the fewest bytes an implementation must move (q, k, v, sin, cos
// read once, the output written once); TFLOP/s counts 2 flops per multiply-add of the score and
// value products (exp and the mask are not counted).
//
// Timing: warm-up, then `groups` groups of back-to-back calls (enough calls for ~20 ms a group on
// a GPU), synchronized around each group; the median over groups of the mean time of one call.
// Inputs rotate among several copies when one set would fit in the GPU's L2 cache.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/autograd.h>
#include <torch/cuda.h>
#include <torch/version.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "ops/cpu/cpu_simd.h"
#include "rmt/ops/masa.h"

namespace {

struct Options {
  std::string device = "auto";
  int64_t batch = -1, dense_batch = -1;
  at::ScalarType dtype = at::kFloat;
  int groups = 7;
  bool backward = true;
  std::string only;
};

struct Stage {
  int64_t h, w, heads, d;
};

struct Setting {
  std::string name;
  int64_t batch;
  std::vector<Stage> stages;
};

struct Inputs {
  at::Tensor q, k, v, sin, cos, decay;
  double scale;
};

Inputs make_inputs(int64_t b, const Stage& s, at::ScalarType dtype, at::Device dev) {
  const auto opt = at::TensorOptions().dtype(at::kFloat);
  Inputs in;
  in.q = at::randn({b, s.h, s.w, s.heads * s.d}, opt).to(dev, dtype);
  in.k = at::randn({b, s.h, s.w, s.heads * s.d}, opt).to(dev, dtype);
  in.v = at::randn({b, s.h, s.w, s.heads * s.d}, opt).to(dev, dtype);
  auto angle = 1.0 / at::pow(10000.0, at::linspace(0, 1, s.d / 2, opt));
  angle = angle.unsqueeze(-1).repeat({1, 2}).flatten();
  auto phase = at::arange(s.h * s.w, opt).unsqueeze(-1) * angle.unsqueeze(0);
  in.sin = at::sin(phase).reshape({s.h, s.w, s.d}).to(dev, dtype);
  in.cos = at::cos(phase).reshape({s.h, s.w, s.d}).to(dev, dtype);
  in.decay = at::log(1 - at::pow(2.0, -2.0 - 4.0 * at::arange(s.heads, opt) / s.heads))
                 .to(dev, dtype);
  in.scale = 1.0 / std::sqrt(static_cast<double>(s.d));
  return in;
}

// ---- the SDPA baseline: the chain's rotation, then attention with a materialized mask ----------
// (at::scaled_dot_product_attention came with LibTorch 2.0: the rows read "skip" on older ones,
// such as Debian 12's 1.13.)
#define RMT_HAVE_SDPA (TORCH_VERSION_MAJOR >= 2)

at::Tensor rotate_heads(const at::Tensor& x, const Inputs& in, int64_t heads, double mul) {
  const auto b = x.size(0), h = x.size(1), w = x.size(2);
  auto xs = mul == 1.0 ? x : x * mul;
  auto split = xs.reshape({b, h, w, heads, -1}).permute({0, 3, 1, 2, 4});  // b n h w d
  return rmt::ops::reference::theta_shift(split, in.sin, in.cos);
}

#if RMT_HAVE_SDPA
at::Tensor sdpa_full(const Inputs& in) {
  const int64_t heads = in.decay.size(0), b = in.q.size(0), h = in.q.size(1), w = in.q.size(2);
  auto qr = rotate_heads(in.q, in, heads, 1.0).flatten(2, 3);          // b n l d
  auto kr = rotate_heads(in.k, in, heads, in.scale).flatten(2, 3);
  auto vr = in.v.reshape({b, h * w, heads, -1}).transpose(1, 2);       // b n l dv
  auto mask = rmt::ops::reference::decay_mask_2d(in.decay, h, w).unsqueeze(0);
  auto out = at::scaled_dot_product_attention(qr, kr, vr, mask, 0.0, false, 1.0);
  return out.transpose(1, 2).reshape({b, h, w, -1});
}

at::Tensor sdpa_decomposed(const Inputs& in) {
  const int64_t heads = in.decay.size(0), b = in.q.size(0), h = in.q.size(1), w = in.q.size(2);
  auto qr = rotate_heads(in.q, in, heads, 1.0);  // b n h w d
  auto kr = rotate_heads(in.k, in, heads, in.scale);
  auto vr = in.v.reshape({b, h, w, heads, -1}).permute({0, 1, 3, 2, 4});  // b h n w dv
  auto mw = rmt::ops::reference::decay_mask_1d(in.decay, w).unsqueeze(0);
  auto row = at::scaled_dot_product_attention(qr.transpose(1, 2), kr.transpose(1, 2), vr, mw, 0.0,
                                              false, 1.0);                    // b h n w dv
  auto mh = rmt::ops::reference::decay_mask_1d(in.decay, h).unsqueeze(0);
  auto out = at::scaled_dot_product_attention(qr.permute({0, 3, 1, 2, 4}), kr.permute({0, 3, 1, 2, 4}),
                                              row.permute({0, 3, 2, 1, 4}), mh, 0.0, false, 1.0);
  return out.permute({0, 3, 1, 2, 4}).flatten(-2, -1);  // b h w n*dv
}
#else
at::Tensor sdpa_full(const Inputs&) { throw std::runtime_error("no SDPA in LibTorch 1.x"); }
at::Tensor sdpa_decomposed(const Inputs&) { throw std::runtime_error("no SDPA in LibTorch 1.x"); }
#endif

// ---- timing ------------------------------------------------------------------------------------

void sync(bool cuda) {
  if (cuda) torch::cuda::synchronize();
}

double now_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

// Median over groups of the mean time per call (ms).
double time_ms(const std::function<void(int)>& fn, bool cuda, int groups) {
  fn(0);  // warm-up (allocations, lazy init)
  sync(cuda);
  double t0 = now_ms();
  fn(1);
  sync(cuda);
  const double once = std::max(now_ms() - t0, 1e-3);
  const int per_group = cuda ? static_cast<int>(std::clamp(20.0 / once, 1.0, 200.0)) : 1;
  if (!cuda && once > 2000) groups = 1;  // slow CPU cells: one timed call is enough
  else if (!cuda && once > 300) groups = std::min(groups, 3);
  std::vector<double> times;
  int call = 2;
  for (int g = 0; g < groups; ++g) {
    sync(cuda);
    t0 = now_ms();
    for (int i = 0; i < per_group; ++i) fn(call++);
    sync(cuda);
    times.push_back((now_ms() - t0) / per_group);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

using Fn = std::function<at::Tensor(const Inputs&)>;

struct Impl {
  std::string name;
  Fn fn;
};

struct Cost {
  double flops, bytes, ref_bytes, mask_bytes;
};

Cost cost_of(bool full, int64_t b, const Stage& s, int64_t elt) {
  const double l = static_cast<double>(s.h * s.w), n = s.heads, d = s.d;
  Cost c;
  const double keys = full ? l : static_cast<double>(s.h + s.w);
  c.flops = b * n * l * keys * 2.0 * (d + d);
  c.bytes = elt * (b * l * n * d * 4.0 + 2.0 * l * d);
  // The chain keeps the masked scores, the softmax and (for backward) their gradients: ~4 copies.
  const double scores = full ? b * n * l * l : b * n * l * static_cast<double>(std::max(s.h, s.w));
  c.ref_bytes = 4.0 * scores * elt;
  c.mask_bytes = full ? n * l * l * elt : n * std::max(s.h, s.w) * std::max(s.h, s.w) * elt;
  return c;
}

void run_setting(const Setting& st, const Options& opt, at::Device dev) {
  const bool cuda = dev.is_cuda();
  const int64_t elt = at::elementSize(opt.dtype);
  // Limits: what fits and what finishes in reasonable time.
  const double ref_budget = cuda ? 24e9 : 3e9;
  const double mask_budget = cuda ? 8e9 : 1e9;
  const double flop_budget = cuda ? 4e13 : 3e10;
  const double ref_flop_budget = cuda ? 4e13 : 1e10;

  for (const bool full : {false, true}) {
    const char* op = full ? "masa_full" : "masa_decomposed";
    fmt::print("\n### {}, {}, batch {}, {}, {}\n\n", op, st.name, st.batch,
               c10::toString(opt.dtype), cuda ? "CUDA" : "CPU");
    fmt::print("| stage | HxW | heads | d | impl | fwd ms | GB/s | TFLOP/s |{}\n",
               opt.backward ? " fwd+bwd ms |" : "");
    fmt::print("|---|---|---|---|---|---:|---:|---:|{}\n", opt.backward ? "---:|" : "");
    int stage_no = 0;
    for (const auto& s : st.stages) {
      ++stage_no;
      const Cost c = cost_of(full, st.batch, s, elt);
      const Impl impls[] = {
          {"fused", full ? Fn([](const Inputs& i) {
                             return rmt::ops::masa_full(i.q, i.k, i.v, i.sin, i.cos, i.decay, i.scale);
                           })
                         : Fn([](const Inputs& i) {
                             return rmt::ops::masa_decomposed(i.q, i.k, i.v, i.sin, i.cos, i.decay,
                                                              i.scale);
                           })},
          {"reference", full ? Fn([](const Inputs& i) {
                                 return rmt::ops::reference::masa_full(i.q, i.k, i.v, i.sin, i.cos,
                                                                       i.decay, i.scale);
                               })
                             : Fn([](const Inputs& i) {
                                 return rmt::ops::reference::masa_decomposed(
                                     i.q, i.k, i.v, i.sin, i.cos, i.decay, i.scale);
                               })},
          {"sdpa+mask", full ? Fn(sdpa_full) : Fn(sdpa_decomposed)},
      };
      // Rotate among input copies when one set would sit in L2 (50 MB on an H100).
      const int sets = cuda ? static_cast<int>(std::clamp(std::ceil(200e6 / c.bytes), 1.0, 8.0)) : 1;
      std::vector<Inputs> inputs;
      for (int i = 0; i < sets; ++i) inputs.push_back(make_inputs(st.batch, s, opt.dtype, dev));
      for (const auto& impl : impls) {
        std::string why;
        if (impl.name == "fused" && c.flops > flop_budget) why = "skip (time)";
        if (impl.name == "reference" && (c.ref_bytes > ref_budget || c.flops > ref_flop_budget))
          why = "skip (L x L scores)";
        if (impl.name == "sdpa+mask" && (c.mask_bytes > mask_budget || c.flops > ref_flop_budget))
          why = "skip (mask)";
        if (impl.name == "sdpa+mask" && !RMT_HAVE_SDPA) why = "skip (LibTorch < 2.0)";
        fmt::print("| {} | {}x{} | {} | {} | {} |", stage_no, s.h, s.w, s.heads, s.d, impl.name);
        if (!why.empty()) {
          fmt::print(" {} | | |{}\n", why, opt.backward ? " |" : "");
          std::fflush(stdout);
          continue;
        }
        try {
          double fwd;
          {
            c10::InferenceMode guard;
            fwd = time_ms([&](int call) { impl.fn(inputs[call % sets]); }, cuda, opt.groups);
          }
          fmt::print(" {:.3f} | {:.1f} | {:.3f} |", fwd, c.bytes / fwd / 1e6, c.flops / fwd / 1e9);
          if (opt.backward) {
            std::vector<Inputs> grad_inputs = inputs;
            for (auto& gi : grad_inputs) {
              gi.q = gi.q.detach().requires_grad_(true);
              gi.k = gi.k.detach().requires_grad_(true);
              gi.v = gi.v.detach().requires_grad_(true);
            }
            const auto g = at::randn_like(impl.fn(inputs[0]).detach());
            const double both = time_ms(
                [&](int call) {
                  const auto& gi = grad_inputs[call % sets];
                  auto out = impl.fn(gi);
                  torch::autograd::grad({out}, {gi.q, gi.k, gi.v}, {g});
                },
                cuda, opt.groups);
            fmt::print(" {:.3f} |", both);
          }
          fmt::print("\n");
        } catch (const std::exception& e) {
          std::string msg = e.what();
          msg = msg.substr(0, msg.find('\n')).substr(0, 60);
          fmt::print(" error: {} | | |{}\n", msg, opt.backward ? " |" : "");
        }
        std::fflush(stdout);
      }
    }
  }
}

at::ScalarType parse_dtype(const std::string& s) {
  if (s == "float" || s == "float32") return at::kFloat;
  if (s == "half" || s == "float16") return at::kHalf;
  if (s == "bfloat16" || s == "bf16") return at::kBFloat16;
  if (s == "double" || s == "float64") return at::kDouble;
  fmt::print(stderr, "unknown dtype {}\n", s);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        fmt::print(stderr, "{} needs a value\n", a);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--device") opt.device = next();
    else if (a == "--batch") opt.batch = std::stoll(next());
    else if (a == "--dense-batch") opt.dense_batch = std::stoll(next());
    else if (a == "--dtype") opt.dtype = parse_dtype(next());
    else if (a == "--groups") opt.groups = std::max(1, std::stoi(next()));
    else if (a == "--no-backward") opt.backward = false;
    else if (a == "--only") opt.only = next();
    else {
      fmt::print(stderr,
                 "usage: {} [--device auto|cpu|cuda] [--batch N] [--dense-batch N] "
                 "[--dtype float|half|bfloat16] [--groups N] [--no-backward] [--only 224|1024]\n",
                 argv[0]);
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  const bool cuda = opt.device == "cuda" || (opt.device == "auto" && torch::cuda::is_available());
  if (cuda && !torch::cuda::is_available()) {
    fmt::print(stderr, "--device cuda: no CUDA device\n");
    return 1;
  }
  const at::Device dev = cuda ? at::Device(at::kCUDA) : at::Device(at::kCPU);
  if (opt.batch < 0) opt.batch = cuda ? 64 : 1;
  if (opt.dense_batch < 0) opt.dense_batch = cuda ? 8 : 1;

  fmt::print("# MaSA operators: {}, {}", cuda ? "CUDA" : "CPU", c10::toString(opt.dtype));
  if (!cuda) {
    fmt::print(", {} threads, kernel ISA {}", at::get_num_threads(), rmt::ops::cpu::isa_name());
  }
  fmt::print("\n");

  const std::vector<Setting> settings = {
      {"224x224 (RMT-S)", opt.batch, {{56, 56, 4, 16}, {28, 28, 4, 32}, {14, 14, 8, 32}, {7, 7, 16, 32}}},
      {"1024x1024 dense", opt.dense_batch,
       {{256, 256, 4, 16}, {128, 128, 4, 32}, {64, 64, 8, 32}, {32, 32, 16, 32}}},
  };
  for (const auto& st : settings) {
    if (!opt.only.empty() && st.name.rfind(opt.only, 0) != 0) continue;
    run_setting(st, opt, dev);
  }
  return 0;
}

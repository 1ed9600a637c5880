// Activation checkpointing (use_checkpoints / use_checkpoint): the same gradients as without it,
// stochastic depth included, for less memory: the bytes of live CPU tensors, counted by an allocator
// installed for this test program (deterministic, unlike a process's resident size; the
// benchmark bench_models --train prints the resident peak).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include <c10/core/CPUAllocator.h>
#include <torch/autograd.h>
#include <gtest/gtest.h>

#include "reference.h"
#include "rmt/rmt.h"

namespace {

using rmt::test::relative_error;

// Forwards to LibTorch's CPU allocator and counts the bytes alive and their peak. One instance,
// installed for the rest of the program at first use: tensors it allocated may be freed any time.
class CountingAllocator : public c10::Allocator {
 public:
  static CountingAllocator& instance() {
    static CountingAllocator* counting = [] {
      auto* allocator = new CountingAllocator(c10::GetCPUAllocator());
      c10::SetCPUAllocator(allocator, /*priority=*/100);
      return allocator;
    }();
    return *counting;
  }
  // Both signatures: LibTorch made allocate() non-const in 2.3; each version overrides its own.
  c10::DataPtr allocate(size_t n) const { return counted(n); }
  c10::DataPtr allocate(size_t n) { return counted(n); }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  void copy_data(void* dest, const void* src, std::size_t count) const { std::memcpy(dest, src, count); }

  // Bytes alive now, and the most alive at once since reset_peak().
  int64_t live() const { return live_.load(); }
  int64_t peak() const { return peak_.load(); }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mutex_);
    peak_ = live_.load();
  }

 private:
  explicit CountingAllocator(c10::Allocator* base) : base_(base) {}

  // Memory comes from the base's raw_allocate and goes back through its raw_deleter, so that either
  // allocator may free it: oneDNN looks the CPU allocator up again when it frees a scratch buffer,
  // and may find the other one. An address freed behind our back is forgotten when it comes again.
  static void release(void* data) {
    auto& self = instance();
    {
      std::lock_guard<std::mutex> lock(self.mutex_);
      auto it = self.sizes_.find(data);
      if (it != self.sizes_.end()) {
        self.live_ -= static_cast<int64_t>(it->second);
        self.sizes_.erase(it);
      }
    }
    self.base_->raw_deleter()(data);
  }
  c10::DataPtr counted(size_t n) const {
    void* data = n ? base_->raw_allocate(n) : nullptr;
    if (data) {
      std::lock_guard<std::mutex> lock(mutex_);
      auto& size = sizes_[data];
      live_ -= static_cast<int64_t>(size);  // 0 unless freed behind our back
      size = n;
      const auto now = live_ += static_cast<int64_t>(n);
      if (now > peak_) peak_ = now;
    }
    return {data, data, &release, c10::Device(c10::DeviceType::CPU)};
  }

  c10::Allocator* base_;
  mutable std::mutex mutex_;
  mutable std::unordered_map<void*, size_t> sizes_;
  mutable std::atomic<int64_t> live_{0}, peak_{0};
};

rmt::Config training_config() {
  rmt::Config c;
  c.embed_dims = {16, 32, 32, 48};
  c.depths = {3, 3, 4, 1};
  c.num_heads = {2, 2, 4, 4};
  c.init_values = {2, 2, 2, 2};
  c.heads_ranges = {4, 4, 6, 6};
  c.mlp_ratios = {3, 3, 2, 2};
  c.chunkwise_recurrents = {true, true, false, false};
  c.layerscales = {false, true, false, true};
  c.projection = 32;
  c.num_classes = 7;
  c.layer_init_values = 0.5;
  c.drop_path_rate = 0.3;  // stochastic depth: the recomputation must draw the same masks
  return c;
}

struct Step {
  at::Tensor output, input_grad;
  std::vector<std::pair<std::string, at::Tensor>> grads;
  int64_t peak_bytes = 0;
};

// One training step (token labeling: both heads), float64, from a fixed random state.
Step train_step(rmt::VisRetNet& net, const at::Tensor& images, const at::Tensor& probe) {
  Step step;
  auto x = images.clone().requires_grad_(true);
  auto& counter = CountingAllocator::instance();
  counter.reset_peak();
  const auto before = counter.live();
  torch::manual_seed(1234);
  auto [cls, aux] = net->forward_train(x);
  step.output = cls.detach().clone();
  ((cls * probe).sum() + aux.square().mean()).backward();
  step.peak_bytes = counter.peak() - before;
  step.input_grad = x.grad().clone();
  for (const auto& p : net->named_parameters()) step.grads.emplace_back(p.key(), p.value().grad().clone());
  return step;
}

rmt::VisRetNet build(const rmt::Config& config, const torch::nn::Module* weights_of) {
  rmt::VisRetNet net(config, /*token_label=*/true);
  if (weights_of) rmt::load_state_dict(*net, rmt::state_dict(*weights_of));
  rmt::move_to(*net, torch::kCPU, at::kDouble);
  net->train();
  return net;
}

TEST(Checkpointing, SameGradientsWithStochasticDepthAndLessMemory) {
  torch::manual_seed(0);
  auto plain_config = training_config();
  auto checkpointed_config = plain_config;
  checkpointed_config.use_checkpoints = {true, true, true, true};
  auto plain = build(plain_config, nullptr);
  auto checkpointed = build(checkpointed_config, plain.get());
  const auto images = torch::randn({2, 3, 64, 56}, at::kDouble);
  const auto probe = torch::randn({2, 7}, at::kDouble);

  const auto a = train_step(plain, images, probe);
  const auto b = train_step(checkpointed, images, probe);
  EXPECT_LT(relative_error(b.output, a.output), 1e-13);
  EXPECT_LT(relative_error(b.input_grad, a.input_grad), 1e-12);
  ASSERT_EQ(a.grads.size(), b.grads.size());
  double total = 0;
  for (const auto& g : a.grads) total += g.second.square().sum().item<double>();
  for (size_t i = 0; i < a.grads.size(); ++i) {
    ASSERT_EQ(a.grads[i].first, b.grads[i].first);
    ASSERT_TRUE(b.grads[i].second.defined()) << b.grads[i].first;
    // Relative to the gradient, or to 1e-3 of the whole one for gradients that are 0 in exact
    // arithmetic (conv biases before a training-mode BatchNorm: rounding noise of 1e-17).
    const double scale = std::max(a.grads[i].second.norm().item<double>(), 1e-3 * std::sqrt(total));
    EXPECT_LT((b.grads[i].second - a.grads[i].second).norm().item<double>() / scale, 1e-11)
        << a.grads[i].first;
  }
  // Stochastic depth dropped some sample somewhere: a model without it gives other gradients.
  auto no_drop_config = plain_config;
  no_drop_config.drop_path_rate = 0;
  auto no_drop = build(no_drop_config, plain.get());
  EXPECT_GT(relative_error(train_step(no_drop, images, probe).input_grad, a.input_grad), 1e-3);

  std::cout << "[ memory   ] peak live tensor bytes of a training step: " << a.peak_bytes
            << " plain, " << b.peak_bytes << " checkpointed (" << double(b.peak_bytes) / a.peak_bytes
            << "x)\n";
  EXPECT_LT(b.peak_bytes, a.peak_bytes * 0.6);
}

TEST(Checkpointing, DenseBackboneGradientsAndAutogradGrad) {
  torch::manual_seed(2);
  auto config = training_config();
  config.depths = {1, 2, 2, 1};
  config.out_indices = {0, 2, 3};
  auto checkpointed_config = config;
  checkpointed_config.use_checkpoint = true;
  rmt::DenseBackbone plain(config);
  rmt::DenseBackbone checkpointed(checkpointed_config);
  rmt::load_state_dict(*checkpointed, rmt::state_dict(*plain));
  for (auto* m : {plain.get(), checkpointed.get()}) {
    rmt::move_to(*m, torch::kCPU, at::kDouble);
    m->train();
  }
  const auto images = torch::randn({2, 3, 32, 28}, at::kDouble);
  std::vector<at::Tensor> probes;
  // torch::autograd::grad (not backward): the parameters are inputs of the checkpointed node.
  auto grads_of = [&](rmt::DenseBackbone& m) {
    torch::manual_seed(99);
    auto features = m->forward(images);
    if (probes.empty()) {
      for (const auto& f : features) probes.push_back(torch::randn(f.sizes(), at::kDouble));
    }
    auto loss = (features[0] * probes[0]).sum() + (features[1] * probes[1]).sum() +
                (features[2] * probes[2]).sum();
    return torch::autograd::grad({loss}, m->parameters(), {}, false, false, /*allow_unused=*/true);
  };
  const auto a = grads_of(plain);
  const auto b = grads_of(checkpointed);
  ASSERT_EQ(a.size(), b.size());
  const auto names = plain->named_parameters().keys();
  double total = 0;
  for (const auto& g : a) total += g.defined() ? g.square().sum().item<double>() : 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].defined(), b[i].defined()) << names[i];
    if (!a[i].defined()) continue;
    const double scale = std::max(a[i].norm().item<double>(), 1e-3 * std::sqrt(total));
    EXPECT_LT((b[i] - a[i]).norm().item<double>() / scale, 1e-11) << names[i];
  }
}

TEST(Checkpointing, InactiveWithoutAutogradAndInEvaluation) {
  auto config = training_config();
  config.use_checkpoints = {true, false, true, false};
  rmt::VisRetNet net(config);
  net->eval();
  auto x = torch::randn({1, 3, 32, 32});
  torch::Tensor with_grad_mode;
  {
    torch::NoGradGuard no_grad;
    with_grad_mode = net->forward(x);
  }
  auto recorded = net->forward(x);  // recorded, checkpointed, eval: the same numbers
  EXPECT_TRUE(recorded.requires_grad());
  EXPECT_LT(relative_error(recorded, with_grad_mode), 1e-6);
}

TEST(Training, DropPathRateOutsideZeroOneIsRefusedInTrainingOnly) {
  auto config = training_config();
  config.drop_path_rate = 1.5;  // the authors accept it and ignore it in evaluation
  rmt::VisRetNet net(config);
  net->eval();
  torch::NoGradGuard no_grad;
  EXPECT_NO_THROW(net->forward(torch::randn({1, 3, 16, 16})));
  net->train();
  try {
    net->forward(torch::randn({2, 3, 16, 16}));
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("drop_path_rate"), std::string::npos) << e.what();
  }
}

}  // namespace

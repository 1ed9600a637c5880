#include "rmt/batch/prefetch.h"

#include <sched.h>

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>

#include <ATen/ATen.h>

namespace rmt::batch {

struct Prefetcher::State {
  std::vector<std::vector<InputImage>> batches;
  PreprocessOptions options;
  int64_t depth = 2;

  std::mutex mutex;
  std::condition_variable changed;
  int64_t next_to_decode = 0;  // the next batch a worker takes
  int64_t next_to_hand = 0;    // the next batch next() returns
  std::map<int64_t, DecodedBatch> ready;
  std::exception_ptr error;
  bool stopping = false;

  DecodedBatch decode(int64_t number) const {
    DecodedBatch batch;
    batch.number = number;
    std::vector<at::Tensor> tensors;
    for (const auto& input : batches[static_cast<size_t>(number)]) {
      try {
        tensors.push_back(load_image(input.path, options));
        batch.images.push_back(input);
      } catch (const std::exception& e) {  // a bad image is a result, not a stop
        batch.failures.push_back({input, e.what()});
      }
    }
    if (!tensors.empty()) batch.pixels = at::stack(tensors);
    return batch;
  }

  void work() {
    for (;;) {
      int64_t number;
      {
        std::unique_lock<std::mutex> lock(mutex);
        changed.wait(lock, [&] {
          return stopping || error || next_to_decode >= static_cast<int64_t>(batches.size()) ||
                 next_to_decode < next_to_hand + depth;
        });
        if (stopping || error || next_to_decode >= static_cast<int64_t>(batches.size())) return;
        number = next_to_decode++;
      }
      try {
        auto batch = decode(number);
        std::lock_guard<std::mutex> lock(mutex);
        ready.emplace(number, std::move(batch));
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!error) error = std::current_exception();
      }
      changed.notify_all();
    }
  }
};

Prefetcher::Prefetcher(std::vector<std::vector<InputImage>> batches, PreprocessOptions options,
                       int threads, int depth)
    : state_(std::make_shared<State>()) {
  threads = std::max(1, threads);
  state_->batches = std::move(batches);
  state_->options = std::move(options);
  state_->depth = std::max<int64_t>(depth > 0 ? depth : 2 * threads, threads);
  const int64_t needed = std::min<int64_t>(threads, static_cast<int64_t>(state_->batches.size()));
  for (int64_t i = 0; i < needed; ++i) {
    workers_.emplace_back([state = state_] { state->work(); });
  }
}

Prefetcher::~Prefetcher() {
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->stopping = true;
  }
  state_->changed.notify_all();
  for (auto& w : workers_) w.join();
}

std::optional<DecodedBatch> Prefetcher::next() {
  std::unique_lock<std::mutex> lock(state_->mutex);
  if (state_->next_to_hand >= static_cast<int64_t>(state_->batches.size())) return std::nullopt;
  state_->changed.wait(lock,
                       [&] { return state_->error || state_->ready.count(state_->next_to_hand); });
  if (state_->error) std::rethrow_exception(state_->error);
  auto node = state_->ready.extract(state_->next_to_hand);
  ++state_->next_to_hand;
  lock.unlock();
  state_->changed.notify_all();
  return std::move(node.mapped());
}

int default_decode_threads(int64_t processes_here) {
  // The CPUs this process may run on (a Slurm task bound to its cores sees only those).
  int64_t hardware = std::thread::hardware_concurrency();
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) hardware = CPU_COUNT(&set);
  hardware = std::max<int64_t>(1, hardware);
  const int64_t share = hardware / std::max<int64_t>(1, processes_here);
  return static_cast<int>(std::clamp<int64_t>(share / 2, 1, 8));
}

}  // namespace rmt::batch

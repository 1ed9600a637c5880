#pragma once
// Decoding and preprocessing the next batches in worker threads while the model runs on the current
// one: a bounded, ordered pipeline.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <ATen/core/Tensor.h>

#include "rmt/data/preprocess.h"

namespace rmt::batch {

struct InputImage {
  int64_t index = 0;  // position in the input list
  std::string path;
};

struct DecodeFailure {
  InputImage input;
  std::string error;  // "<path>: <problem>"
};

struct DecodedBatch {
  int64_t number = 0;              // position in the list of batches given to the Prefetcher
  std::vector<InputImage> images;  // the decoded ones, in input order: the rows of `pixels`
  at::Tensor pixels;               // (images.size(), 3, S, S) float32; undefined when none decoded
  std::vector<DecodeFailure> failures;  // the others, in input order
};

// Decodes and preprocesses (rmt::load_image) batches in `threads` worker threads, at most `depth`
// batches ahead of the consumer, and hands them out in order. An image that fails to decode becomes
// a DecodeFailure of its batch; any other error in a worker is rethrown by next().
class Prefetcher {
 public:
  Prefetcher(std::vector<std::vector<InputImage>> batches, PreprocessOptions options,
             int threads = 1, int depth = 0 /* 0: two per thread */);
  ~Prefetcher();  // stops and joins the workers
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  // The next batch in order; nullopt after the last. Blocks while it is being decoded.
  std::optional<DecodedBatch> next();

 private:
  struct State;
  std::shared_ptr<State> state_;
  std::vector<std::thread> workers_;
};

// A decode thread count for a process that shares the CPUs it may run on with `processes_here`
// processes doing the same (e.g. torchrun's LOCAL_WORLD_SIZE): half its share, 1 to 8.
int default_decode_threads(int64_t processes_here = 1);

}  // namespace rmt::batch

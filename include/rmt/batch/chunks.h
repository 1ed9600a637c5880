#pragma once
// The two chunk formats a rank writes, one file per chunk of inputs [begin, end):
//
// classes (rmt-classify): JSON lines, one per input, in input order:
//   {"index": 12, "file": "img/a.jpg", "predictions": [{"index": 281, "label": "tabby cat",
//    "probability": 0.91}, ...]}
//   {"index": 13, "file": "img/b.jpg", "error": "img/b.jpg: not a JPEG, PNG, BMP or GIF file"}
//
// features (rmt-extract): a safetensors file holding
//   "index"        int64 (n): the input positions of the n decoded images, ascending
//   one tensor per model output, (n, ...): "features" (n, D) pooled, or "stage{i}" (n, C, H, W)
//   metadata "rmt.begin", "rmt.end": the chunk's range; "rmt.files": a JSON array of the n paths;
//            "rmt.failures": a JSON array of {"index", "file", "error"} for the images that failed.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "rmt/batch/prefetch.h"
#include "rmt/batch/shard.h"

namespace rmt::batch {

struct Prediction {
  int64_t index = 0;  // class index
  std::string label;
  double probability = 0;
};

class ClassesChunk {
 public:
  explicit ClassesChunk(Range range) : range_(range) {}
  void add(const InputImage& input, const std::vector<Prediction>& top);
  void add_failure(const DecodeFailure& failure);
  // Throws std::runtime_error unless every input of the range was added exactly once.
  void write(const std::string& path) const;

 private:
  Range range_;
  std::vector<std::pair<int64_t, std::string>> lines_;  // (input index, JSON line)
};

class FeaturesChunk {
 public:
  explicit FeaturesChunk(Range range) : range_(range) {}
  // `outputs`: name -> (images.size(), ...) tensor; every batch must give the same names.
  void add(const std::vector<InputImage>& images,
           const std::vector<std::pair<std::string, at::Tensor>>& outputs);
  void add_failure(const DecodeFailure& failure);
  void write(const std::string& path) const;  // same check as ClassesChunk::write

 private:
  Range range_;
  std::vector<InputImage> images_;
  std::vector<DecodeFailure> failures_;
  std::vector<std::string> names_;
  std::vector<std::vector<at::Tensor>> parts_;  // per output name, the batches' CPU tensors
};

}  // namespace rmt::batch

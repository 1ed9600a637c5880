#pragma once
// The pickle reader behind rmt::pickle::read_pickle, with what the torch formats need to find
// and check their storage records afterwards.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "rmt/io/pickle.h"

namespace rmt::io {

// One storage record named by the pickle's persistent ids (views of it share it).
struct StorageRecord {
  std::string key;
  std::string type_name;
  at::ScalarType dtype = at::kByte;
  int64_t numel = 0;  // elements of dtype
  uint64_t nbytes = 0;
};

struct PickleResult {
  std::shared_ptr<pickle::Tree> tree;
  size_t end = 0;                              // offset just after STOP
  size_t memory = 0;                           // bytes charged against Limits::max_memory
  uint64_t work = 0;                           // steps charged against Limits::max_work
  std::vector<const pickle::Value*> tensors;   // every tensor built, in order
  std::vector<StorageRecord> records;          // every storage key, in first-seen order
  std::unordered_map<std::string, size_t> record_index;  // key -> records
};

PickleResult unpickle(const uint8_t* data, size_t size, const pickle::Limits& limits);

}  // namespace rmt::io

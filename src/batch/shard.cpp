#include "rmt/batch/shard.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace rmt::batch {

Range shard_of(int64_t count, int64_t rank, int64_t world_size) {
  if (count < 0)
    throw std::invalid_argument(fmt::format("shard_of: the count is negative: {}", count));
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    throw std::invalid_argument(fmt::format(
        "shard_of: expected 0 <= rank < world_size, found rank {} of world size {}", rank,
        world_size));
  }
  const int64_t base = count / world_size, extra = count % world_size;
  const int64_t begin = rank * base + std::min(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

std::vector<Range> all_chunks(int64_t num_inputs, int64_t chunk_size) {
  if (chunk_size < 1) {
    throw std::invalid_argument(
        fmt::format("the chunk size must be at least 1, found {}", chunk_size));
  }
  std::vector<Range> chunks;
  for (int64_t begin = 0; begin < num_inputs; begin += chunk_size) {
    chunks.push_back({begin, std::min(num_inputs, begin + chunk_size)});
  }
  return chunks;
}

std::vector<Range> chunks_of_rank(int64_t num_inputs, int64_t chunk_size, int64_t rank,
                                  int64_t world_size) {
  const auto chunks = all_chunks(num_inputs, chunk_size);
  const auto mine = shard_of(static_cast<int64_t>(chunks.size()), rank, world_size);
  return {chunks.begin() + mine.begin, chunks.begin() + mine.end};
}

}  // namespace rmt::batch

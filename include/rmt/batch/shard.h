#pragma once
// How the inputs are cut into chunks (the unit written at once, and skipped on a restart) and which
// chunks each rank takes. Both are pure functions of the input count, so every rank, and a rank
// restarted later, computes the same ones. The chunks do not depend on the world size: a run can
// resume with more or fewer ranks, and the batches (which start at each chunk's start) are the same
// whatever the world size, so the results are too, bit for bit.

#include <cstdint>
#include <vector>

namespace rmt::batch {

// Positions [begin, end) of the sorted input list.
struct Range {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
  bool empty() const { return end <= begin; }
  bool operator==(const Range& other) const { return begin == other.begin && end == other.end; }
};

// A balanced contiguous split of `count` items: rank `rank` gets [begin, end), the first
// count % world_size ranks one more than the others. Throws std::invalid_argument on a rank
// outside the world.
Range shard_of(int64_t count, int64_t rank, int64_t world_size);

// All chunks of a run: chunk k holds inputs [k * size, min(num_inputs, (k + 1) * size)).
std::vector<Range> all_chunks(int64_t num_inputs, int64_t chunk_size);

// The chunks rank `rank` takes: a contiguous run of all_chunks, shard_of the chunk count.
std::vector<Range> chunks_of_rank(int64_t num_inputs, int64_t chunk_size, int64_t rank,
                                  int64_t world_size);

}  // namespace rmt::batch

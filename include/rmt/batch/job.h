#pragma once
// One rank of a batch job: its share of the inputs, chunk by chunk, resumable; then, when every
// rank has finished, the merge.

#include <chrono>
#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "rmt/batch/launcher.h"
#include "rmt/batch/merge.h"
#include "rmt/batch/prefetch.h"
#include "rmt/batch/run_directory.h"
#include "rmt/batch/shard.h"
#include "rmt/data/preprocess.h"

namespace rmt::batch {

// What a tool does with the decoded images of one chunk: runs its model and writes the results.
class ChunkSink {
 public:
  virtual ~ChunkSink() = default;
  virtual void begin_chunk(const Range& chunk) = 0;
  // Runs the model on the batch's decoded images; keeps their results and the batch's failures.
  virtual void add_batch(const DecodedBatch& batch) = 0;
  // Writes the chunk's results to `path`, a temporary name that is renamed when this returns.
  virtual void write_chunk(const std::string& path) = 0;
};

struct JobOptions {
  std::string tool = "rmt";  // names the messages
  std::string output_dir;
  ChunkFormat format = ChunkFormat::Classes;
  int64_t chunk_size = 1000;  // inputs per chunk file
  int64_t batch_size = 16;
  int decode_threads = 1;
  int prefetch_batches = 0;  // 0: two per decode thread
  PreprocessOptions preprocess;
  RankInfo rank;
  // The model, its weights and the preprocessing: must be the same on every rank and on a restart.
  std::map<std::string, std::string> settings;
  bool merge = true;  // merge automatically when every rank has finished
  MergeOptions merge_options;
  // Rank 0's limit on waiting for the others at the barrier (0: none); past it, the last rank to
  // finish merges.
  std::chrono::seconds merge_wait{600};
  std::chrono::seconds store_timeout{60};  // connecting to the launcher's TCPStore
  double progress_seconds = 30;            // between progress lines on the log
  Environment env = process_environment();
};

struct JobSummary {
  Range shard;
  int64_t chunks = 0;          // in this rank's share
  int64_t chunks_skipped = 0;  // finished by an earlier attempt
  int64_t images = 0;          // computed now
  int64_t failed = 0;          // of those, failed to decode
  double seconds = 0;
  bool merged = false;
  MergeResult merge;
  std::string merge_note;  // why this rank did not merge, or ""
};

// Lists nothing itself: `inputs` is the sorted input list (list_inputs). Opens the run directory
// (refusing one that holds a different run), computes this rank's share and chunks, skips the
// finished chunks, decodes ahead in worker threads while `sink` runs the model, writes each chunk
// atomically, marks the rank finished, and merges when every chunk is finished (rank 0 after the
// TCPStore barrier where there is one; else, or when rank 0 stopped waiting, the rank that finds
// every chunk finished). Progress goes to `log`.
JobSummary run_job(const std::vector<std::string>& inputs, const JobOptions& options,
                   ChunkSink& sink, std::ostream& log);

}  // namespace rmt::batch

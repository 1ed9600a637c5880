#pragma once
// The merge of a batch job: all ranks' chunks into one result in input order, after checking that
// every input appears exactly once.

#include <cstdint>
#include <string>
#include <vector>

namespace rmt::batch {

struct MergeOptions {
  // rmt-extract: the merged features.safetensors is only written when its tensors take at most this
  // many bytes (it is built in memory); above that, index.jsonl maps each input to its chunk file.
  int64_t max_tensor_bytes = int64_t(16) << 30;
};

struct MergeResult {
  int64_t inputs = 0;                // in the run
  int64_t results = 0;               // decoded and computed
  int64_t failures = 0;              // listed with their error
  std::vector<std::string> written;  // the files written, full paths
  std::string note;                  // why a file was not written, or ""
};

// Reads the run directory written by rmt-classify/rmt-extract --output and writes, in input order:
//   classes:  classes.jsonl (one line per input: its predictions or its error), failures.jsonl
//   features: index.jsonl (one line per input: its row in features.safetensors and in its chunk, or
//             its error), features.safetensors (every output, rows in input order, "index" the
//             input position of each row; "rmt.files" metadata, the paths of the rows, when under
//             32 MiB), failures.jsonl
// Throws std::runtime_error, naming the inputs concerned, when an input is missing (its chunk is
// not finished: a rank has not finished) or present more than once, when a chunk names a path other
// than inputs.txt's, or when the chunk files are not what the manifest describes.
MergeResult merge_run(const std::string& directory, const MergeOptions& options = {});

}  // namespace rmt::batch

#pragma once
// The output directory of a batch job, shared by all its ranks (and by their restarts):
//
//   manifest.json                what the run is: tool, output format, input count and hash, chunk
//                                size, model/weights/preprocessing settings (not the world size: a
//                                run may resume with more or fewer ranks)
//   inputs.txt                   the sorted input list, one path per line (line i = input i)
//   chunks/<format>-<begin>-<end>.<ext>   the results for inputs [begin, end), written whole
//   ranks/rank-<r>.json          written when rank r has finished its share: its counts
//
// Every file is written under a temporary name (a dot file in the same folder) and renamed when
// complete, so a reader (a restarted rank, the merge) sees whole files or none.

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "rmt/batch/shard.h"

namespace rmt::batch {

// What a rank writes per chunk: rmt-classify's JSON lines or rmt-extract's safetensors.
enum class ChunkFormat { Classes, Features };
std::string to_string(ChunkFormat format);  // "classes", "features"
ChunkFormat chunk_format_from_string(const std::string& name);
std::string chunk_extension(ChunkFormat format);  // ".jsonl", ".safetensors"

struct RunManifest {
  std::string tool;  // e.g. "rmt-classify"
  ChunkFormat format = ChunkFormat::Classes;
  int64_t num_inputs = 0;
  std::string inputs_hash;  // fingerprint_text of inputs.txt's content
  int64_t chunk_size = 1;
  // The model, its weights (fingerprinted) and the preprocessing: what makes results comparable.
  std::map<std::string, std::string> settings;

  std::string to_json() const;
  // Throws std::runtime_error naming `name` when the text is not such a manifest.
  static RunManifest from_json(const std::string& text, const std::string& name);
  // The differences from `other` as "field: this vs other" lines, or "" when they describe the same
  // run.
  std::string differences(const RunManifest& other) const;
};

// The inputs as inputs.txt holds them (one path per line, each ending with '\n').
std::string inputs_text(const std::vector<std::string>& inputs);
// A 64-bit hash of bytes, as 16 hex digits (not cryptographic: it tells runs apart).
std::string fingerprint_text(const std::string& text);
// "<size> bytes, <hash>" of a file's content. Throws std::runtime_error when it cannot be read.
std::string fingerprint_file(const std::string& path);

// Writes `path` through a temporary file in the same directory: `write` fills the temporary (given
// its name), which is then flushed to disk and renamed over `path`. Throws std::runtime_error (and
// removes the temporary) when any step fails.
void write_atomically(const std::string& path,
                      const std::function<void(const std::string&)>& write);
void write_text_atomically(const std::string& path, const std::string& text);
// Renames a complete temporary file over `path`, flushing both to disk first.
void commit_file(const std::string& temporary, const std::string& path);
// A temporary name for `path`: a dot file beside it, unique to this process.
std::string temporary_path(const std::string& path);

class RunDirectory {
 public:
  explicit RunDirectory(std::string path);
  const std::string& path() const { return path_; }

  // Creates the directory and its manifest and input list, or, when they exist (a restart, or
  // another rank came first), checks that they describe this same run. Throws std::runtime_error
  // listing the differences otherwise: results of different runs must never mix.
  void open(const RunManifest& manifest, const std::vector<std::string>& inputs) const;
  // Throws std::runtime_error when the directory holds no run.
  RunManifest read_manifest() const;
  std::vector<std::string> read_inputs() const;

  std::string chunk_path(ChunkFormat format, const Range& chunk) const;
  bool has_chunk(ChunkFormat format, const Range& chunk) const;
  // The finished chunk files of that format (temporaries excluded), sorted by name.
  std::vector<std::string> chunk_files(ChunkFormat format) const;
  // Removes what an earlier, interrupted attempt left of these chunks (their temporaries).
  void remove_temporaries_of(ChunkFormat format, const std::vector<Range>& chunks) const;

  // The chunks of `chunks` that are not finished.
  std::vector<Range> missing_chunks(ChunkFormat format, const std::vector<Range>& chunks) const;

  // rank-<r>.json: `summary` is a JSON object of this rank's counts.
  void mark_rank_finished(int64_t rank, const std::string& summary) const;

  std::string file(const std::string& name) const;  // path_/name

 private:
  std::string path_;
};

}  // namespace rmt::batch

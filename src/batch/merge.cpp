#include "rmt/batch/merge.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "rmt/batch/run_directory.h"
#include "rmt/batch/shard.h"
#include "rmt/io/checkpoint.h"

namespace rmt::batch {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

namespace {

std::string range_text(const Range& r) {
  return fmt::format("[{}, {})", r.begin, r.end);
}

// A path as the chunk files hold it (JSON strings are UTF-8: other bytes become U+FFFD).
std::string as_written(const std::string& path) {
  return Json(path).dump(-1, ' ', false, Json::error_handler_t::replace);
}

struct ExpectedChunk {
  Range range;
  std::string path;
};

// The chunks the manifest implies; throws naming the missing ones, and any chunk file that is not
// one of them.
std::vector<ExpectedChunk> expected_chunks(const RunDirectory& dir, const RunManifest& m) {
  std::vector<ExpectedChunk> chunks;
  std::vector<Range> missing;
  int64_t missing_inputs = 0;
  for (const auto& c : all_chunks(m.num_inputs, m.chunk_size)) {
    chunks.push_back({c, dir.chunk_path(m.format, c)});
    if (!fs::is_regular_file(chunks.back().path)) {
      missing.push_back(c);
      missing_inputs += c.size();
    }
  }
  if (!missing.empty()) {
    // Runs of consecutive missing chunks, as input ranges.
    std::string text;
    for (size_t i = 0; i < missing.size();) {
      size_t j = i;
      while (j + 1 < missing.size() && missing[j + 1].begin == missing[j].end) ++j;
      if (text.size() > 500) {
        text += ", ...";
        break;
      }
      text += (text.empty() ? "" : ", ") + range_text({missing[i].begin, missing[j].end});
      i = j + 1;
    }
    throw std::runtime_error(fmt::format(
        "{}: {} of {} inputs have no finished chunk ({} chunk(s): inputs {}): run the ranks again "
        "(they resume), then merge",
        dir.path(), missing_inputs, m.num_inputs, missing.size(), text));
  }
  std::map<std::string, bool> known;
  for (const auto& c : chunks) known[c.path] = true;
  for (const auto& f : dir.chunk_files(m.format)) {
    if (!known.count(f)) {
      throw std::runtime_error(fmt::format(
          "{}: not a chunk of this run (chunks of {} inputs): its inputs could be counted twice; "
          "remove it",
          f, m.chunk_size));
    }
  }
  return chunks;
}

// Checks one entry of a chunk: its input is the next one expected and it names inputs.txt's path.
void check_entry(const ExpectedChunk& chunk, int64_t expected, int64_t index,
                 const std::string& file, const std::vector<std::string>& inputs) {
  if (index != expected) {
    throw std::runtime_error(fmt::format(
        "{}: expected the entry of input {}, found input {} (the chunk holds {}, each input once, "
        "in order)",
        chunk.path, expected, index, range_text(chunk.range)));
  }
  if (as_written(file) != as_written(inputs[static_cast<size_t>(index)])) {
    throw std::runtime_error(fmt::format("{}: input {} is '{}' but inputs.txt says '{}'",
                                         chunk.path, index, file.substr(0, 200),
                                         inputs[static_cast<size_t>(index)].substr(0, 200)));
  }
}

class OutputFile {
 public:
  explicit OutputFile(std::string path)
      : path_(std::move(path)), temporary_(temporary_path(path_)) {
    out_.open(temporary_, std::ios::binary | std::ios::trunc);
    if (!out_) throw std::runtime_error(fmt::format("{}: cannot open for writing", temporary_));
  }
  ~OutputFile() {
    if (!committed_) std::remove(temporary_.c_str());
  }
  std::ofstream& out() { return out_; }
  void commit() {
    out_.close();
    if (!out_) throw std::runtime_error(fmt::format("{}: cannot write", temporary_));
    commit_file(temporary_, path_);
    committed_ = true;
  }

 private:
  std::string path_, temporary_;
  std::ofstream out_;
  bool committed_ = false;
};

MergeResult merge_classes(const RunDirectory& dir, const RunManifest& m,
                          const std::vector<std::string>& inputs) {
  MergeResult result;
  result.inputs = m.num_inputs;
  const auto chunks = expected_chunks(dir, m);
  OutputFile classes(dir.file("classes.jsonl")), failures(dir.file("failures.jsonl"));
  for (const auto& chunk : chunks) {
    std::ifstream in(chunk.path, std::ios::binary);
    if (!in) throw std::runtime_error(fmt::format("{}: cannot open", chunk.path));
    int64_t expected = chunk.range.begin;
    for (std::string line; std::getline(in, line);) {
      Json j;
      int64_t index = -1;
      std::string file;
      try {
        j = Json::parse(line);
        index = j.at("index").get<int64_t>();
        file = j.at("file").get<std::string>();
      } catch (const std::exception& e) {
        throw std::runtime_error(fmt::format("{}: entry {} is not a result line ({})", chunk.path,
                                             expected - chunk.range.begin,
                                             std::string(e.what()).substr(0, 200)));
      }
      if (expected >= chunk.range.end) {
        throw std::runtime_error(fmt::format("{}: more entries than the inputs {} it holds",
                                             chunk.path, range_text(chunk.range)));
      }
      check_entry(chunk, expected, index, file, inputs);
      ++expected;
      classes.out() << line << '\n';
      if (j.contains("error")) {
        failures.out() << line << '\n';
        ++result.failures;
      } else if (j.contains("predictions")) {
        ++result.results;
      } else {
        throw std::runtime_error(
            fmt::format("{}: input {} has neither predictions nor an error", chunk.path, index));
      }
    }
    if (expected != chunk.range.end) {
      throw std::runtime_error(fmt::format("{}: holds inputs up to {} of {}: the file is truncated",
                                           chunk.path, expected, range_text(chunk.range)));
    }
  }
  classes.commit();
  failures.commit();
  result.written = {dir.file("classes.jsonl"), dir.file("failures.jsonl")};
  return result;
}

struct FeatureChunkInfo {
  std::vector<int64_t> rows;  // input index of each row
  std::map<int64_t, std::string> errors;
};

// Reads and checks one features chunk; `tensors` receives its tensors.
FeatureChunkInfo read_features_chunk(const ExpectedChunk& chunk,
                                     const std::vector<std::string>& inputs, StateDict& tensors) {
  const auto contents = read_checkpoint(chunk.path);
  tensors = select_state_dict(contents, WeightsSelection{"", "", false});
  FeatureChunkInfo info;
  Json files, failures;
  try {
    files = Json::parse(contents.metadata.at("rmt.files"));
    failures = Json::parse(contents.metadata.at("rmt.failures"));
    if (std::stoll(contents.metadata.at("rmt.begin")) != chunk.range.begin ||
        std::stoll(contents.metadata.at("rmt.end")) != chunk.range.end) {
      throw std::runtime_error(
          fmt::format("rmt.begin/rmt.end are not {}", range_text(chunk.range)));
    }
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("{}: not a features chunk of this run ({})", chunk.path,
                                         std::string(e.what()).substr(0, 200)));
  }
  if (!tensors.contains("index")) {
    throw std::runtime_error(fmt::format("{}: no 'index' tensor", chunk.path));
  }
  const auto index = tensors["index"];
  if (index.scalar_type() != at::kLong || index.dim() != 1 ||
      index.size(0) != static_cast<int64_t>(files.size())) {
    throw std::runtime_error(fmt::format(
        "{}: 'index' is not int64 with one entry per path of rmt.files", chunk.path));
  }
  std::map<int64_t, std::string> entries;  // every input of the chunk -> its path
  const auto add = [&](int64_t i, const std::string& file) {
    if (i < chunk.range.begin || i >= chunk.range.end || entries.count(i)) {
      throw std::runtime_error(
          fmt::format("{}: input {} {}", chunk.path, i,
                      entries.count(i)
                          ? std::string("appears twice")
                          : fmt::format("is outside the chunk's {}", range_text(chunk.range))));
    }
    entries[i] = file;
  };
  const auto* ix = index.data_ptr<int64_t>();
  for (int64_t r = 0; r < index.size(0); ++r) {
    add(ix[r], files.at(static_cast<size_t>(r)).get<std::string>());
    if (r > 0 && ix[r] <= ix[r - 1]) {
      throw std::runtime_error(fmt::format("{}: rows are not in input order", chunk.path));
    }
    info.rows.push_back(ix[r]);
  }
  for (const auto& f : failures) {
    const int64_t i = f.at("index").get<int64_t>();
    add(i, f.at("file").get<std::string>());
    info.errors[i] = f.at("error").get<std::string>();
  }
  int64_t expected = chunk.range.begin;
  for (const auto& [i, file] : entries) check_entry(chunk, expected++, i, file, inputs);
  if (expected != chunk.range.end) {
    throw std::runtime_error(fmt::format("{}: holds inputs up to {} of {}", chunk.path, expected,
                                         range_text(chunk.range)));
  }
  for (const auto& item : tensors) {
    if (item.key() != "index" &&
        (item.value().dim() < 1 || item.value().size(0) != index.size(0))) {
      throw std::runtime_error(fmt::format("{}: tensor '{}' does not have one row per image",
                                           chunk.path, item.key()));
    }
  }
  return info;
}

MergeResult merge_features(const RunDirectory& dir, const RunManifest& m,
                           const std::vector<std::string>& inputs, const MergeOptions& options) {
  MergeResult result;
  result.inputs = m.num_inputs;
  const auto chunks = expected_chunks(dir, m);

  // Pass 1: check every chunk, write index.jsonl and failures.jsonl, learn the output shapes.
  struct Output {
    at::ScalarType dtype;
    std::vector<int64_t> row_shape;
  };
  std::vector<std::pair<std::string, Output>> outputs;
  OutputFile index_file(dir.file("index.jsonl")), failures(dir.file("failures.jsonl"));
  int64_t row = 0;
  for (const auto& chunk : chunks) {
    StateDict tensors;
    const auto info = read_features_chunk(chunk, inputs, tensors);
    for (const auto& item : tensors) {
      if (item.key() == "index" || item.value().size(0) == 0) continue;
      const auto shape = item.value().sizes().slice(1).vec();
      auto it = std::find_if(outputs.begin(), outputs.end(),
                             [&](const auto& o) { return o.first == item.key(); });
      if (it == outputs.end()) {
        outputs.push_back({item.key(), {item.value().scalar_type(), shape}});
      } else if (it->second.dtype != item.value().scalar_type() || it->second.row_shape != shape) {
        throw std::runtime_error(
            fmt::format("{}: tensor '{}' differs in dtype or shape from the earlier chunks'",
                        chunk.path, item.key()));
      }
    }
    const auto chunk_name = fs::path(chunk.path).filename().string();
    size_t r = 0;
    for (int64_t i = chunk.range.begin; i < chunk.range.end; ++i) {
      Json line{{"index", i}, {"file", inputs[static_cast<size_t>(i)]}};
      const auto error = info.errors.find(i);
      if (error != info.errors.end()) {
        line["error"] = error->second;
        failures.out() << line.dump(-1, ' ', false, Json::error_handler_t::replace) << '\n';
        ++result.failures;
      } else {
        line["row"] = row++;
        line["chunk"] = fmt::format("chunks/{}", chunk_name);
        line["chunk_row"] = r++;
        ++result.results;
      }
      index_file.out() << line.dump(-1, ' ', false, Json::error_handler_t::replace) << '\n';
    }
  }

  int64_t bytes = 0;
  for (const auto& [name, o] : outputs) {
    int64_t per_row = static_cast<int64_t>(c10::elementSize(o.dtype));
    for (auto d : o.row_shape) per_row *= d;
    bytes += per_row * result.results;
  }
  index_file.commit();
  failures.commit();
  result.written = {dir.file("index.jsonl"), dir.file("failures.jsonl")};
  if (bytes > options.max_tensor_bytes) {
    result.note = fmt::format(
        "features.safetensors not written: its {} MiB exceed the merge limit of {} MiB; "
        "index.jsonl maps every input to its chunk file and row",
        bytes >> 20, options.max_tensor_bytes >> 20);
    return result;
  }

  // Pass 2: copy each chunk's rows into the merged tensors.
  std::vector<at::Tensor> merged;
  for (const auto& [name, o] : outputs) {
    auto shape = o.row_shape;
    shape.insert(shape.begin(), result.results);
    merged.push_back(at::empty(shape, at::TensorOptions().dtype(o.dtype)));
  }
  std::vector<int64_t> all_rows;
  Json files = Json::array();
  int64_t at_row = 0;
  for (const auto& chunk : chunks) {
    StateDict tensors;
    const auto info = read_features_chunk(chunk, inputs, tensors);
    const auto n = static_cast<int64_t>(info.rows.size());
    for (size_t k = 0; k < outputs.size(); ++k) {
      if (n == 0) continue;
      if (!tensors.contains(outputs[k].first)) {
        throw std::runtime_error(
            fmt::format("{}: has no tensor '{}'", chunk.path, outputs[k].first));
      }
      merged[k].narrow(0, at_row, n).copy_(tensors[outputs[k].first]);
    }
    for (auto i : info.rows) {
      all_rows.push_back(i);
      files.push_back(inputs[static_cast<size_t>(i)]);
    }
    at_row += n;
  }
  StateDict out;
  out.insert("index", at::tensor(all_rows, at::kLong));
  for (size_t k = 0; k < outputs.size(); ++k) out.insert(outputs[k].first, merged[k]);
  std::map<std::string, std::string> metadata{{"rmt.inputs", fmt::to_string(m.num_inputs)},
                                              {"rmt.tool", m.tool}};
  const auto files_text = files.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (files_text.size() <= (size_t(32) << 20)) metadata["rmt.files"] = files_text;
  const auto path = dir.file("features.safetensors");
  write_atomically(
      path, [&](const std::string& temporary) { save_safetensors(temporary, out, metadata); });
  result.written.push_back(path);
  return result;
}

}  // namespace

MergeResult merge_run(const std::string& directory, const MergeOptions& options) {
  const RunDirectory dir(directory);
  const auto manifest = dir.read_manifest();
  const auto inputs = dir.read_inputs();
  if (static_cast<int64_t>(inputs.size()) != manifest.num_inputs ||
      fingerprint_text(inputs_text(inputs)) != manifest.inputs_hash) {
    throw std::runtime_error(
        fmt::format("{} does not match the manifest ({} inputs, the manifest says {})",
                    dir.file("inputs.txt"), inputs.size(), manifest.num_inputs));
  }
  return manifest.format == ChunkFormat::Classes ? merge_classes(dir, manifest, inputs)
                                                 : merge_features(dir, manifest, inputs, options);
}

}  // namespace rmt::batch

#include "rmt/batch/job.h"

#include <signal.h>

#include <filesystem>
#include <iterator>
#include <stdexcept>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "rmt/batch/barrier.h"

namespace rmt::batch {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Test hook (the tests' SIGKILL case, never needed otherwise): RMT_BATCH_TEST_CRASH_AFTER_CHUNKS=N
// makes the rank given by RMT_BATCH_TEST_CRASH_RANK (default 0) kill itself with SIGKILL once N
// chunks are written, with the next one written to its temporary name but not yet renamed: the
// worst moment. Only in a first attempt (TORCHELASTIC_RESTART_COUNT unset or 0).
int64_t crash_after_chunks(const JobOptions& o) {
  const auto n = o.env("RMT_BATCH_TEST_CRASH_AFTER_CHUNKS");
  if (!n) return -1;
  if (std::stoll(o.env("RMT_BATCH_TEST_CRASH_RANK").value_or("0")) != o.rank.rank) return -1;
  if (o.env("TORCHELASTIC_RESTART_COUNT").value_or("0") != "0") return -1;
  return std::stoll(*n);
}

// One line of the log, written at once (ranks share the terminal).
template <typename... Args>
void log_line(std::ostream& out, fmt::format_string<Args...> format, Args&&... args) {
  std::string line = fmt::format(format, std::forward<Args>(args)...);
  line += '\n';
  out << line << std::flush;
}

class ProgressLog {
 public:
  ProgressLog(std::ostream& log, std::string prefix, int64_t total, double every)
      : log_(log), prefix_(std::move(prefix)), total_(total), every_(every) {}
  void update(int64_t done, int64_t failed, int64_t chunks_done, int64_t chunks, bool force) {
    if (done == last_done_ && done > 0) return;
    if (!force && seconds_since(last_) < every_) return;
    last_ = Clock::now();
    last_done_ = done;
    const double s = seconds_since(start_);
    log_line(log_, "{}{}/{} images{}, {}/{} chunks, {:.1f} images/s, {} failed to decode", prefix_,
             done, total_, total_ ? fmt::format(" ({:.0f}%)", 100.0 * done / total_) : "",
             chunks_done, chunks, s > 0 ? done / s : 0.0, failed);
  }

 private:
  std::ostream& log_;
  std::string prefix_;
  int64_t total_;
  double every_;
  int64_t last_done_ = -1;
  Clock::time_point start_ = Clock::now(), last_ = Clock::now();
};

}  // namespace

JobSummary run_job(const std::vector<std::string>& inputs, const JobOptions& o, ChunkSink& sink,
                   std::ostream& log) {
  const auto start = Clock::now();
  const RankInfo& rank = o.rank;
  const std::string prefix = fmt::format("{}: {}: ", o.tool, rank.describe());
  if (o.batch_size < 1) throw std::invalid_argument("the batch size must be at least 1");

  // Connect to the launcher's store first: rank 0 serves it from the start, and a rank that fails
  // from here on tells rank 0, which would otherwise wait for it.
  std::string no_store;
  auto barrier =
      o.merge ? FinishBarrier::connect(rank, o.env, o.tool, o.store_timeout, &no_store) : nullptr;
  if (o.merge && !barrier && rank.world_size > 1 && o.env("MASTER_ADDR")) {
    log_line(log, "{}note: no finish barrier ({}): the last rank to finish merges", prefix, no_store);
  }

  RunManifest manifest;
  manifest.tool = o.tool;
  manifest.format = o.format;
  manifest.num_inputs = static_cast<int64_t>(inputs.size());
  manifest.inputs_hash = fingerprint_text(inputs_text(inputs));
  manifest.chunk_size = o.chunk_size;
  manifest.settings = o.settings;
  const RunDirectory dir(o.output_dir);
  JobSummary summary;
  try {
    dir.open(manifest, inputs);
    const auto chunks =
        chunks_of_rank(manifest.num_inputs, o.chunk_size, rank.rank, rank.world_size);
    if (!chunks.empty()) summary.shard = {chunks.front().begin, chunks.back().end};
    summary.chunks = static_cast<int64_t>(chunks.size());
    std::vector<Range> todo;
    for (const auto& c : chunks) {
      if (dir.has_chunk(o.format, c)) {
        ++summary.chunks_skipped;
      } else {
        todo.push_back(c);
      }
    }
    dir.remove_temporaries_of(o.format, todo);
    int64_t todo_images = 0;
    for (const auto& c : todo) todo_images += c.size();
    log_line(log, "{}inputs [{}, {}) of {}, {} chunks{}", prefix, summary.shard.begin,
             summary.shard.end, inputs.size(), chunks.size(),
             summary.chunks_skipped
                 ? fmt::format(", {} finished before: skipped", summary.chunks_skipped)
                 : "");

    // Batches never straddle chunks: a chunk is written as soon as its last batch is done.
    std::vector<std::vector<InputImage>> batches;
    std::vector<size_t> chunk_of_batch;
    std::vector<int64_t> batch_end;
    for (size_t k = 0; k < todo.size(); ++k) {
      for (int64_t b = todo[k].begin; b < todo[k].end; b += o.batch_size) {
        std::vector<InputImage> batch;
        for (int64_t i = b; i < std::min(todo[k].end, b + o.batch_size); ++i) {
          batch.push_back({i, inputs[static_cast<size_t>(i)]});
        }
        batches.push_back(std::move(batch));
        chunk_of_batch.push_back(k);
        batch_end.push_back(std::min(todo[k].end, b + o.batch_size));
      }
    }
    Prefetcher prefetcher(std::move(batches), o.preprocess, o.decode_threads, o.prefetch_batches);
    ProgressLog progress(log, prefix, todo_images, o.progress_seconds);
    const int64_t crash_after = crash_after_chunks(o);
    int64_t written = 0;
    size_t current = todo.size();
    while (auto batch = prefetcher.next()) {
      const size_t k = chunk_of_batch[static_cast<size_t>(batch->number)];
      if (k != current) {
        current = k;
        sink.begin_chunk(todo[k]);
      }
      sink.add_batch(*batch);
      summary.images += static_cast<int64_t>(batch->images.size() + batch->failures.size());
      summary.failed += static_cast<int64_t>(batch->failures.size());
      const bool chunk_done = batch_end[static_cast<size_t>(batch->number)] == todo[k].end;
      if (chunk_done) {
        const auto path = dir.chunk_path(o.format, todo[k]);
        const auto temporary = temporary_path(path);
        try {
          sink.write_chunk(temporary);
          if (written == crash_after) ::raise(SIGKILL);
          commit_file(temporary, path);
        } catch (...) {
          std::remove(temporary.c_str());
          throw;
        }
        ++written;
      }
      progress.update(summary.images, summary.failed, summary.chunks_skipped + written,
                      summary.chunks, chunk_done && written == 1);
    }
    if (todo_images)
      progress.update(summary.images, summary.failed, summary.chunks, summary.chunks, true);
  } catch (const std::exception& e) {
    if (barrier) {
      try {
        barrier->report_failure(fmt::format("{}: {}", rank.describe(), e.what()));
      } catch (...) {
      }
    }
    throw;
  }
  summary.seconds = seconds_since(start);

  nlohmann::ordered_json mark{{"rank", rank.rank},
                              {"world_size", rank.world_size},
                              {"launcher", to_string(rank.launcher)},
                              {"inputs", {summary.shard.begin, summary.shard.end}},
                              {"chunks", summary.chunks},
                              {"chunks_skipped", summary.chunks_skipped},
                              {"images_computed", summary.images},
                              {"failed_to_decode", summary.failed},
                              {"seconds", summary.seconds}};
  dir.mark_rank_finished(rank.rank, mark.dump());
  log_line(log, "{}finished: {} images in {:.1f} s", prefix, summary.images, summary.seconds);

  if (!o.merge) {
    summary.merge_note = "no merge asked for";
    return summary;
  }
  const auto every_chunk = all_chunks(manifest.num_inputs, o.chunk_size);
  const auto all_done = [&] { return dir.missing_chunks(o.format, every_chunk).empty(); };
  bool merge_here = false;
  if (barrier) {
    try {
      if (rank.rank != 0) {
        if (barrier->arrive()) {
          summary.merge_note = "rank 0 merges";
          return summary;
        }
        log_line(log, "{}rank 0 no longer waits: the last rank to finish merges", prefix);
      } else {
        barrier->arrive();
        log_line(log, "{}waiting for every rank to finish (the launcher's TCPStore)", prefix);
        barrier->wait_for_all(all_done, o.merge_wait, [&](int64_t missing) {
          log_line(log, "{}waiting for {} rank(s) to finish", prefix, missing);
        });
        merge_here = true;
      }
    } catch (const std::exception& e) {
      if (rank.rank == 0) {
        summary.merge_note = fmt::format("no merge: {}", e.what());
        log_line(log, "{}warning: {}; the last rank to finish merges, or run --merge {}", prefix,
                 summary.merge_note, o.output_dir);
        return summary;
      }
      // The store is gone (rank 0 served it and has left): check the run directory instead.
    }
  }
  if (!merge_here) {
    if (const auto missing = dir.missing_chunks(o.format, every_chunk); !missing.empty()) {
      summary.merge_note = fmt::format(
          "{} chunk(s) of other ranks not finished yet: the last rank to finish merges (or run "
          "--merge {})",
          missing.size(), o.output_dir);
      log_line(log, "{}{}", prefix, summary.merge_note);
      return summary;
    }
  }
  summary.merge = merge_run(o.output_dir, o.merge_options);
  summary.merged = true;
  std::string files;
  for (const auto& f : summary.merge.written) {
    fmt::format_to(std::back_inserter(files), " {}", std::filesystem::path(f).filename().string());
  }
  log_line(log, "{}merged {} inputs ({} failed to decode) into{}", prefix, summary.merge.inputs,
           summary.merge.failures, files);
  if (!summary.merge.note.empty()) log_line(log, "{}note: {}", prefix, summary.merge.note);
  return summary;
}

}  // namespace rmt::batch

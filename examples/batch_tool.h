#pragma once
// What rmt-classify and rmt-extract share: the model options as they take them, the preprocessing
// and batch-job options, and the settings a run directory records.
#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "model_flags.h"
#include "rmt/batch/job.h"
#include "rmt/batch/launcher.h"
#include "rmt/data/preprocess.h"
#include "rmt/models/model.h"
#include "rmt/models/pretrained.h"
#include "rmt/runtime/memory.h"
#include "tool_common.h"

namespace rmt::tools {

// The model options of rmt-classify and rmt-extract: `kinds` are the --kind values allowed with
// --config; dense_presets: whether --arch's help lists the dense backbone presets.
inline ModelFlagsSpec batch_model_spec(std::vector<std::string> kinds, bool dense_presets) {
  ModelFlagsSpec spec;
  spec.kinds = std::move(kinds);
  spec.dense_presets = dense_presets;
  spec.device_help = "cpu or cuda (with a launcher: cuda:LOCAL_RANK, or SLURM_LOCALID)";
  return spec;
}

// input_size and crop_pct left at 0 take the preset's pretrained config (rmt/pretrained.h: the
// authors' evaluation, 224 and 0.875, or 0.96 for token labeling), else PreprocessOptions' defaults.
struct PreprocessFlags {
  int64_t input_size = 0;
  double crop_pct = 0;
  std::string pass_order = "pillow13";
};

inline void add_preprocess_flags(CLI::App& app, PreprocessFlags& f) {
  app.add_option("--input-size", f.input_size,
                 "side of the square crop the model sees (default: the preset's pretrained "
                 "config, 224)")
      ->check(CLI::Range(int64_t(16), int64_t(4096)));
  app.add_option("--crop-pct", f.crop_pct,
                 "the shorter side is resized to floor(input_size / crop_pct) before cropping "
                 "(default: the preset's pretrained config, 0.875 or 0.96 for token labeling; "
                 "0.9 with --config)")
      ->check(CLI::Range(0.05, 1.0));
  app.add_option("--resize-order", f.pass_order,
                 "PIL's order of resize passes: pillow13 (Pillow >= 13) or horizontal-first "
                 "(Pillow <= 12); differs only for images about twice as tall as wide")
      ->check(CLI::IsMember({"pillow13", "horizontal-first"}));
}

inline rmt::PreprocessOptions preprocess_options(const PreprocessFlags& f, const ModelFlags& m) {
  auto pre = rmt::has_pretrained_config(m.arch) ? rmt::pretrained_config(m.arch).preprocess()
                                                : rmt::PreprocessOptions{};
  if (f.input_size > 0) pre.input_size = f.input_size;
  if (f.crop_pct > 0) pre.crop_pct = f.crop_pct;
  pre.pass_order = f.pass_order == "pillow13" ? rmt::PillowPassOrder::Pillow13
                                              : rmt::PillowPassOrder::HorizontalFirst;
  pre.validate();
  return pre;
}

// The options of a sharded, resumable run (--output) and of its merge (--merge).
struct BatchFlags {
  std::string output, merge_dir;
  std::vector<std::string> file_lists;
  int64_t rank = -1, world_size = -1, chunk_size = 1000, batch_size = 16;
  int decode_threads = 0, threads = 0;
  double progress = 30, merge_wait = 600, merge_max_gib = 16;
  bool no_merge = false;
  CLI::Option *rank_opt = nullptr, *world_opt = nullptr;
};

inline void add_batch_flags(CLI::App& app, BatchFlags& f, bool features) {
  app.add_option("--batch-size", f.batch_size, "images per forward pass")
      ->check(CLI::Range(int64_t(1), int64_t(4096)));
  app.add_option("--file-list", f.file_lists, "a file with one image path per line (repeatable)")
      ->allow_extra_args(false);
  auto* output = app.add_option(
      "--output", f.output,
      "run directory: shard the sorted inputs over the launcher's ranks, write resumable chunks "
      "there, and merge them when every rank has finished (see the README)");
  auto* merge = app.add_option("--merge", f.merge_dir,
                               "merge the chunks of a finished run directory, check that every "
                               "input is there once, and write the results in input order");
  merge->excludes(output);
  f.rank_opt = app.add_option("--rank", f.rank,
                              "this process's rank (default: from torchrun, "
                              "srun or JOB_COMPLETION_INDEX)")
                   ->check(CLI::NonNegativeNumber)
                   ->needs(output);
  f.world_opt = app.add_option("--world-size", f.world_size,
                               "number of ranks (default: from torchrun or srun; a Kubernetes "
                               "Indexed Job needs it, or RMT_WORLD_SIZE)")
                    ->check(CLI::PositiveNumber)
                    ->needs(output);
  app.add_option("--chunk-size", f.chunk_size, "inputs per chunk file, the unit a restart redoes")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 40))
      ->needs(output);
  app.add_option("--decode-threads", f.decode_threads,
                 "threads decoding the next batches while the model runs (default: half this "
                 "process's share of the cores, 1 to 8)")
      ->check(CLI::Range(1, 256));
  app.add_option("--threads", f.threads,
                 "the model's CPU threads (default: OMP_NUM_THREADS when set, which torchrun "
                 "sets to 1; else the CPUs this process may use, affinity and cgroup quota, "
                 "shared among LOCAL_WORLD_SIZE ranks)")
      ->check(CLI::Range(1, 1024));
  app.add_option("--progress", f.progress, "seconds between progress lines on stderr")
      ->check(CLI::Range(0.0, 1e9))
      ->needs(output);
  app.add_flag("--no-merge", f.no_merge, "leave the merge to a later --merge DIR")->needs(output);
  app.add_option("--merge-wait", f.merge_wait,
                 "rank 0's limit in seconds on waiting for the other ranks before merging; past "
                 "it the last rank to finish merges (0: no limit)")
      ->check(CLI::Range(0.0, 1e9))
      ->needs(output);
  if (features) {
    app.add_option("--merge-max-gib", f.merge_max_gib,
                   "largest merged features.safetensors to write (it is built in memory); above "
                   "it index.jsonl maps each input to its chunk")
        ->check(CLI::Range(0.0, 1e6));
  }
}

inline rmt::batch::MergeOptions merge_options(const BatchFlags& f) {
  rmt::batch::MergeOptions m;
  m.max_tensor_bytes = static_cast<int64_t>(f.merge_max_gib * double(int64_t(1) << 30));
  return m;
}

inline rmt::batch::RankInfo rank_of(const BatchFlags& f) {
  return rmt::batch::detect_rank(
      f.rank_opt->count() ? std::optional<int64_t>(f.rank) : std::nullopt,
      f.world_opt->count() ? std::optional<int64_t>(f.world_size) : std::nullopt);
}

// cpu, or the rank's GPU: cuda:<local rank>.
inline torch::Device device_for(const std::string& name, const rmt::batch::RankInfo& rank) {
  auto device = parse_device(name);
  if (device.is_cuda()) {
    device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(rmt::batch::cuda_device_for(
                                             rank.local_rank, torch::cuda::device_count())));
  }
  return device;
}

// The ranks on this machine (torchrun's LOCAL_WORLD_SIZE), which share its cores.
inline int ranks_on_this_machine() {
  const char* n = std::getenv("LOCAL_WORLD_SIZE");
  return n ? std::max(1, std::atoi(n)) : 1;
}

// Decode threads: the flag, or a share of the cores among the ranks on this machine.
inline int decode_threads(const BatchFlags& f) {
  if (f.decode_threads > 0) return f.decode_threads;
  return rmt::batch::default_decode_threads(ranks_on_this_machine());
}

inline void apply_threads(const BatchFlags& f) {
  rmt::runtime::configure_threads(f.threads, ranks_on_this_machine());
  rmt::runtime::retain_freed_memory();
}

// What makes two runs' results comparable: recorded in the run directory, checked on restarts.
inline std::map<std::string, std::string> run_settings(const ModelFlags& f, const rmt::Model& model,
                                                       const rmt::PreprocessOptions& pre,
                                                       const PreprocessFlags& pf) {
  // crop_pct with 6 decimals ({:f}, "%f"), as the manifests of runs begun earlier hold it.
  return {{"model", fmt::format("{} {}", rmt::to_string(model.kind()), model.config().to_json())},
          {"weights",
           fmt::format("{}, key {}, prefix '{}'{}", rmt::batch::fingerprint_file(f.weights),
                       f.select.weights_key, f.select.key_prefix,
                       f.non_strict ? ", non-strict" : "")},
          {"dtype", f.dtype_name},
          {"preprocessing", fmt::format("input_size {}, crop_pct {:f}, resize {}, order {}",
                                        pre.input_size, pre.crop_pct, pre.resize_size(),
                                        pf.pass_order)}};
}

inline rmt::batch::JobOptions job_options(const char* tool, const BatchFlags& f,
                                          rmt::batch::ChunkFormat format,
                                          const rmt::PreprocessOptions& pre,
                                          const rmt::batch::RankInfo& rank,
                                          std::map<std::string, std::string> settings) {
  rmt::batch::JobOptions o;
  o.tool = tool;
  o.output_dir = f.output;
  o.format = format;
  o.chunk_size = f.chunk_size;
  o.batch_size = f.batch_size;
  o.decode_threads = decode_threads(f);
  o.preprocess = pre;
  o.rank = rank;
  o.settings = std::move(settings);
  o.merge = !f.no_merge;
  o.merge_options = merge_options(f);
  o.merge_wait = std::chrono::seconds(static_cast<int64_t>(f.merge_wait));
  o.progress_seconds = f.progress;
  return o;
}

}  // namespace rmt::tools

// Batch inference at scale (rmt/batch, rmt-classify/rmt-extract --output): the launcher
// environments, the sharding, the run directory, the decode pipeline and the merge in process; then
// the tools as users run them, one process, three ranks under torchrun, a rank killed with SIGKILL
// and started again, Slurm's and a Kubernetes Indexed Job's variables, with the tiny reference
// classifier and dense backbone on images written here (some of them corrupt).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/version.h>
#include <nlohmann/json.hpp>

#include <ATen/ATen.h>

#include "reference.h"
#include "rmt/batch/barrier.h"
#include "rmt/batch/chunks.h"
#include "rmt/batch/inputs.h"
#include "rmt/batch/job.h"
#include "rmt/batch/launcher.h"
#include "rmt/batch/merge.h"
#include "rmt/batch/prefetch.h"
#include "rmt/batch/run_directory.h"
#include "rmt/batch/shard.h"
#include "rmt/data/preprocess.h"
#include "rmt/io/checkpoint.h"
#include "rmt/models/model.h"
#include "tool_runner.h"

#include "image_writer.h"

namespace {

namespace fs = std::filesystem;
using namespace rmt::batch;
using rmt::test::quote;
using rmt::test::slurp;
using Json = nlohmann::json;

// ---- the launcher environments --------------------------------------------------------------

Environment env_of(std::map<std::string, std::string> vars) {
  return [vars](const std::string& name) -> std::optional<std::string> {
    const auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Launcher, EachLauncherAndThePrecedence) {
  auto r = detect_rank(std::nullopt, std::nullopt, env_of({}));
  EXPECT_EQ(r.launcher, Launcher::Single);
  EXPECT_EQ(r.rank, 0);
  EXPECT_EQ(r.world_size, 1);

  r = detect_rank(std::nullopt, std::nullopt,
                  env_of({{"RANK", "5"},
                          {"WORLD_SIZE", "8"},
                          {"LOCAL_RANK", "1"},
                          {"SLURM_PROCID", "2"},
                          {"SLURM_STEP_NUM_TASKS", "4"}}));
  EXPECT_EQ(r.launcher, Launcher::Torchrun);  // torchrun before Slurm
  EXPECT_EQ(r.rank, 5);
  EXPECT_EQ(r.world_size, 8);
  EXPECT_EQ(r.local_rank, 1);
  EXPECT_EQ(r.describe(), "rank 5/8 (torchrun)");

  r = detect_rank(std::nullopt, std::nullopt,
                  env_of({{"SLURM_PROCID", "3"},
                          {"SLURM_STEP_NUM_TASKS", "4"},
                          {"SLURM_NTASKS", "16"},
                          {"SLURM_LOCALID", "1"},
                          {"JOB_COMPLETION_INDEX", "0"}}));
  EXPECT_EQ(r.launcher, Launcher::Slurm);  // Slurm before Kubernetes; the step's task count
  EXPECT_EQ(r.rank, 3);
  EXPECT_EQ(r.world_size, 4);
  EXPECT_EQ(r.local_rank, 1);

  // A batch script outside srun: SLURM_PROCID without a step is one process, not rank 0 of N.
  r = detect_rank(std::nullopt, std::nullopt,
                  env_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}}));
  EXPECT_EQ(r.launcher, Launcher::Single);

  r = detect_rank(std::nullopt, std::nullopt,
                  env_of({{"JOB_COMPLETION_INDEX", "6"}, {"RMT_WORLD_SIZE", "7"}}));
  EXPECT_EQ(r.launcher, Launcher::IndexedJob);
  EXPECT_EQ(r.rank, 6);
  EXPECT_EQ(r.world_size, 7);
  r = detect_rank(std::nullopt, 9,
                  env_of({{"JOB_COMPLETION_INDEX", "6"}, {"RMT_WORLD_SIZE", "7"}}));
  EXPECT_EQ(r.world_size, 9);  // the flag wins over the variable

  r = detect_rank(2, 3, env_of({{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"LOCAL_RANK", "2"}}));
  EXPECT_EQ(r.launcher, Launcher::Flags);  // flags before everything
  EXPECT_EQ(r.rank, 2);
  EXPECT_EQ(r.world_size, 3);
  EXPECT_EQ(r.local_rank, 2);
}

TEST(Launcher, BadValuesAreNamed) {
  EXPECT_NE(error_of([] {
              detect_rank(std::nullopt, std::nullopt, env_of({{"RANK", "1"}}));
            }).find("WORLD_SIZE is not set"),
            std::string::npos);
  EXPECT_NE(
      error_of([] {
        detect_rank(std::nullopt, std::nullopt, env_of({{"RANK", "x1"}, {"WORLD_SIZE", "2"}}));
      }).find("RANK: expected a non-negative integer, found 'x1'"),
      std::string::npos);
  EXPECT_NE(error_of([] {
              detect_rank(std::nullopt, std::nullopt, env_of({{"RANK", "4"}, {"WORLD_SIZE", "4"}}));
            }).find("found rank 4 of world size 4"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              detect_rank(std::nullopt, std::nullopt, env_of({{"JOB_COMPLETION_INDEX", "1"}}));
            }).find("pass --world-size N or set RMT_WORLD_SIZE"),
            std::string::npos);
  EXPECT_NE(
      error_of([] { detect_rank(1, std::nullopt, env_of({})); }).find("--rank needs --world-size"),
      std::string::npos);
  EXPECT_NE(error_of([] {
              detect_rank(std::nullopt, 3, env_of({}));
            }).find("--world-size 3 without a rank"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              detect_rank(std::nullopt, 3, env_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}}));
            }).find("--world-size 3 disagrees with WORLD_SIZE = 2"),
            std::string::npos);
  EXPECT_EQ(cuda_device_for(3, 8), 3);
  EXPECT_EQ(cuda_device_for(3, 1), 0);  // one device per rank
  EXPECT_NE(error_of([] { cuda_device_for(3, 2); }).find("local rank 3 has no GPU"),
            std::string::npos);
}

// ---- sharding --------------------------------------------------------------------------------

TEST(Shard, EveryInputOnceInChunksThatDoNotDependOnTheWorldSize) {
  for (int64_t n : {0, 1, 7, 100, 101}) {
    for (int64_t chunk : {1, 3, 10}) {
      const auto all = all_chunks(n, chunk);
      for (int64_t world : {1, 2, 3, 8, 200}) {
        std::vector<Range> joined;
        int64_t fewest = INT64_MAX, most = 0;
        for (int64_t rank = 0; rank < world; ++rank) {
          const auto mine = chunks_of_rank(n, chunk, rank, world);
          joined.insert(joined.end(), mine.begin(), mine.end());
          fewest = std::min<int64_t>(fewest, mine.size());
          most = std::max<int64_t>(most, mine.size());
        }
        ASSERT_EQ(joined, all) << n << " inputs, chunk " << chunk << ", world " << world;
        EXPECT_LE(most - fewest, 1);
      }
      int64_t next = 0;
      for (const auto& c : all) {
        EXPECT_EQ(c.begin, next);
        EXPECT_GE(c.size(), 1);
        EXPECT_LE(c.size(), chunk);
        next = c.end;
      }
      EXPECT_EQ(next, n);
    }
  }
  EXPECT_EQ(shard_of(10, 0, 3), (Range{0, 4}));
  EXPECT_EQ(shard_of(10, 2, 3), (Range{7, 10}));
  EXPECT_THROW(shard_of(10, 3, 3), std::invalid_argument);
  EXPECT_THROW(all_chunks(10, 0), std::invalid_argument);
}

// ---- scratch files ---------------------------------------------------------------------------

class Scratch : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("rmt_test_batch_" + std::to_string(::getpid()) + "_" + info->name());
    rmt::test::remove_tree(dir_.string());
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!std::getenv("RMT_TEST_KEEP")) rmt::test::remove_tree(dir_.string());
  }

  // A w x h image whose pattern depends on `seed`: PNG, JPEG or BMP by the extension.
  std::string write_image(const std::string& name, int seed, int w = 48, int h = 40) {
    std::vector<uint8_t> px(static_cast<size_t>(w * h * 3));
    for (int y = 0; y < h; ++y) {
      for (int x = 0; x < w; ++x) {
        for (int c = 0; c < 3; ++c) {
          px[static_cast<size_t>((y * w + x) * 3 + c)] = static_cast<uint8_t>(
              (x * (seed + 3) + y * (c + 1) * 7 + seed * 40 + x * y * c) & 255);
        }
      }
    }
    const auto p = dir_ / name;
    fs::create_directories(p.parent_path());
    const auto ext = p.extension();
    const bool ok = ext == ".bmp"   ? stbi_write_bmp(p.c_str(), w, h, 3, px.data())
                    : ext == ".jpg" ? stbi_write_jpg(p.c_str(), w, h, 3, px.data(), 90)
                                    : stbi_write_png(p.c_str(), w, h, 3, px.data(), w * 3);
    EXPECT_TRUE(ok) << p;
    return p.string();
  }
  std::string write_text(const std::string& name, const std::string& text) {
    const auto p = dir_ / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }

  fs::path dir_;
};

// ---- inputs, run directory, pipeline, merge --------------------------------------------------

TEST_F(Scratch, InputsAreWalkedSortedAndListed) {
  const auto b = write_image("imgs/b.png", 1);
  const auto a = write_image("imgs/sub/a.jpg", 2);
  write_text("imgs/notes.txt", "skipped by extension");
  fs::create_directories(dir_ / "empty");
  const auto list = write_text("list.txt", b + "\n\n" + (dir_ / "elsewhere.png").string() + "\r\n");
  const auto listing =
      list_inputs({(dir_ / "imgs").string(), (dir_ / "empty").string(), a}, {list});
  const std::vector<std::string> expected = {(dir_ / "elsewhere.png").string(), b, a};
  EXPECT_EQ(listing.files, expected);  // sorted by bytes; missing paths kept (they fail later)
  EXPECT_EQ(listing.duplicates, 2);    // a twice, b twice
  ASSERT_EQ(listing.empty_directories.size(), 1u);
  EXPECT_NE(error_of([&] {
              list_inputs({}, {(dir_ / "no_list.txt").string()});
            }).find("cannot open the file list"),
            std::string::npos);
}

TEST_F(Scratch, RunDirectoryRefusesAnotherRun) {
  RunManifest m;
  m.tool = "rmt-classify";
  m.num_inputs = 2;
  m.inputs_hash = fingerprint_text(inputs_text({"a.png", "b.png"}));
  m.chunk_size = 10;
  m.settings = {{"model", "tiny"}, {"preprocessing", "input_size 64"}};
  const RunDirectory dir((dir_ / "run").string());
  dir.open(m, {"a.png", "b.png"});
  dir.open(m, {"a.png", "b.png"});  // a restart: the same run
  EXPECT_EQ(dir.read_inputs(), (std::vector<std::string>{"a.png", "b.png"}));
  auto other = m;
  other.settings["preprocessing"] = "input_size 72";
  const auto message = error_of([&] { dir.open(other, {"a.png", "b.png"}); });
  EXPECT_NE(message.find("holds a different run"), std::string::npos) << message;
  EXPECT_NE(message.find("preprocessing: input_size 72 vs input_size 64"), std::string::npos)
      << message;
  other = m;
  other.inputs_hash = fingerprint_text(inputs_text({"a.png", "c.png"}));
  EXPECT_NE(error_of([&] {
              dir.open(other, {"a.png", "c.png"});
            }).find("inputs hash"),
            std::string::npos);
  EXPECT_NE(fingerprint_text("a"), fingerprint_text("b"));

  // A failed write leaves neither the file nor its temporary.
  const auto target = (dir_ / "run" / "x.txt").string();
  EXPECT_THROW(write_atomically(target,
                                [](const std::string& tmp) {
                                  std::ofstream(tmp) << "partial";
                                  throw std::runtime_error("interrupted");
                                }),
               std::runtime_error);
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir_ / "run")) names.insert(e.path().filename());
  EXPECT_EQ(names, (std::set<std::string>{"chunks", "inputs.txt", "manifest.json", "ranks"}));
}

TEST_F(Scratch, PrefetcherKeepsOrderAndReportsBadImages) {
  std::vector<std::vector<InputImage>> batches;
  std::vector<std::string> files;
  for (int i = 0; i < 11; ++i) {
    files.push_back(i % 4 == 3 ? write_text("bad" + std::to_string(i) + ".png", "not a png")
                               : write_image("img" + std::to_string(i) + ".png", i, 20 + i, 24));
  }
  for (int b = 0; b < 11; b += 3) {
    batches.emplace_back();
    for (int i = b; i < std::min(11, b + 3); ++i)
      batches.back().push_back({i, files[static_cast<size_t>(i)]});
  }
  rmt::PreprocessOptions pre;
  pre.input_size = 16;
  Prefetcher prefetcher(batches, pre, 3, 2);
  int64_t number = 0, next_index = 0;
  while (auto batch = prefetcher.next()) {
    EXPECT_EQ(batch->number, number++);
    size_t g = 0, f = 0;
    for (const auto& input : batches[static_cast<size_t>(batch->number)]) {
      EXPECT_EQ(input.index, next_index++);
      if (input.index % 4 == 3) {
        ASSERT_LT(f, batch->failures.size());
        EXPECT_EQ(batch->failures[f].input.index, input.index);
        EXPECT_EQ(batch->failures[f++].error.rfind(input.path + ": ", 0), 0u);
      } else {
        ASSERT_LT(g, batch->images.size());
        EXPECT_EQ(batch->images[g].index, input.index);
        // The pixels are load_image's, row for row.
        EXPECT_TRUE(
            at::equal(batch->pixels[static_cast<int64_t>(g++)], rmt::load_image(input.path, pre)));
      }
    }
    EXPECT_EQ(g, batch->images.size());
    EXPECT_EQ(f, batch->failures.size());
  }
  EXPECT_EQ(number, 4);
  EXPECT_EQ(next_index, 11);
}

// A run directory with 7 inputs in chunks of 3, the chunks written by hand.
class MergeChecks : public Scratch {
 protected:
  void SetUp() override {
    Scratch::SetUp();
    for (int i = 0; i < 7; ++i) inputs_.push_back("img/" + std::to_string(i) + ".png");
    RunManifest m;
    m.tool = "test";
    m.num_inputs = 7;
    m.inputs_hash = fingerprint_text(inputs_text(inputs_));
    m.chunk_size = 3;
    run_ = std::make_unique<RunDirectory>((dir_ / "run").string());
    run_->open(m, inputs_);
  }
  void write_chunk(Range r, const std::function<void(ClassesChunk&)>& tweak = nullptr) {
    ClassesChunk chunk(r);
    for (int64_t i = r.begin; i < r.end; ++i) {
      if (i == 4) {
        chunk.add_failure(
            {{i, inputs_[static_cast<size_t>(i)]}, inputs_[static_cast<size_t>(i)] + ": corrupt"});
      } else {
        chunk.add({i, inputs_[static_cast<size_t>(i)]},
                  {{i % 2, "class " + std::to_string(i % 2), 0.5}});
      }
    }
    if (tweak) tweak(chunk);
    chunk.write(run_->chunk_path(ChunkFormat::Classes, r));
  }
  std::vector<std::string> inputs_;
  std::unique_ptr<RunDirectory> run_;
};

TEST_F(MergeChecks, EveryInputOnceInInputOrder) {
  write_chunk({6, 7});
  write_chunk({0, 3});
  write_chunk({3, 6});
  const auto result = merge_run(run_->path());
  EXPECT_EQ(result.inputs, 7);
  EXPECT_EQ(result.results, 6);
  EXPECT_EQ(result.failures, 1);
  std::ifstream in(run_->file("classes.jsonl"));
  int64_t i = 0;
  for (std::string line; std::getline(in, line); ++i) {
    const auto j = Json::parse(line);
    EXPECT_EQ(j.at("index"), i);
    EXPECT_EQ(j.at("file"), inputs_[static_cast<size_t>(i)]);
    EXPECT_EQ(j.contains("error"), i == 4);
  }
  EXPECT_EQ(i, 7);
  EXPECT_EQ(slurp(run_->file("failures.jsonl")),
            R"({"index":4,"file":"img/4.png","error":"img/4.png: corrupt"})"
            "\n");
}

TEST_F(MergeChecks, FailsLoudlyOnMissingStrayOrWrongEntries) {
  write_chunk({0, 3});
  write_chunk({6, 7});
  auto message = error_of([&] { merge_run(run_->path()); });
  EXPECT_NE(message.find("3 of 7 inputs have no finished chunk (1 chunk(s): inputs [3, 6))"),
            std::string::npos)
      << message;
  EXPECT_FALSE(fs::exists(run_->file("classes.jsonl")));

  write_chunk({3, 6});
  std::ofstream(run_->chunk_path(ChunkFormat::Classes, {2, 5})) << "";  // another chunking
  message = error_of([&] { merge_run(run_->path()); });
  EXPECT_NE(message.find("classes-0000000002-0000000005.jsonl: not a chunk of this run"),
            std::string::npos)
      << message;
  fs::remove(run_->chunk_path(ChunkFormat::Classes, {2, 5}));

  // A chunk whose file names another path than inputs.txt's.
  std::string text = slurp(run_->chunk_path(ChunkFormat::Classes, {3, 6}));
  const std::string good = slurp(run_->chunk_path(ChunkFormat::Classes, {3, 6}));
  text.replace(text.find("img/5.png"), 9, "img/X.png");
  std::ofstream(run_->chunk_path(ChunkFormat::Classes, {3, 6})) << text;
  message = error_of([&] { merge_run(run_->path()); });
  EXPECT_NE(message.find("input 5 is 'img/X.png' but inputs.txt says 'img/5.png'"),
            std::string::npos)
      << message;

  // An input twice, and a truncated chunk.
  const auto first_line = good.substr(0, good.find('\n') + 1);
  std::ofstream(run_->chunk_path(ChunkFormat::Classes, {3, 6})) << first_line << good;
  message = error_of([&] { merge_run(run_->path()); });
  EXPECT_NE(message.find("expected the entry of input 4, found input 3"), std::string::npos)
      << message;
  std::ofstream(run_->chunk_path(ChunkFormat::Classes, {3, 6})) << first_line;
  message = error_of([&] { merge_run(run_->path()); });
  EXPECT_NE(message.find("the file is truncated"), std::string::npos) << message;

  // A chunk writer refuses a chunk that misses an input.
  EXPECT_THROW(ClassesChunk({0, 3}).write((dir_ / "x.jsonl").string()), std::runtime_error);
  std::ofstream(run_->chunk_path(ChunkFormat::Classes, {3, 6})) << good;
  EXPECT_EQ(merge_run(run_->path()).inputs, 7);
}

TEST_F(Scratch, FeaturesChunksMergeInInputOrder) {
  std::vector<std::string> inputs;
  for (int i = 0; i < 5; ++i) inputs.push_back("f" + std::to_string(i) + ".jpg");
  RunManifest m;
  m.tool = "test";
  m.format = ChunkFormat::Features;
  m.num_inputs = 5;
  m.inputs_hash = fingerprint_text(inputs_text(inputs));
  m.chunk_size = 2;
  const RunDirectory dir((dir_ / "run").string());
  dir.open(m, inputs);
  const auto values = at::arange(5 * 6, at::kFloat).reshape({5, 2, 3});
  for (const auto& r : all_chunks(5, 2)) {
    FeaturesChunk chunk(r);
    std::vector<InputImage> images;
    std::vector<int64_t> rows;
    for (int64_t i = r.begin; i < r.end; ++i) {
      if (i == 2) {
        chunk.add_failure({{i, inputs[static_cast<size_t>(i)]}, "f2.jpg: corrupt"});
      } else {
        images.push_back({i, inputs[static_cast<size_t>(i)]});
        rows.push_back(i);
      }
    }
    if (!images.empty()) chunk.add(images, {{"features", values.index({at::tensor(rows)})}});
    chunk.write(dir.chunk_path(ChunkFormat::Features, r));
  }
  const auto result = merge_run(dir.path());
  EXPECT_EQ(result.results, 4);
  EXPECT_EQ(result.failures, 1);
  const auto merged = rmt::read_checkpoint(dir.file("features.safetensors"));
  const auto tensors = rmt::select_state_dict(merged, rmt::WeightsSelection{"", "", false});
  EXPECT_TRUE(at::equal(tensors["index"], at::tensor(std::vector<int64_t>{0, 1, 3, 4})));
  EXPECT_TRUE(
      at::equal(tensors["features"], values.index({at::tensor(std::vector<int64_t>{0, 1, 3, 4})})));
  EXPECT_EQ(merged.metadata.at("rmt.files"), R"(["f0.jpg","f1.jpg","f3.jpg","f4.jpg"])");
  std::ifstream index(dir.file("index.jsonl"));
  std::vector<Json> lines;
  for (std::string line; std::getline(index, line);) lines.push_back(Json::parse(line));
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines[2].at("error"), "f2.jpg: corrupt");
  EXPECT_EQ(lines[3].at("row"), 2);
  EXPECT_EQ(lines[3].at("chunk"), "chunks/features-0000000002-0000000004.safetensors");
  EXPECT_EQ(lines[3].at("chunk_row"), 0);

  // Over the size limit: index.jsonl alone, and a note saying so.
  fs::remove(dir.file("features.safetensors"));
  MergeOptions small;
  small.max_tensor_bytes = 10;
  const auto limited = merge_run(dir.path(), small);
  EXPECT_FALSE(fs::exists(dir.file("features.safetensors")));
  EXPECT_NE(limited.note.find("index.jsonl maps every input"), std::string::npos);
}

// ---- the tools -------------------------------------------------------------------------------

// The launcher variables of the test's own environment must not leak into the tools it runs.
const char* const kLauncherVariables[] = {"RANK",
                                          "WORLD_SIZE",
                                          "LOCAL_RANK",
                                          "LOCAL_WORLD_SIZE",
                                          "MASTER_ADDR",
                                          "MASTER_PORT",
                                          "SLURM_PROCID",
                                          "SLURM_STEP_NUM_TASKS",
                                          "SLURM_LOCALID",
                                          "SLURM_NTASKS",
                                          "JOB_COMPLETION_INDEX",
                                          "RMT_WORLD_SIZE",
                                          "TORCHELASTIC_RESTART_COUNT",
                                          "TORCHELASTIC_USE_AGENT_STORE",
                                          "RMT_BATCH_TEST_CRASH_AFTER_CHUNKS",
                                          "RMT_BATCH_TEST_CRASH_RANK"};

struct ToolRun {
  int status = -1;  // exit status, or -signal when killed by one
  std::string err;
};

// torchrun, or `python3 -m torch.distributed.run`; "" when neither is there.
std::string torchrun() {
  if (std::system("command -v torchrun >/dev/null 2>&1") == 0) return "torchrun";
  if (std::system("python3 -c 'import torch.distributed.run' >/dev/null 2>&1") == 0) {
    return "python3 -m torch.distributed.run";
  }
  return "";
}

class BatchTools : public Scratch {
 protected:
  void SetUp() override {
    Scratch::SetUp();
    config_ = write_text("tiny_cls.json", rmt::test::manifest_case("tiny_cls").at("config").dump());
    dense_config_ =
        write_text("tiny_dense.json", rmt::test::manifest_case("tiny_dense").at("config").dump());
    weights_ = rmt::test::data_path("tiny_cls.pth");
    // 24 images of several sizes and formats in nested folders, and three that do not decode.
    for (int i = 0; i < 24; ++i) {
      const char* ext = i % 3 == 0 ? ".jpg" : i % 3 == 1 ? ".png" : ".bmp";
      write_image("imgs/" + std::string(i % 2 ? "a/" : "b/") + "img" + std::to_string(i) + ext, i,
                  40 + i, 36 + (i * 7) % 20);
    }
    bad_ = {write_text("imgs/a/corrupt.jpg", "\xff\xd8\xff garbage that is no JPEG"),
            write_text("imgs/b/truncated.png", slurp(dir_ / "imgs/a/img1.png").substr(0, 80)),
            write_text("imgs/b/text.png", "a text file named like an image")};
    images_ = (dir_ / "imgs").string();
  }

  std::vector<std::string> classify_args(const std::string& output) const {
    return {"--config",  config_, "--weights",    weights_, "--input-size", "64",
            "--topk",    "3",     "--chunk-size", "4",      "--batch-size", "3",
            "--threads", "1",     "--output",     output,   images_};
  }

  // Runs `command` (already quoted) with the launcher variables removed and `env` set.
  ToolRun shell(const std::string& command, const std::map<std::string, std::string>& env = {}) {
    std::string line = "env";
    for (const char* v : kLauncherVariables) line += std::string(" -u ") + v;
    for (const auto& [k, v] : env) line += " " + k + "=" + quote(v);
    const auto err = dir_ / ".stderr";
    // A run that hangs fails here (status 124), instead of stalling the whole suite.
    line += " timeout -k 10 300 " + command + " >/dev/null 2>" + quote(err.string()) + " </dev/null";
    const int raw = std::system(line.c_str());
    ToolRun r;
    // A signal that kills the tool shows as the shell's status 128 + signal (or as the signal
    // itself where the shell execs the command).
    r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : WIFSIGNALED(raw) ? -WTERMSIG(raw) : -1;
    if (r.status > 128) r.status = -(r.status - 128);
    r.err = slurp(err);
    return r;
  }
  ToolRun tool(const std::string& name, const std::vector<std::string>& args,
               const std::map<std::string, std::string>& env = {}) {
    const auto exe = rmt::test::tool_path(name);
    EXPECT_TRUE(fs::exists(exe)) << exe << " does not exist: build the " << name << " target first";
    std::string command = quote(exe);
    for (const auto& a : args) command += " " + quote(a);
    return shell(command, env);
  }

  // The merged classes.jsonl of a run directory, checked: one line per input in inputs.txt's
  // order, the inputs being every image under imgs/ (sorted), the bad ones with an error.
  std::vector<Json> merged_classes(const fs::path& run) {
    std::vector<std::string> expected;
    for (const auto& e : fs::recursive_directory_iterator(images_)) {
      if (e.is_regular_file()) expected.push_back(e.path().string());
    }
    std::sort(expected.begin(), expected.end());
    std::vector<Json> lines;
    std::ifstream in(run / "classes.jsonl");
    for (std::string line; std::getline(in, line);) lines.push_back(Json::parse(line));
    EXPECT_EQ(lines.size(), expected.size());
    for (size_t i = 0; i < std::min(lines.size(), expected.size()); ++i) {
      EXPECT_EQ(lines[i].at("index"), static_cast<int64_t>(i));
      EXPECT_EQ(lines[i].at("file"), expected[i]);
      const bool bad = std::count(bad_.begin(), bad_.end(), expected[i]) > 0;
      EXPECT_EQ(lines[i].contains("error"), bad) << lines[i].dump();
      EXPECT_EQ(lines[i].contains("predictions"), !bad) << lines[i].dump();
    }
    return lines;
  }

  std::string config_, dense_config_, weights_, images_;
  std::vector<std::string> bad_;
};

TEST_F(BatchTools, OneProcessMatchesTheLibraryAndListsBadImages) {
  const auto out = dir_ / "single";
  const auto r = tool("rmt-classify", classify_args(out.string()));
  ASSERT_EQ(r.status, 0) << r.err;  // bad images are results, not a failed run
  EXPECT_NE(r.err.find("rank 0/1 (single process): inputs [0, 27) of 27, 7 chunks"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("merged 27 inputs (3 failed to decode) into classes.jsonl failures.jsonl"),
            std::string::npos)
      << r.err;
  const auto lines = merged_classes(out);
  ASSERT_EQ(lines.size(), 27u);

  // The same images through the library, in process.
  rmt::Model model(rmt::config_from_json_file(config_), rmt::ModelKind::Classifier);
  model.load(weights_);
  model.eval();
  rmt::PreprocessOptions pre;
  pre.input_size = 64;
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> images;
  std::vector<size_t> rows;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].contains("predictions")) {
      images.push_back(rmt::load_image(lines[i].at("file"), pre));
      rows.push_back(i);
    }
  }
  const auto top = model.forward(at::stack(images)).front().softmax(1).topk(3, 1);
  for (size_t g = 0; g < rows.size(); ++g) {
    const auto& predictions = lines[rows[g]].at("predictions");
    ASSERT_EQ(predictions.size(), 3u);
    for (int64_t k = 0; k < 3; ++k) {
      EXPECT_EQ(predictions[k].at("index"), std::get<1>(top)[g][k].item<int64_t>());
      EXPECT_NEAR(predictions[k].at("probability").get<double>(),
                  std::get<0>(top)[g][k].item<double>(), 1e-5);
    }
  }
  // failures.jsonl lists exactly the bad images, with their decoder's message.
  std::set<std::string> failed;
  std::ifstream in(out / "failures.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto j = Json::parse(line);
    EXPECT_EQ(j.at("error").get<std::string>().rfind(j.at("file").get<std::string>() + ": ", 0),
              0u);
    failed.insert(j.at("file"));
  }
  EXPECT_EQ(failed, std::set<std::string>(bad_.begin(), bad_.end()));

  // A restart finds every chunk done and computes nothing; other settings are refused.
  const auto again = tool("rmt-classify", classify_args(out.string()));
  ASSERT_EQ(again.status, 0) << again.err;
  EXPECT_NE(again.err.find("7 chunks, 7 finished before: skipped"), std::string::npos) << again.err;
  auto other = classify_args(out.string());
  other[5] = "72";  // --input-size
  const auto refused = tool("rmt-classify", other);
  EXPECT_EQ(refused.status, 1);
  EXPECT_NE(refused.err.find("holds a different run"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("preprocessing: input_size 72"), std::string::npos) << refused.err;

  // --merge checks the chunks: one removed is named, and nothing is written.
  fs::remove(out / "classes.jsonl");
  fs::remove(out / "chunks" / "classes-0000000008-0000000012.jsonl");
  const auto merge = tool("rmt-classify", {"--merge", out.string()});
  EXPECT_EQ(merge.status, 1);
  EXPECT_NE(merge.err.find("4 of 27 inputs have no finished chunk (1 chunk(s): inputs [8, 12))"),
            std::string::npos)
      << merge.err;
  EXPECT_FALSE(fs::exists(out / "classes.jsonl"));
}

TEST_F(BatchTools, ThreeRanksUnderTorchrunEqualOneProcess) {
  const auto launcher = torchrun();
  if (launcher.empty())
    GTEST_SKIP() << "neither torchrun nor python3's torch.distributed.run is here";
  const auto single = dir_ / "single", ranks = dir_ / "ranks";
  auto r = tool("rmt-classify", classify_args(single.string()));
  ASSERT_EQ(r.status, 0) << r.err;

  std::string command = launcher + " --standalone --nproc-per-node 3 --no-python " +
                        quote(rmt::test::tool_path("rmt-classify"));
  for (const auto& a : classify_args(ranks.string())) command += " " + quote(a);
  r = shell(command);
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* rank : {"rank 0/3 (torchrun): inputs [0, 12) of 27, 3 chunks",
                           "rank 1/3 (torchrun): inputs [12, 20) of 27, 2 chunks",
                           "rank 2/3 (torchrun): inputs [20, 27) of 27, 2 chunks"}) {
    EXPECT_NE(r.err.find(rank), std::string::npos) << r.err;
  }
  // Rank 0 merged after the TCPStore barrier (in a build without it, the last rank to finish did).
  // The torchrun here is the wheel's (torch 2.x), whose agent store LibTorch 1.13's client cannot
  // talk to (other query codes): such a build notices within seconds and falls back.
  const bool barrier = FinishBarrier::available() && TORCH_VERSION_MAJOR >= 2;
  EXPECT_NE(r.err.find(barrier ? "rank 0/3 (torchrun): merged 27 inputs (3 failed to decode)"
                               : "merged 27 inputs (3 failed to decode)"),
            std::string::npos)
      << r.err;
  if (barrier) EXPECT_EQ(r.err.find("no finish barrier"), std::string::npos) << r.err;
  if (FinishBarrier::available() && !barrier) {
    EXPECT_NE(r.err.find("the store did not answer within 10 s"), std::string::npos) << r.err;
  }
  merged_classes(ranks);
  EXPECT_EQ(slurp(ranks / "classes.jsonl"), slurp(single / "classes.jsonl"));
  EXPECT_EQ(slurp(ranks / "failures.jsonl"), slurp(single / "failures.jsonl"));
}

TEST_F(BatchTools, RankKilledUnderTorchrunIsRestartedAndNothingIsLostOrDoubled) {
  const auto launcher = torchrun();
  if (launcher.empty())
    GTEST_SKIP() << "neither torchrun nor python3's torch.distributed.run is here";
  const auto single = dir_ / "single", ranks = dir_ / "ranks";
  auto r = tool("rmt-classify", classify_args(single.string()));
  ASSERT_EQ(r.status, 0) << r.err;

  // Rank 1 kills itself (SIGKILL) with its second chunk written but not yet renamed; torchrun
  // restarts the group once; the ranks skip what they finished.
  std::string command = launcher +
                        " --standalone --nproc-per-node 3 --max-restarts 1 --no-python " +
                        quote(rmt::test::tool_path("rmt-classify"));
  for (const auto& a : classify_args(ranks.string())) command += " " + quote(a);
  r = shell(command,
            {{"RMT_BATCH_TEST_CRASH_AFTER_CHUNKS", "1"}, {"RMT_BATCH_TEST_CRASH_RANK", "1"}});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("exitcode: -9"), std::string::npos) << r.err;  // torchrun saw the SIGKILL
  EXPECT_NE(r.err.find(
                "rank 1/3 (torchrun): inputs [12, 20) of 27, 2 chunks, 1 finished before: skipped"),
            std::string::npos)
      << r.err;
  merged_classes(ranks);
  EXPECT_EQ(slurp(ranks / "classes.jsonl"), slurp(single / "classes.jsonl"));
}

TEST_F(BatchTools, SlurmRanksResumeAfterSigkillAndTheLastOneMerges) {
  const auto single = dir_ / "single", ranks = dir_ / "ranks";
  auto r = tool("rmt-classify", classify_args(single.string()));
  ASSERT_EQ(r.status, 0) << r.err;
  const auto slurm = [](int rank) {
    return std::map<std::string, std::string>{{"SLURM_PROCID", std::to_string(rank)},
                                              {"SLURM_STEP_NUM_TASKS", "3"},
                                              {"SLURM_NTASKS", "3"}};
  };
  // Rank 1 is killed mid-run: its first chunk is there, its second only as a temporary.
  auto env = slurm(1);
  env["RMT_BATCH_TEST_CRASH_AFTER_CHUNKS"] = "1";
  env["RMT_BATCH_TEST_CRASH_RANK"] = "1";
  r = tool("rmt-classify", classify_args(ranks.string()), env);
  ASSERT_EQ(r.status, -SIGKILL) << r.err;
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(ranks / "chunks"))
    names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  ASSERT_EQ(names.size(), 2u);
  EXPECT_EQ(names[0].rfind(".classes-0000000016-0000000020.jsonl.tmp.", 0), 0u) << names[0];
  EXPECT_EQ(names[1], "classes-0000000012-0000000016.jsonl");

  // Ranks 0 and 2 finish first: no merge yet (no MASTER_ADDR here: no barrier).
  for (int rank : {0, 2}) {
    r = tool("rmt-classify", classify_args(ranks.string()), slurm(rank));
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.err.find("chunk(s) of other ranks not finished yet"), std::string::npos) << r.err;
  }
  EXPECT_FALSE(fs::exists(ranks / "classes.jsonl"));
  // Rank 1 again: redoes only its second chunk (the first stays the same file), removes the
  // temporary, and merges as the last.
  struct stat before {};
  ASSERT_EQ(::stat((ranks / "chunks" / names[1]).c_str(), &before), 0);
  r = tool("rmt-classify", classify_args(ranks.string()), slurm(1));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(
      r.err.find("rank 1/3 (Slurm): inputs [12, 20) of 27, 2 chunks, 1 finished before: skipped"),
      std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("rank 1/3 (Slurm): 4/4 images"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("merged 27 inputs"), std::string::npos) << r.err;
  struct stat after {};
  ASSERT_EQ(::stat((ranks / "chunks" / names[1]).c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino) << "the finished chunk was written again";
  for (const auto& e : fs::directory_iterator(ranks / "chunks")) {
    EXPECT_NE(e.path().filename().string()[0], '.') << "a temporary is left: " << e.path();
  }
  merged_classes(ranks);
  EXPECT_EQ(slurp(ranks / "classes.jsonl"), slurp(single / "classes.jsonl"));
  // The explicit merge gives the same file.
  fs::remove(ranks / "classes.jsonl");
  r = tool("rmt-classify", {"--merge", ranks.string()});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(slurp(ranks / "classes.jsonl"), slurp(single / "classes.jsonl"));
}

// A free TCP port on the loopback interface.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof addr;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

TEST_F(BatchTools, SlurmRank0ServesTheStoreAndWaitsForTheOthers) {
  if (!FinishBarrier::available()) GTEST_SKIP() << "this build has no c10d TCPStore";
  const int port = free_port();
  ASSERT_GT(port, 0);
  const auto single = dir_ / "single", ranks = dir_ / "ranks";
  auto r = tool("rmt-classify", classify_args(single.string()));
  ASSERT_EQ(r.status, 0) << r.err;
  // Two Slurm tasks on this machine: rank 1 starts a second late (its client retries until rank 0
  // serves the store), so rank 0 finishes first and must wait for it before merging.
  const auto exe = quote(rmt::test::tool_path("rmt-classify"));
  std::string args;
  for (const auto& a : classify_args(ranks.string())) args += " " + quote(a);
  const std::string env = "MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) +
                          " SLURM_STEP_NUM_TASKS=2 SLURM_NTASKS=2 SLURM_JOB_ID=7 SLURM_STEP_ID=0";
  r = shell("sh -c " +
            quote("(sleep 1; " + env + " SLURM_PROCID=1 " + exe + args + " 2>" +
                  quote((dir_ / "rank1.log").string()) + ") & " + env + " SLURM_PROCID=0 " + exe +
                  args + "; status=$?; wait $! && exit $status"));
  const auto rank1 = slurp(dir_ / "rank1.log");
  ASSERT_EQ(r.status, 0) << r.err << rank1;
  EXPECT_NE(r.err.find("rank 0/2 (Slurm): waiting for every rank to finish"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("rank 0/2 (Slurm): merged 27 inputs"), std::string::npos) << r.err;
  EXPECT_EQ(rank1.find("merged"), std::string::npos) << rank1;
  EXPECT_NE(rank1.find("rank 1/2 (Slurm): finished"), std::string::npos) << rank1;
  EXPECT_EQ(slurp(ranks / "classes.jsonl"), slurp(single / "classes.jsonl"));

  // Two ranks where rank 1 fails; rank 0 gets a `--merge-wait` of 4 s.
  // `rank1_arg` replaces the value of rank 1's --input-size.
  const auto two_ranks = [&](const fs::path& out, const std::string& rank1_arg) {
    const auto log1 = quote((out.string() + ".rank1.log"));
    std::string common, extra;
    auto args1 = classify_args(out.string());
    args1[5] = rank1_arg;
    for (const auto& a : classify_args(out.string())) common += " " + quote(a);
    for (const auto& a : args1) extra += " " + quote(a);
    const std::string env = "MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(free_port()) +
                            " SLURM_STEP_NUM_TASKS=2 SLURM_NTASKS=2";
    return shell("sh -c " +
                 quote("(sleep 1; " + env + " SLURM_PROCID=1 " + exe + extra + " 2>" + log1 +
                       "; echo status $? >>" + log1 + ") & " + env + " SLURM_PROCID=0 " + exe +
                       common + " --merge-wait 4; status=$?; wait; exit $status"));
  };
  // It fails after connecting (other settings): it tells rank 0, which stops waiting at once.
  // (The run directory is made first with rank 0's settings, so that rank 1 is the one refused.)
  const auto mixed = dir_ / "mixed";
  fs::create_directories(mixed);
  fs::copy_file(single / "manifest.json", mixed / "manifest.json");
  fs::copy_file(single / "inputs.txt", mixed / "inputs.txt");
  r = two_ranks(mixed, "72");
  EXPECT_EQ(r.status, 0) << r.err;
  const auto log1 = slurp(mixed.string() + ".rank1.log");
  EXPECT_NE(log1.find("holds a different run"), std::string::npos) << log1;
  EXPECT_NE(log1.find("status 1"), std::string::npos) << log1;
  EXPECT_NE(
      r.err.find("rank 0/2 (Slurm): warning: no merge: another rank failed: rank 1/2 (Slurm): "),
      std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(mixed / "classes.jsonl"));
  // It fails before connecting (a bad value): rank 0 stops waiting after --merge-wait; run again,
  // rank 1 is the last to finish and merges.
  const auto late = dir_ / "late";
  r = two_ranks(late, "-1");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(
      r.err.find("rank 0/2 (Slurm): warning: no merge: timed out after 4 s waiting for 1 rank(s)"),
      std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(late / "classes.jsonl"));
  r = tool("rmt-classify", classify_args(late.string()),
           {{"SLURM_PROCID", "1"}, {"SLURM_STEP_NUM_TASKS", "2"}});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("rank 1/2 (Slurm): merged 27 inputs"), std::string::npos) << r.err;
  EXPECT_EQ(slurp(late / "classes.jsonl"), slurp(single / "classes.jsonl"));
}

TEST_F(BatchTools, ExtractFeaturesAndMapsOnAnIndexedJob) {
  // Pooled features: two Kubernetes Indexed Job pods (the completions count in RMT_WORLD_SIZE).
  const auto pooled = dir_ / "pooled";
  const std::vector<std::string> args = {"--config",     config_,
                                         "--weights",    weights_,
                                         "--input-size", "64",
                                         "--chunk-size", "5",
                                         "--batch-size", "4",
                                         "--threads",    "1",
                                         "--output",     pooled.string(),
                                         images_};
  auto r = tool("rmt-extract", args, {{"JOB_COMPLETION_INDEX", "1"}});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("rmt-extract: error: JOB_COMPLETION_INDEX is set"), std::string::npos)
      << r.err;
  for (const char* index : {"1", "0"}) {
    r = tool("rmt-extract", args, {{"JOB_COMPLETION_INDEX", index}, {"RMT_WORLD_SIZE", "2"}});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.err.find(std::string("rank ") + index + "/2 (Kubernetes Indexed Job)"),
              std::string::npos)
        << r.err;
  }
  EXPECT_NE(r.err.find("merged 27 inputs (3 failed to decode) into index.jsonl failures.jsonl "
                       "features.safetensors"),
            std::string::npos)
      << r.err;

  rmt::Model model(rmt::config_from_json_file(config_), rmt::ModelKind::Classifier);
  model.load(weights_);
  model.eval();
  rmt::PreprocessOptions pre;
  pre.input_size = 64;
  at::NoGradGuard no_grad;
  const auto contents = rmt::read_checkpoint((pooled / "features.safetensors").string());
  auto tensors = rmt::select_state_dict(contents, rmt::WeightsSelection{"", "", false});
  const auto files = Json::parse(contents.metadata.at("rmt.files"));
  ASSERT_EQ(files.size(), 24u);
  ASSERT_EQ(tensors["features"].sizes(), (at::IntArrayRef{24, 96}));
  std::vector<at::Tensor> images;
  for (const auto& f : files) {
    EXPECT_EQ(std::count(bad_.begin(), bad_.end(), f.get<std::string>()), 0);
    images.push_back(rmt::load_image(f.get<std::string>(), pre));
  }
  const auto expected = model.classifier()->forward_features(at::stack(images));
  EXPECT_LT(rmt::test::relative_error(tensors["features"], expected), 1e-5);
  // index.jsonl: every input once, in order; rows where they decoded.
  std::ifstream index(pooled / "index.jsonl");
  int64_t i = 0, row = 0;
  for (std::string line; std::getline(index, line); ++i) {
    const auto j = Json::parse(line);
    EXPECT_EQ(j.at("index"), i);
    if (!j.contains("error")) {
      EXPECT_EQ(j.at("row"), row);
      EXPECT_EQ(j.at("file"), files.at(static_cast<size_t>(row++)));
    }
  }
  EXPECT_EQ(i, 27);

  // The dense backbone's maps, one process; the inputs given twice, by a file list (the good
  // images of the pooled run, then the bad ones) and by the directory: each is computed once.
  std::string list;
  for (const auto& f : files) list += f.get<std::string>() + "\n";
  for (const auto& f : bad_) list += f + "\n";
  const auto list_file = write_text("list.txt", list);
  const auto dense = dir_ / "dense";
  r = tool("rmt-extract", {"--config", dense_config_, "--kind", "dense", "--weights",
                           rmt::test::data_path("tiny_dense.pth"), "--key-prefix", "backbone.",
                           "--input-size", "64", "--chunk-size", "10", "--threads", "1",
                           "--output", dense.string(), "--file-list", list_file, images_});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("27 paths were given more than once: each is computed once"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("merged 27 inputs (3 failed to decode)"), std::string::npos) << r.err;
  rmt::Model backbone(rmt::config_from_json_file(dense_config_), rmt::ModelKind::Dense);
  rmt::WeightsSelection selection;
  selection.key_prefix = "backbone.";
  backbone.load(rmt::test::data_path("tiny_dense.pth"), selection);
  backbone.eval();
  const auto maps = backbone.forward(at::stack(images));
  tensors = rmt::select_state_dict(rmt::read_checkpoint((dense / "features.safetensors").string()),
                                   rmt::WeightsSelection{"", "", false});
  for (size_t s = 0; s < 4; ++s) {
    const auto name = "stage" + std::to_string(s);
    ASSERT_TRUE(tensors.contains(name)) << name;
    EXPECT_EQ(tensors[name].sizes(), maps[s].sizes());
    EXPECT_LT(rmt::test::relative_error(tensors[name], maps[s]), 1e-5) << name;
  }
}

}  // namespace

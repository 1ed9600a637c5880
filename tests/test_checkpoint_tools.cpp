// rmt-inspect and rmt-convert as users run them: on the reference checkpoints (a training
// checkpoint with an argparse.Namespace, an mmseg checkpoint whose backbone is selected by prefix,
// the legacy and float16 variants) and on damaged files, checking what they print, their exit
// status, and that a converted file reads back bit-identical to its source.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <ftw.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include "checkpoint_bytes.h"
#include "reference.h"
#include "tool_runner.h"
#include "rmt/io/checkpoint.h"

namespace {

namespace fs = std::filesystem;

using rmt::test::remove_tree;

using rmt::test::quote;
using rmt::test::tool_path;

using rmt::test::slurp;

using Result = rmt::test::ToolResult;

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

#define EXPECT_CONTAINS(text, needle) \
  EXPECT_TRUE(contains(text, needle)) << "expected to find \"" << (needle) << "\" in:\n" << (text)
#define EXPECT_LACKS(text, needle) \
  EXPECT_FALSE(contains(text, needle)) << "expected no \"" << (needle) << "\" in:\n" << (text)

// The same names in the same order, the same dtypes and shapes, the same bytes.
void expect_bit_identical(const rmt::StateDict& actual, const rmt::StateDict& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const auto& a = actual.items()[i];
    const auto& e = expected.items()[i];
    ASSERT_EQ(a.key(), e.key()) << "at position " << i;
    ASSERT_EQ(a.value().scalar_type(), e.value().scalar_type()) << a.key();
    ASSERT_EQ(a.value().sizes(), e.value().sizes()) << a.key();
    const at::Tensor x = a.value().contiguous(), y = e.value().contiguous();
    ASSERT_EQ(x.nbytes(), y.nbytes()) << a.key();
    EXPECT_EQ(std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()), 0) << a.key();
  }
}

class CheckpointTools : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("rmt_test_checkpoint_tools_" + std::to_string(::getpid()) + "_" + info->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { remove_tree(dir_.string()); }

  Result run(const std::string& tool, const std::vector<std::string>& args) {
    bool exists = false;
    auto r = rmt::test::run_tool(tool, args, dir_, &exists);
    if (!exists) ADD_FAILURE() << tool_path(tool) << " does not exist: build the " << tool << " target first";
    return r;
  }

  // What the tool failed with: status 1, one "tool: error: ..." message naming `needle`.
  void expect_failure(const Result& r, const std::string& tool, const std::string& needle) {
    EXPECT_EQ(r.status, 1) << r.out << r.err;
    EXPECT_EQ(r.err.rfind(tool + ": error: ", 0), 0u) << r.err;
    EXPECT_CONTAINS(r.err, needle);
  }

  std::string write(const std::string& name, const std::string& bytes) {
    const auto p = (dir_ / name).string();
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  }

  // The files in the work directory (to check that nothing half-written stays behind).
  std::vector<std::string> listing() {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

  fs::path dir_;
};

// ---------------------------------------------------------------------------------------------
// rmt-inspect

TEST_F(CheckpointTools, InspectTrainingCheckpoint) {
  const std::string path = rmt::test::data_path("tiny_cls.pth");
  const Result r = run("rmt-inspect", {path});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
  const std::string& o = r.out;
  EXPECT_CONTAINS(o, "file: " + path + "\n");
  EXPECT_CONTAINS(o, "format: torch.save zip\n");
  // The entries, with the metadata that is not weights.
  for (const char* entry : {"model", "optimizer", "lr_scheduler", "scaler", "model_ema"}) {
    EXPECT_CONTAINS(o, std::string("\n") + entry + ": ");
  }
  EXPECT_CONTAINS(o, "epoch: 299\n");
  EXPECT_CONTAINS(o, "max_accuracy: 82.4");
  EXPECT_CONTAINS(o, "args: argparse.Namespace\n");
  EXPECT_CONTAINS(o, "  model = 'RMT_T3'\n");
  EXPECT_CONTAINS(o, "  batch_size = 128\n");
  EXPECT_CONTAINS(o, "  epochs = 300\n");
  EXPECT_CONTAINS(o, "  betas = None\n");
  EXPECT_CONTAINS(o, "  aa = 'rand-m9-mstd0.5-inc1'\n");
  // The weights auto selection takes, one key per line with shape and dtype.
  EXPECT_CONTAINS(o, "weights: entry 'model' (auto): 198 tensors\n");
  EXPECT_CONTAINS(o, "  patch_embed.proj.0.weight  ");
  const size_t line = o.find("  patch_embed.proj.0.weight  ");
  ASSERT_NE(line, std::string::npos);
  const std::string first = o.substr(line, o.find('\n', line) - line);
  EXPECT_CONTAINS(first, "[8, 3, 3, 3]");
  EXPECT_CONTAINS(first, "float32");
  EXPECT_CONTAINS(o, "  head.weight ");
  EXPECT_CONTAINS(o, "int64");
  // 198 tensors; every line of the listing names a key of read_state_dict.
  const rmt::StateDict weights = rmt::read_state_dict(path);
  int64_t elements = 0, floating = 0;
  for (const auto& item : weights) {
    EXPECT_CONTAINS(o, "\n  " + item.key() + " ");
    elements += item.value().numel();
    if (at::isFloatingType(item.value().scalar_type())) floating += item.value().numel();
  }
  EXPECT_CONTAINS(o, "total: 198 tensors, ");
  EXPECT_EQ(elements, 187754);
  EXPECT_CONTAINS(o, " parameters (floating-point elements)");
  EXPECT_CONTAINS(o, "187,754 elements in all");
}

TEST_F(CheckpointTools, InspectDenseBackboneByPrefix) {
  const std::string path = rmt::test::data_path("tiny_dense.pth");
  // Without a selection: the mmseg checkpoint's entries, and its state_dict.
  const Result all = run("rmt-inspect", {path, "--no-keys"});
  ASSERT_EQ(all.status, 0) << all.err;
  EXPECT_CONTAINS(all.out, "meta: ");
  EXPECT_CONTAINS(all.out, "iter: 80000");
  EXPECT_CONTAINS(all.out, "weights: entry 'state_dict' (auto): 200 tensors\n");
  EXPECT_LACKS(all.out, "\n  backbone.patch_embed.proj.0.weight ");

  // --key-prefix backbone.: only that state_dict, the prefix removed, the head and neck left out.
  const Result r = run("rmt-inspect", {path, "--key-prefix", "backbone."});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_CONTAINS(r.out, "format: torch.save zip\n");
  EXPECT_LACKS(r.out, "meta: ");
  EXPECT_CONTAINS(r.out, "weights: entry 'state_dict' (auto), keys starting with 'backbone.': ");
  EXPECT_CONTAINS(r.out, "\n  patch_embed.proj.0.weight ");
  EXPECT_LACKS(r.out, "backbone.patch_embed");
  EXPECT_LACKS(r.out, "decode_head");
  EXPECT_LACKS(r.out, "neck.");
  rmt::WeightsSelection backbone;
  backbone.key_prefix = "backbone.";
  const rmt::StateDict weights = rmt::read_state_dict(path, backbone);
  EXPECT_CONTAINS(r.out, ": " + std::to_string(weights.size()) + " tensors\n");
  for (const auto& item : weights) EXPECT_CONTAINS(r.out, "\n  " + item.key() + " ");
}

TEST_F(CheckpointTools, InspectJson) {
  const std::string path = rmt::test::data_path("tiny_ls.pth");
  const Result r = run("rmt-inspect", {path, "--json"});
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("format"), "torch.save zip");
  std::map<std::string, nlohmann::json> entries;
  for (const auto& e : j.at("entries")) entries[e.at("key")] = e;
  EXPECT_EQ(entries.at("epoch").at("value"), 10);
  EXPECT_EQ(entries.at("arch").at("value"), "tiny_ls");
  EXPECT_EQ(entries.at("args").at("type"), "argparse.Namespace");
  EXPECT_CONTAINS(entries.at("args").at("value").get<std::string>(), "model='tiny_ls'");
  const auto& w = j.at("weights");
  EXPECT_EQ(w.at("source"), "entry 'state_dict' (auto)");
  const rmt::StateDict weights = rmt::read_state_dict(path);
  ASSERT_EQ(w.at("keys").size(), weights.size());
  int64_t elements = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    const auto& item = weights.items()[i];
    const auto& k = w.at("keys")[i];
    EXPECT_EQ(k.at("name"), item.key());
    EXPECT_EQ(k.at("shape").get<std::vector<int64_t>>(), item.value().sizes().vec());
    elements += item.value().numel();
  }
  EXPECT_EQ(w.at("tensors"), weights.size());
  EXPECT_EQ(w.at("elements"), elements);
}

TEST_F(CheckpointTools, InspectSafetensorsAndLegacy) {
  const Result st = run("rmt-inspect", {rmt::test::data_path("tiny_cls.safetensors")});
  ASSERT_EQ(st.status, 0) << st.err;
  EXPECT_CONTAINS(st.out, "format: safetensors\n");
  EXPECT_CONTAINS(st.out, "weights: the top-level dict (auto): 198 tensors\n");
  const Result legacy = run("rmt-inspect", {rmt::test::data_path("tiny_cls.legacy.pth")});
  ASSERT_EQ(legacy.status, 0) << legacy.err;
  EXPECT_CONTAINS(legacy.out, "format: torch.save legacy\n");
  const Result half = run("rmt-inspect", {rmt::test::data_path("tiny_cls.fp16.pth")});
  ASSERT_EQ(half.status, 0) << half.err;
  EXPECT_CONTAINS(half.out, "float16");
}

TEST_F(CheckpointTools, InspectFailsClearly) {
  // Not a checkpoint, truncated, missing, a directory, a missing entry, no key with the prefix.
  const std::string junk = write("junk.pth", "this is not a checkpoint at all\n");
  expect_failure(run("rmt-inspect", {junk}), "rmt-inspect", junk + ": not a checkpoint");

  const std::string whole = slurp(rmt::test::data_path("tiny_cls.pth"));
  const std::string cut = write("cut.pth", whole.substr(0, whole.size() / 2));
  const Result truncated = run("rmt-inspect", {cut});
  expect_failure(truncated, "rmt-inspect", cut + ": ");
  EXPECT_EQ(truncated.out, "");

  const std::string missing = (dir_ / "missing.pth").string();
  expect_failure(run("rmt-inspect", {missing}), "rmt-inspect", missing + ": cannot open");
  expect_failure(run("rmt-inspect", {dir_.string()}), "rmt-inspect", "not a regular file");

  const std::string path = rmt::test::data_path("tiny_cls.pth");
  expect_failure(run("rmt-inspect", {path, "--weights-key", "nope"}), "rmt-inspect",
                 "no entry 'nope'; entries: model, optimizer");
  expect_failure(run("rmt-inspect", {path, "--key-prefix", "backbone."}), "rmt-inspect",
                 "starts with 'backbone.'");
  // Flipped bytes inside a tensor record: the CRC catches them.
  std::string flipped = whole;
  const size_t at = flipped.find("tiny_cls/data/0");
  ASSERT_NE(at, std::string::npos);
  flipped[at + 200] ^= 0x55;
  const std::string damaged = write("damaged.pth", flipped);
  expect_failure(run("rmt-inspect", {damaged}), "rmt-inspect", damaged + ": ");
  expect_failure(run("rmt-inspect", {damaged}), "rmt-inspect", "CRC-32 mismatch");

  EXPECT_NE(run("rmt-inspect", {}).status, 0);  // the file is required
}

// Hostile files built to inflate the output (tests/test_checkpoint_bounds.cpp has the readers'
// side of each class): the tools print what the file really holds, escaped, with summaries.
namespace hostile {

using rmt::test::Pickle;
using rmt::test::le;

std::string put(uint32_t i) { return "r" + le<uint32_t>(i); }
std::string get(uint32_t i) { return "j" + le<uint32_t>(i); }

// An argparse.Namespace of 300 long fields referenced by 30 entries of each of 200 dicts.
std::string shared_namespace() {
  Pickle p;
  p.op('}').mark();
  p.global("argparse", "Namespace").op(')').op('\x81').raw(put(0));
  p.op('}').mark();
  for (int i = 0; i < 300; ++i) p.str("f" + std::to_string(i)).str(std::string(200, 'x'));
  p.op('u').op('b').op('0');
  for (int e = 0; e < 200; ++e) {
    p.str("entry" + std::to_string(e)).op('}').mark();
    for (int k = 0; k < 30; ++k) p.str("k" + std::to_string(k)).raw(get(0));
    p.op('u');
  }
  p.op('u');
  return rmt::test::torch_zip(p.done(), {});
}

// 20000 names for one tensor, one of them 100 KB long with terminal control bytes in it.
std::string many_names() {
  Pickle p;
  p.op('}').mark();
  p.str("first").tensor("FloatStorage", "0", 1, 0, {1}, {1}).raw(put(0));
  p.str("\r\x1b[2Kall weights loaded\n" + std::string(100000, 'n')).raw(get(0));
  for (int i = 0; i < 20000; ++i) p.str("t" + std::to_string(i)).raw(get(0));
  p.op('u');
  return rmt::test::torch_zip(p.done(), {{"0", rmt::test::float_bytes({1})}});
}

// Sixteen names for one stride-0 tensor of 2^60 elements: 2^64 elements, 4 bytes of data.
std::string huge_view() {
  Pickle p;
  p.op('}').mark();
  p.str("t0").tensor("FloatStorage", "0", 1, 0, {int64_t(1) << 60}, {0}).raw(put(0));
  for (int i = 1; i < 16; ++i) p.str("t" + std::to_string(i)).raw(get(0));
  p.op('u');
  return rmt::test::torch_zip(p.done(), {{"0", rmt::test::float_bytes({1})}});
}

size_t longest_line(const std::string& text) {
  size_t longest = 0, start = 0;
  for (size_t nl = text.find('\n'); nl != std::string::npos; nl = text.find('\n', start)) {
    longest = std::max(longest, nl - start);
    start = nl + 1;
  }
  return std::max(longest, text.size() - start);
}

bool has_terminal_controls(const std::string& text) {
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c < 0x20 && c != '\n') || c == 0x7F) return true;
  }
  return false;
}

}  // namespace hostile

TEST_F(CheckpointTools, InspectOutputGrowsWithWhatTheFileHolds) {
  // A shared object is described once; the other references say where it was shown.
  const std::string shared = write("shared.pth", hostile::shared_namespace());
  const Result r = run("rmt-inspect", {shared});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_LT(r.out.size(), 300000u);  // it printed 2 GB
  EXPECT_CONTAINS(r.out, "  k1: argparse.Namespace <same as entry0 > k0>\n");
  EXPECT_CONTAINS(r.out, "  ... (6 more)\n");
  EXPECT_FALSE(hostile::has_terminal_controls(r.out));
  const Result j = run("rmt-inspect", {shared, "--json"});
  ASSERT_EQ(j.status, 0) << j.err;
  EXPECT_LT(j.out.size(), 2000000u);

  // 20001 names: listed up to 10000, then counted; a 100 KB name is cut, escaped, and does not
  // pad every line to its length.
  const std::string names = write("names.pth", hostile::many_names());
  const Result n = run("rmt-inspect", {names});
  ASSERT_EQ(n.status, 0) << n.err;
  EXPECT_CONTAINS(n.out, "weights: the top-level dict (auto): 20002 tensors\n");
  EXPECT_CONTAINS(n.out, "  ... (10002 more tensors not listed; --json lists every key)\n");
  EXPECT_CONTAINS(n.out, "  \\r\\x1b[2Kall weights loaded\\nnnn");
  EXPECT_CONTAINS(n.out, "... (99829 more bytes)");
  EXPECT_LACKS(n.out, "\nall weights loaded");
  EXPECT_FALSE(hostile::has_terminal_controls(n.out));
  EXPECT_LT(hostile::longest_line(n.out), 400u);
  EXPECT_LT(n.out.size(), 1000000u);
}

TEST_F(CheckpointTools, TotalsDoNotOverflow) {
  // 16 x 2^60 elements: printed exactly (int64 arithmetic printed -9.2e18).
  const std::string path = write("huge_view.pth", hostile::huge_view());
  const Result r = run("rmt-inspect", {path, "--no-keys"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_CONTAINS(r.out, "total: 16 tensors, 18,446,744,073,709,551,616 parameters");
  const Result j = run("rmt-inspect", {path, "--json", "--no-keys"});
  ASSERT_EQ(j.status, 0) << j.err;
  EXPECT_EQ(nlohmann::json::parse(j.out).at("weights").at("elements"), "18446744073709551616");
  // rmt-convert would write 2^66 bytes from 4: refused, nothing written.
  const std::string out = (dir_ / "out.safetensors").string();
  const Result c = run("rmt-convert", {path, out});
  expect_failure(c, "rmt-convert", "refusing to inflate it");
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(CheckpointTools, NothingFromTheFileRuns) {
  // A legacy torch.save file (a stream of pickles) whose object is os.system("touch PWNED"), as
  // Python pickles it on Linux: refused, by name and byte offset, and nothing happens.
  const std::string marker = (dir_ / "PWNED").string();
  const std::string command = "touch " + marker;
  std::string bytes;
  bytes += std::string("\x80\x02\x8a\x0a", 4) + "\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19" + ".";
  bytes += std::string("\x80\x02M\xe9\x03.", 6);  // protocol version 1001
  bytes += std::string("\x80\x02}.", 4);          // sys_info
  const auto n = static_cast<uint32_t>(command.size());
  bytes += std::string("\x80\x02" "cposix\nsystem\nX", 17) +
           std::string(reinterpret_cast<const char*>(&n), 4) + command + "\x85R.";
  const std::string evil = write("evil.pth", bytes);
  for (const char* tool : {"rmt-inspect", "rmt-convert"}) {
    SCOPED_TRACE(tool);
    std::vector<std::string> args{evil};
    if (std::string(tool) == "rmt-convert") args.push_back((dir_ / "out.safetensors").string());
    const Result r = run(tool, args);
    expect_failure(r, tool, evil + ": legacy torch.save: the object pickle: pickle: refusing to "
                                   "call posix.system (REDUCE): it could run code");
    EXPECT_CONTAINS(r.err, " at byte ");
    EXPECT_FALSE(fs::exists(marker));
  }
  EXPECT_EQ(listing(), std::vector<std::string>{"evil.pth"});
}

// ---------------------------------------------------------------------------------------------
// rmt-convert

TEST_F(CheckpointTools, ConvertTrainingCheckpoint) {
  const std::string path = rmt::test::data_path("tiny_cls.pth");
  const std::string out = (dir_ / "tiny_cls.safetensors").string();
  const Result r = run("rmt-convert", {path, out});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_CONTAINS(r.out, "wrote " + out + ": 198 tensors, 187754 elements, from entry 'model'");
  expect_bit_identical(rmt::read_state_dict(out), rmt::read_state_dict(path));

  const rmt::CheckpointContents c = rmt::read_checkpoint(out);
  EXPECT_EQ(c.format, "safetensors");
  EXPECT_EQ(c.metadata.at("source"), "tiny_cls.pth");
  EXPECT_EQ(c.metadata.at("source_format"), "torch.save zip");
  EXPECT_EQ(c.metadata.at("weights_key"), "model");
  EXPECT_EQ(c.metadata.at("format"), "pt");
  EXPECT_EQ(c.metadata.count("arch"), 0u);
  EXPECT_EQ(listing(), std::vector<std::string>{"tiny_cls.safetensors"});

  // The EMA weights on request; the same file again only with --force.
  const Result again = run("rmt-convert", {path, out, "--weights-key", "model_ema"});
  expect_failure(again, "rmt-convert", out + " exists (give --force");
  const Result ema = run("rmt-convert", {path, out, "--weights-key", "model_ema", "--force"});
  ASSERT_EQ(ema.status, 0) << ema.err;
  rmt::WeightsSelection s;
  s.weights_key = "model_ema";
  expect_bit_identical(rmt::read_state_dict(out), rmt::read_state_dict(path, s));
  EXPECT_EQ(rmt::read_checkpoint(out).metadata.at("weights_key"), "model_ema");
}

TEST_F(CheckpointTools, ConvertEveryFormat) {
  // The legacy, DistributedDataParallel and float16 variants, and safetensors itself: the same
  // weights (the float16 file keeps float16).
  const rmt::StateDict reference = rmt::read_state_dict(rmt::test::data_path("tiny_cls.pth"));
  for (const char* name : {"tiny_cls.legacy.pth", "tiny_cls.module_prefix.pth",
                           "tiny_cls.safetensors", "tiny_cls.fp16.pth"}) {
    SCOPED_TRACE(name);
    const std::string path = rmt::test::data_path(name);
    const std::string out = (dir_ / (std::string(name) + ".safetensors")).string();
    const Result r = run("rmt-convert", {path, out, "-q"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, "");
    const rmt::StateDict converted = rmt::read_state_dict(out);
    expect_bit_identical(converted, rmt::read_state_dict(path));
    ASSERT_EQ(converted.size(), reference.size());
    EXPECT_EQ(converted.items()[0].key(), reference.items()[0].key());  // module. removed
    if (std::string(name) == "tiny_cls.fp16.pth") {
      EXPECT_EQ(converted.items()[0].value().scalar_type(), at::kHalf);
    }
  }
}

TEST_F(CheckpointTools, ConvertDenseBackboneCheckedAgainstItsConfig) {
  const std::string path = rmt::test::data_path("tiny_dense.pth");
  const std::string config = (dir_ / "tiny_dense.json").string();
  std::ofstream(config) << rmt::test::manifest_case("tiny_dense").at("config").dump();
  const std::string out = (dir_ / "backbone.safetensors").string();
  const Result r = run("rmt-convert", {path, out, "--key-prefix", "backbone.", "--config",
                                       config, "--kind", "dense"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_CONTAINS(r.out, "they load into " + config);
  rmt::WeightsSelection backbone;
  backbone.key_prefix = "backbone.";
  expect_bit_identical(rmt::read_state_dict(out), rmt::read_state_dict(path, backbone));
  const auto meta = rmt::read_checkpoint(out).metadata;
  EXPECT_EQ(meta.at("weights_key"), "state_dict");
  EXPECT_EQ(meta.at("key_prefix"), "backbone.");
  EXPECT_EQ(meta.at("kind"), "dense");
  const auto written = nlohmann::json::parse(meta.at("config"));
  EXPECT_EQ(written.at("embed_dims"), rmt::test::manifest_case("tiny_dense").at("config").at("embed_dims"));

  // Without the prefix the head and neck do not belong to the backbone: refused, nothing written.
  const std::string whole = (dir_ / "whole.safetensors").string();
  const Result bad = run("rmt-convert", {path, whole, "--config", config, "--kind", "dense"});
  expect_failure(bad, "rmt-convert", "do not load into the config " + config);
  // Counted, the first few named (the message stays under 1 KB).
  EXPECT_CONTAINS(bad.err, "unexpected (200):\n    backbone.patch_embed.proj.0.weight");
  EXPECT_CONTAINS(bad.err, " more)");
  EXPECT_LT(bad.err.size(), 1100u) << bad.err;
  EXPECT_FALSE(fs::exists(whole));
}

TEST_F(CheckpointTools, ConvertWithPresetRefusesWeightsOfAnotherModel) {
  const std::string out = (dir_ / "rmt_t.safetensors").string();
  const Result r = run("rmt-convert", {rmt::test::data_path("tiny_cls.pth"), out, "--arch", "rmt_t"});
  expect_failure(r, "rmt-convert", "do not load into preset rmt_t");
  EXPECT_TRUE(listing().empty());
  expect_failure(run("rmt-convert", {rmt::test::data_path("tiny_cls.pth"), out, "--arch", "rmt_x"}),
                 "rmt-convert", "unknown preset 'rmt_x'");
  EXPECT_TRUE(listing().empty());
}

TEST_F(CheckpointTools, ConvertWithPreset) {
  // The full-size RMT-T weights, when this machine has them.
  if (!rmt::test::reference_available("rmt_t.pth")) GTEST_SKIP() << "no rmt_t.pth reference";
  const std::string path = rmt::test::reference_path("rmt_t.pth");
  const std::string out = (dir_ / "rmt_t.safetensors").string();
  const Result r = run("rmt-convert", {path, out, "--arch", "rmt_t"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_CONTAINS(r.out, "they load into rmt_t");
  const auto meta = rmt::read_checkpoint(out).metadata;
  EXPECT_EQ(meta.at("arch"), "rmt_t");
  EXPECT_EQ(meta.at("kind"), "classifier");
  nlohmann::json config;
  EXPECT_NO_THROW(config = nlohmann::json::parse(meta.at("config")));
  EXPECT_TRUE(config.contains("embed_dims")) << config;
  expect_bit_identical(rmt::read_state_dict(out), rmt::read_state_dict(path));
}

TEST_F(CheckpointTools, ConvertNeverOverwritesItsInput) {
  const std::string original = slurp(rmt::test::data_path("tiny_cls.safetensors"));
  const std::string input = write("weights.safetensors", original);
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{input, input}, {input, input, "--force"},
        {input, (dir_ / "." / "weights.safetensors").string(), "--force"}}) {
    expect_failure(run("rmt-convert", args), "rmt-convert", "is the input file");
  }
  // A hard link to it is the same file too.
  const std::string link = (dir_ / "link.safetensors").string();
  ASSERT_EQ(::link(input.c_str(), link.c_str()), 0);
  expect_failure(run("rmt-convert", {input, link, "--force"}), "rmt-convert", "is the input file");
  EXPECT_EQ(slurp(input), original);
  EXPECT_EQ(listing(), (std::vector<std::string>{"link.safetensors", "weights.safetensors"}));
}

TEST_F(CheckpointTools, ConvertFailsCleanly) {
  // Damaged input: an error naming it, no output, no temporary file left.
  const std::string whole = slurp(rmt::test::data_path("tiny_cls.pth"));
  const std::string cut = write("cut.pth", whole.substr(0, whole.size() - 100));
  const std::string out = (dir_ / "out.safetensors").string();
  expect_failure(run("rmt-convert", {cut, out}), "rmt-convert", cut + ": zip archive");
  const std::string junk = write("junk.bin", std::string(64, '\x07'));
  expect_failure(run("rmt-convert", {junk, out}), "rmt-convert", junk + ": not a checkpoint");
  expect_failure(run("rmt-convert", {rmt::test::data_path("tiny_cls.pth"), out, "--weights-key",
                                     "optimizer"}),
                 "rmt-convert", "entry 'optimizer': 'state' is a dict, not a tensor");
  EXPECT_EQ(listing(), (std::vector<std::string>{"cut.pth", "junk.bin"}));

  // An output that cannot be written: a missing directory.
  const std::string nowhere = (dir_ / "no" / "such" / "dir.safetensors").string();
  expect_failure(run("rmt-convert", {rmt::test::data_path("tiny_cls.pth"), nowhere}),
                 "rmt-convert", "cannot write " + nowhere);
  // An existing output that is a directory.
  expect_failure(run("rmt-convert", {rmt::test::data_path("tiny_cls.pth"), dir_.string(), "--force"}),
                 "rmt-convert", "is a directory");
  EXPECT_EQ(listing(), (std::vector<std::string>{"cut.pth", "junk.bin"}));
}

}  // namespace

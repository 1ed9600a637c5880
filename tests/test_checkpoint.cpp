// Checkpoint reading: every format of the reference weights, weight selection, inspection, the
// safetensors writer, and hostile files built here byte by byte (none of them may crash, run
// anything, or fail without saying what is wrong).

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>

#include "checkpoint_bytes.h"
#include "rmt/io/checkpoint.h"
#include "rmt/io/pickle.h"

namespace {

using namespace rmt::test;  // the byte builders

using rmt::StateDict;
using rmt::WeightsSelection;
using rmt::pickle::Kind;
using rmt::pickle::Value;

std::string data_file(const std::string& name) { return std::string(RMT_TEST_DATA_DIR) + "/" + name; }

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string temp_path(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("rmt_test_checkpoint_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Runs f and checks that it throws a std::exception whose message contains `needle`.
void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one mentioning \"" << needle << "\"";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message: " << e.what() << "\nexpected to contain: " << needle;
  }
}

StateDict weights_of(const std::string& bytes, const WeightsSelection& s = {}) {
  return rmt::read_state_dict_from_memory(bytes.data(), bytes.size(), "hand.pth", s);
}

std::vector<std::string> keys_of(const StateDict& sd) {
  std::vector<std::string> keys;
  for (const auto& item : sd) keys.push_back(item.key());
  return keys;
}

// ---------------------------------------------------------------------------------------------
// The reference checkpoints

TEST(Checkpoint, TrainingCheckpointDefaultsToModel) {
  const StateDict sd = rmt::read_state_dict(data_file("tiny_cls.pth"));
  ASSERT_EQ(sd.size(), 198u);
  const auto keys = keys_of(sd);
  EXPECT_EQ(keys.front(), "patch_embed.proj.0.weight");
  EXPECT_EQ(keys.back(), "head.bias");
  const at::Tensor w = sd["patch_embed.proj.0.weight"];
  EXPECT_EQ(w.scalar_type(), at::kFloat);
  EXPECT_EQ(w.sizes(), (std::vector<int64_t>{8, 3, 3, 3}));
  // Values as torch.load gives them.
  EXPECT_EQ(w.flatten()[0].item<float>(), 0.16442035138607025f);
  EXPECT_EQ(w.flatten()[1].item<float>(), -0.026427011936903f);
  EXPECT_NEAR(w.to(at::kDouble).sum().item<double>(), -3.162182430489338, 1e-12);
  const at::Tensor nbt = sd["patch_embed.proj.1.num_batches_tracked"];
  EXPECT_EQ(nbt.scalar_type(), at::kLong);
  EXPECT_EQ(nbt.dim(), 0);
  EXPECT_EQ(nbt.item<int64_t>(), 1234);
  EXPECT_EQ(sd["head.bias"].sizes(), (std::vector<int64_t>{10}));
}

TEST(Checkpoint, EveryFormatGivesTheSameWeights) {
  const StateDict ref = rmt::read_state_dict(data_file("tiny_cls.pth"));
  for (const char* file : {"tiny_cls.legacy.pth", "tiny_cls.safetensors",
                           "tiny_cls.module_prefix.pth"}) {
    SCOPED_TRACE(file);
    const StateDict sd = rmt::read_state_dict(data_file(file));
    ASSERT_EQ(keys_of(sd), keys_of(ref));
    for (const auto& item : ref) {
      const at::Tensor& t = sd[item.key()];
      EXPECT_EQ(t.scalar_type(), item.value().scalar_type()) << item.key();
      EXPECT_TRUE(at::equal(t, item.value())) << item.key();
    }
  }
  // float16 copy: exactly the float32 weights rounded to half (integer buffers unchanged).
  const StateDict half = rmt::read_state_dict(data_file("tiny_cls.fp16.pth"));
  ASSERT_EQ(keys_of(half), keys_of(ref));
  for (const auto& item : ref) {
    const at::Tensor& t = half[item.key()];
    if (item.value().is_floating_point()) {
      EXPECT_EQ(t.scalar_type(), at::kHalf) << item.key();
      EXPECT_TRUE(at::equal(t, item.value().to(at::kHalf))) << item.key();
    } else {
      EXPECT_TRUE(at::equal(t, item.value())) << item.key();
    }
  }
}

TEST(Checkpoint, ModulePrefixIsKeptWhenAsked) {
  WeightsSelection keep;
  keep.strip_module_prefix = false;
  const StateDict sd = rmt::read_state_dict(data_file("tiny_cls.module_prefix.pth"), keep);
  EXPECT_EQ(keys_of(sd).front(), "module.patch_embed.proj.0.weight");
}

TEST(Checkpoint, ModelEmaSelection) {
  WeightsSelection ema;
  ema.weights_key = "model_ema";
  const StateDict sd = rmt::read_state_dict(data_file("tiny_cls.pth"), ema);
  ASSERT_EQ(sd.size(), 198u);
  const at::Tensor w = sd["patch_embed.proj.0.weight"];
  EXPECT_EQ(w.flatten()[0].item<float>(), 0.17442035675048828f);
  EXPECT_NEAR(w.to(at::kDouble).sum().item<double>(), -1.0021825511939824, 1e-12);
  const StateDict model = rmt::read_state_dict(data_file("tiny_cls.pth"));
  EXPECT_FALSE(at::equal(w, model["patch_embed.proj.0.weight"]));
}

TEST(Checkpoint, TimmStateDictKey) {
  const StateDict sd = rmt::read_state_dict(data_file("tiny_ls.pth"));
  EXPECT_EQ(sd.size(), 252u);
  EXPECT_TRUE(sd.contains("layers.2.blocks.0.gamma_1"));
  const StateDict tl = rmt::read_state_dict(data_file("tiny_token_label.pth"));
  EXPECT_EQ(tl.size(), 254u);
}

TEST(Checkpoint, MmsegBackbonePrefix) {
  WeightsSelection backbone;
  backbone.key_prefix = "backbone.";
  const StateDict sd = rmt::read_state_dict(data_file("tiny_dense.pth"), backbone);
  EXPECT_EQ(sd.size(), 197u);
  EXPECT_TRUE(sd.contains("patch_embed.proj.0.weight"));
  for (const auto& k : keys_of(sd)) {
    EXPECT_EQ(k.find("backbone."), std::string::npos) << k;
    EXPECT_NE(k.rfind("neck.", 0), 0u) << k;
    EXPECT_NE(k.rfind("decode_head.", 0), 0u) << k;
  }
  const StateDict all = rmt::read_state_dict(data_file("tiny_dense.pth"));
  EXPECT_EQ(all.size(), 200u);
  EXPECT_TRUE(all.contains("neck.lateral_convs.0.conv.weight"));
  EXPECT_TRUE(at::equal(all["backbone.patch_embed.proj.0.weight"], sd["patch_embed.proj.0.weight"]));
}

TEST(Checkpoint, FullSizeReference) {
  const std::string path = std::string(RMT_REFERENCE_DIR) + "/rmt_t.pth";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "no " << path;
  const StateDict sd = rmt::read_state_dict(path);
  EXPECT_EQ(sd.size(), 374u);
  const at::Tensor w = sd["patch_embed.proj.0.weight"];
  EXPECT_EQ(w.sizes(), (std::vector<int64_t>{32, 3, 3, 3}));
  EXPECT_NEAR(w.to(at::kDouble).sum().item<double>(), 12.495074413629482, 1e-9);
}

TEST(Checkpoint, SelectionErrorsNameTheProblem) {
  const std::string path = data_file("tiny_cls.pth");
  WeightsSelection foo;
  foo.weights_key = "foo";
  expect_error([&] { rmt::read_state_dict(path, foo); },
               "tiny_cls.pth: no entry 'foo'; entries: model, optimizer, lr_scheduler, epoch");
  WeightsSelection epoch;
  epoch.weights_key = "epoch";
  expect_error([&] { rmt::read_state_dict(path, epoch); }, "entry 'epoch' is a int, not a state_dict");
  WeightsSelection optimizer;
  optimizer.weights_key = "optimizer";
  expect_error([&] { rmt::read_state_dict(path, optimizer); }, "'state' is a dict, not a tensor");
  WeightsSelection prefix;
  prefix.key_prefix = "backbone.";
  expect_error([&] { rmt::read_state_dict(path, prefix); }, "starts with 'backbone.'");
  expect_error([&] { rmt::read_state_dict(data_file("no_such_file.pth")); }, "cannot open");
  // A dict that is neither a training checkpoint nor a state_dict.
  Pickle p;
  p.op('}').mark().str("epoch").integer(3).str("note").str("hello").op('u');
  const std::string bytes = torch_zip(p.done(), {});
  expect_error([&] { weights_of(bytes); }, "no weights found");
  expect_error([&] { weights_of(bytes); }, "entries: epoch, note");
}

TEST(Checkpoint, InspectionTree) {
  const rmt::CheckpointContents c = rmt::read_checkpoint(data_file("tiny_cls.pth"));
  EXPECT_EQ(c.format, "torch.save zip");
  ASSERT_NE(c.root, nullptr);
  ASSERT_EQ(c.root->kind, Kind::Dict);
  const Value* epoch = c.root->find("epoch");
  ASSERT_NE(epoch, nullptr);
  EXPECT_EQ(epoch->integer, 299);
  EXPECT_DOUBLE_EQ(c.root->find("max_accuracy")->real, 82.4);
  const Value* args = c.root->find("args");
  ASSERT_EQ(args->kind, Kind::Object);
  EXPECT_EQ(args->qualified_name(), "argparse.Namespace");
  EXPECT_TRUE(args->attribute("model")->is_str("RMT_T3"));
  EXPECT_EQ(args->attribute("batch_size")->integer, 128);
  EXPECT_EQ(args->attribute("betas")->kind, Kind::None);
  // Optimizer state is read too (AdamW moments are tensors).
  const Value* state = c.root->find("optimizer")->find("state");
  ASSERT_NE(state, nullptr);
  ASSERT_FALSE(state->entries.empty());
  const Value* step = state->entries[0].second->find("step");
  ASSERT_EQ(step->kind, Kind::Tensor);
  EXPECT_EQ(step->tensor->data.item<float>(), 1501200.0f);
  const Value* scheduler = c.root->find("lr_scheduler");
  EXPECT_EQ(scheduler->find("t_initial")->integer, 300);
  EXPECT_DOUBLE_EQ(scheduler->find("lr_min")->real, 1e-05);

  const std::string text = rmt::describe_checkpoint(c);
  EXPECT_NE(text.find("format: torch.save zip"), std::string::npos) << text;
  EXPECT_NE(text.find("epoch: 299"), std::string::npos) << text;
  EXPECT_NE(text.find("max_accuracy: 82.4"), std::string::npos) << text;
  EXPECT_NE(text.find("args: argparse.Namespace"), std::string::npos) << text;
  EXPECT_NE(text.find("model = 'RMT_T3'"), std::string::npos) << text;
  EXPECT_NE(text.find("model: state_dict, 198 tensors"), std::string::npos) << text;
  // Floats as Python prints them.
  EXPECT_NE(text.find("lr_min: 1e-05\n"), std::string::npos) << text;
  EXPECT_NE(text.find("warmup_steps: [0.0002]\n"), std::string::npos) << text;
  EXPECT_NE(text.find("scale: 65536.0\n"), std::string::npos) << text;
  EXPECT_EQ(rmt::pickle::render(*args, {2, 2, 40}),
            "argparse.Namespace(model='RMT_T3', batch_size=128, ... (16 more))");

  // The weights from contents already read equal read_state_dict's.
  const StateDict from_contents = rmt::select_state_dict(c);
  EXPECT_TRUE(at::equal(from_contents["head.bias"], rmt::read_state_dict(data_file("tiny_cls.pth"))["head.bias"]));

  // mmseg's meta: strings, tuples and lists.
  const rmt::CheckpointContents dense = rmt::read_checkpoint(data_file("tiny_dense.pth"));
  const Value* meta = dense.root->find("meta");
  ASSERT_NE(meta, nullptr);
  EXPECT_EQ(rmt::pickle::render(*meta->find("CLASSES")), "('wall', 'building', 'sky')");
  EXPECT_EQ(rmt::pickle::render(*meta->find("PALETTE")),
            "[[120, 120, 120], [180, 120, 120], [6, 230, 230]]");
  EXPECT_TRUE(meta->find("mmseg_version")->is_str("0.20.2"));
  const std::string dense_text = rmt::describe_checkpoint(dense);
  EXPECT_NE(dense_text.find("iter: 80000"), std::string::npos) << dense_text;

  // timm's layout through the legacy reader too.
  const rmt::CheckpointContents legacy = rmt::read_checkpoint(data_file("tiny_cls.legacy.pth"));
  EXPECT_EQ(legacy.format, "torch.save legacy");
}

TEST(Checkpoint, SafetensorsMetadataAndRoundTrip) {
  const rmt::CheckpointContents ref = rmt::read_checkpoint(data_file("tiny_cls.safetensors"));
  EXPECT_EQ(ref.format, "safetensors");
  EXPECT_EQ(ref.metadata.at("arch"), "tiny");
  EXPECT_EQ(ref.metadata.at("format"), "pt");

  StateDict sd;
  sd.insert("a.weight", at::arange(12, at::kFloat).reshape({3, 4}).t());  // not contiguous
  sd.insert("b.half", at::linspace(-2, 2, 7, at::kFloat).to(at::kHalf));
  sd.insert("c.bf16", at::linspace(-2, 2, 5, at::kFloat).to(at::kBFloat16));
  sd.insert("d.double", at::tensor({1.0, 2.5}, at::kDouble));
  sd.insert("e.long", at::tensor(std::vector<int64_t>{int64_t(1) << 40, -3}, at::kLong));
  sd.insert("f.int", at::tensor({7, -7}, at::kInt));
  sd.insert("g.short", at::tensor({3}, at::kShort));
  sd.insert("h.char", at::tensor({-5}, at::kChar));
  sd.insert("i.byte", at::tensor({250}, at::kByte));
  sd.insert("j.bool", at::tensor({1, 0, 1}, at::kByte).to(at::kBool));
  sd.insert("k.scalar", at::scalar_tensor(1234, at::kLong));
  sd.insert("l.empty", at::empty({0, 3}, at::kFloat));
  const std::map<std::string, std::string> meta = {{"arch", "rmt_t"},
                                                   {"config", "{\"depths\": [2, 2, 8, 2]}"}};
  const std::string path = temp_path("round_trip.safetensors");
  rmt::save_safetensors(path, sd, meta);
  const rmt::CheckpointContents c = rmt::read_checkpoint(path);
  EXPECT_EQ(c.metadata, meta);
  const StateDict back = rmt::read_state_dict(path);
  ASSERT_EQ(keys_of(back), keys_of(sd));
  for (const auto& item : sd) {
    EXPECT_EQ(back[item.key()].scalar_type(), item.value().scalar_type()) << item.key();
    EXPECT_TRUE(at::equal(back[item.key()], item.value())) << item.key();
  }
  // The reference weights through the writer and back.
  const StateDict tiny = rmt::read_state_dict(data_file("tiny_cls.pth"));
  const std::string tiny_path = temp_path("tiny.safetensors");
  rmt::save_safetensors(tiny_path, tiny);
  const StateDict tiny_back = rmt::read_state_dict(tiny_path);
  ASSERT_EQ(keys_of(tiny_back), keys_of(tiny));
  for (const auto& item : tiny) EXPECT_TRUE(at::equal(tiny_back[item.key()], item.value()));
}

// ---------------------------------------------------------------------------------------------
// Hand-made torch.save archives

TEST(TorchSave, ViewsShareOneStorage) {
  Pickle p;
  p.op('}').mark();
  p.str("a").tensor("FloatStorage", "0", 6, 0, {2, 3}, {3, 1});
  p.str("b").tensor("FloatStorage", "0", 6, 1, {2}, {3});
  p.str("c").tensor("FloatStorage", "0", 6, 0, {3, 2}, {1, 3});
  p.str("d").tensor("LongStorage", "1", 2, 1, {}, {});
  p.op('u');
  const std::string bytes = torch_zip(
      p.done(), {{"0", float_bytes({0, 1, 2, 3, 4, 5})}, {"1", le<int64_t>(-9) + le<int64_t>(42)}},
      {}, "any_folder_name");
  const StateDict sd = weights_of(bytes);
  const at::Tensor a = sd["a"], b = sd["b"], c = sd["c"];
  EXPECT_TRUE(at::equal(a, at::arange(6, at::kFloat).reshape({2, 3})));
  EXPECT_TRUE(at::equal(b, at::tensor({1.0f, 4.0f})));
  EXPECT_TRUE(at::equal(c, a.t()));
  EXPECT_EQ(a.storage().unsafeGetStorageImpl(), b.storage().unsafeGetStorageImpl());
  EXPECT_EQ(a.storage().unsafeGetStorageImpl(), c.storage().unsafeGetStorageImpl());
  EXPECT_EQ(sd["d"].item<int64_t>(), 42);

  // The same through zip64 records.
  ZipOptions z64;
  z64.zip64 = true;
  const StateDict sd64 = weights_of(torch_zip(
      p.done(), {{"0", float_bytes({0, 1, 2, 3, 4, 5})}, {"1", le<int64_t>(-9) + le<int64_t>(42)}},
      z64));
  EXPECT_TRUE(at::equal(sd64["c"], c));
}

TEST(TorchSave, DtypesAndParameters) {
  Pickle p;
  p.op('}').mark();
  p.str("half").tensor("HalfStorage", "h", 2, 0, {2}, {1});
  p.str("bf16").tensor("BFloat16Storage", "b", 1, 0, {1}, {1});
  p.str("bool").tensor("BoolStorage", "o", 3, 0, {3}, {1});
  p.str("i8").tensor("CharStorage", "c", 1, 0, {1}, {1});
  // nn.Parameter: _rebuild_parameter(tensor, requires_grad, hooks)
  p.str("param").global("torch._utils", "_rebuild_parameter").mark();
  p.tensor("DoubleStorage", "d", 1, 0, {1}, {1}).op('\x88');
  p.global("collections", "OrderedDict").op(')').op('R').op('t').op('R');
  p.op('u');
  const at::Tensor half = at::tensor({1.5f, -2.0f}).to(at::kHalf);
  const at::Tensor bf = at::tensor({0.75f}).to(at::kBFloat16);
  const std::string bytes = torch_zip(
      p.done(), {{"h", std::string(static_cast<const char*>(half.data_ptr()), 4)},
                 {"b", std::string(static_cast<const char*>(bf.data_ptr()), 2)},
                 {"o", std::string("\x01\x00\x01", 3)},
                 {"c", std::string("\xfe", 1)},
                 {"d", le<double>(3.25)}});
  const StateDict sd = weights_of(bytes);
  EXPECT_TRUE(at::equal(sd["half"], half));
  EXPECT_TRUE(at::equal(sd["bf16"], bf));
  EXPECT_TRUE(at::equal(sd["bool"], at::tensor({1, 0, 1}, at::kByte).to(at::kBool)));
  EXPECT_EQ(sd["i8"].item<int8_t>(), -2);
  EXPECT_EQ(sd["param"].scalar_type(), at::kDouble);
  EXPECT_EQ(sd["param"].item<double>(), 3.25);

  // A bool storage holding 2 is refused rather than handed to torch.
  expect_error([&] {
    weights_of(torch_zip(one_tensor_pickle("BoolStorage", 1, 0, {1}, {1}), {{"0", "\x02"}}));
  }, "neither 0 nor 1");
}

TEST(TorchSave, LegacyFormatWithStorageView) {
  // The legacy stream: magic, protocol version, sys_info, objects, key list, records.
  std::string file = Pickle().raw(std::string("\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 12)).done();
  file += Pickle().integer(1001).done();
  Pickle info;
  info.op('}').mark().str("protocol_version").integer(1001).str("little_endian").op('\x88').op('u');
  file += info.done();
  Pickle p;
  p.op('}').mark().str("v");
  p.global("torch._utils", "_rebuild_tensor_v2").mark();
  p.mark().str("storage").global("torch", "FloatStorage").str("root").str("cpu").integer(6);
  p.mark().str("view").integer(2).integer(3).op('t');  // elements [2, 5) of the root
  p.op('t').op('Q').integer(1).ints({2}).ints({1}).op('\x89');
  p.global("collections", "OrderedDict").op(')').op('R').op('t').op('R').op('u');
  file += p.done();
  file += Pickle().op(']').mark().str("root").op('e').done();
  file += le<int64_t>(6) + float_bytes({0, 1, 2, 3, 4, 5});
  const StateDict sd = weights_of(file);
  EXPECT_TRUE(at::equal(sd["v"], at::tensor({3.0f, 4.0f})));

  // Cut short: the record runs past the end.
  expect_error([&] { weights_of(file.substr(0, file.size() - 4)); }, "truncated");
  // The reference legacy file cut short.
  const std::string legacy = slurp(data_file("tiny_cls.legacy.pth"));
  expect_error([&] { weights_of(legacy.substr(0, legacy.size() * 9 / 10)); }, "truncated");
  // Wrong magic number.
  expect_error([&] { weights_of(Pickle().integer(1).done()); }, "magic number");
}

// ---------------------------------------------------------------------------------------------
// Malformed files

TEST(Malformed, EmptyAndRandomFiles) {
  const std::string empty = temp_path("empty.pth");
  write_file(empty, "");
  expect_error([&] { rmt::read_state_dict(empty); }, "empty.pth: the file is empty");
  std::mt19937 rng(1234);
  std::string noise(4096, '\0');
  for (char& c : noise) c = static_cast<char>(rng() & 0xFF);
  noise[0] = 'R';  // keeps the first bytes from looking like a zip or pickle by chance
  noise[8] = 'x';
  const std::string random = temp_path("random.pth");
  write_file(random, noise);
  expect_error([&] { rmt::read_state_dict(random); }, "not a checkpoint");
  // Random bytes behind a pickle's PROTO opcode, and behind a zip signature.
  for (int trial = 0; trial < 200; ++trial) {
    std::string bytes(64 + rng() % 512, '\0');
    for (char& c : bytes) c = static_cast<char>(rng() & 0xFF);
    bytes[0] = trial % 2 ? '\x80' : 'P';
    if (trial % 2 == 0) bytes.replace(0, 4, "PK\x03\x04");
    EXPECT_THROW(weights_of(bytes), std::exception);
  }
}

TEST(Malformed, Zip) {
  const std::string full = slurp(data_file("tiny_cls.pth"));
  expect_error([&] { weights_of(full.substr(0, full.size() / 2)); }, "end-of-central-directory");
  expect_error([&] { weights_of(full.substr(0, full.size() - 1)); }, "end-of-central-directory");
  expect_error([&] { weights_of(make_zip({{"archive/version", "3\n"}})); }, "without a data.pkl");
  ZipOptions compressed;
  compressed.compressed_entry = "archive/data.pkl";
  expect_error([&] { weights_of(torch_zip(one_tensor_pickle("FloatStorage", 1, 0, {1}, {1}),
                                          {{"0", float_bytes({1})}}, compressed)); },
               "is compressed (method 8)");
  // A damaged byte inside a storage record.
  std::string zip = torch_zip(one_tensor_pickle("FloatStorage", 2, 0, {2}, {1}),
                              {{"0", float_bytes({1, 2})}});
  const size_t at = zip.find(float_bytes({1, 2}));
  ASSERT_NE(at, std::string::npos);
  zip[at] ^= 0x40;
  expect_error([&] { weights_of(zip); }, "CRC-32 mismatch");
  // A central directory that claims more than the file holds.
  std::string big = torch_zip(one_tensor_pickle("FloatStorage", 1, 0, {1}, {1}), {{"0", float_bytes({1})}});
  const size_t eocd = big.size() - 22;
  std::memcpy(&big[eocd + 16], "\xff\xff\xff\x7f", 4);
  expect_error([&] { weights_of(big); }, "central directory");
}

TEST(Malformed, Storages) {
  const std::string ok = float_bytes({1, 2, 3, 4});
  expect_error([&] { weights_of(torch_zip(one_tensor_pickle("FloatStorage", 4, 0, {4}, {1}), {})); },
               "storage record 'archive/data/0' is missing");
  expect_error([&] {
    weights_of(torch_zip(one_tensor_pickle("QInt8Storage", 4, 0, {4}, {1}), {{"0", ok}}));
  }, "unknown storage type torch.QInt8Storage");
  expect_error([&] {
    weights_of(torch_zip(one_tensor_pickle("FloatStorage", 4, 0, {5}, {1}), {{"0", ok}}));
  }, "past the end of storage '0' of 4 elements");
  expect_error([&] {
    weights_of(torch_zip(one_tensor_pickle("FloatStorage", 4, 2, {2, 2}, {2, 1}), {{"0", ok}}));
  }, "past the end of storage");
  expect_error([&] {
    weights_of(torch_zip(one_tensor_pickle("FloatStorage", 4, 0, {int64_t(1) << 40, int64_t(1) << 40},
                                           {0, 0}), {{"0", ok}}));
  }, "element count overflows");
  expect_error([&] {
    weights_of(torch_zip(one_tensor_pickle("FloatStorage", 4, 0, {int64_t(1) << 62}, {4}),
                         {{"0", ok}}));
  }, "overflows");
  expect_error([&] {
    weights_of(torch_zip(one_tensor_pickle("FloatStorage", 4, 0, {-1}, {1}), {{"0", ok}}));
  }, "negative size");
  expect_error([&] {
    weights_of(torch_zip(one_tensor_pickle("FloatStorage", 4, 3, {2}, {-1}), {{"0", ok}}));
  }, "negative stride");
  expect_error([&] {
    weights_of(torch_zip(one_tensor_pickle("FloatStorage", 4, 0, {2}, {1, 1}), {{"0", ok}}));
  }, "1 sizes but 2 strides");
  // The record is shorter than the storage the pickle declares.
  expect_error([&] {
    weights_of(torch_zip(one_tensor_pickle("FloatStorage", 4, 0, {4}, {1}), {{"0", ok.substr(4)}}));
  }, "holds 12 bytes, but data.pkl declares 4 elements of float32 (16 bytes)");
  // Persistent ids that are not torch storages.
  Pickle text_pid;
  text_pid.raw("Pfoo\n");
  expect_error([&] { weights_of(torch_zip(text_pid.done(), {})); }, "unsupported persistent id");
}

TEST(Malformed, DeepNesting) {
  // A million MARKs, then 20000 nested lists: an error, not a stack overflow.
  std::string marks = "\x80\x02";
  marks.append(1000000, '(');
  marks += "N.";
  expect_error([&] { rmt::pickle::read_pickle(marks.data(), marks.size()); }, "nested deeper than 10000");
  expect_error([&] { weights_of(torch_zip(marks, {})); }, "nested deeper than 10000");
  std::string lists = "\x80\x02";
  lists.append(20000, ']');
  lists.append(19999, 'a');
  lists += ".";
  expect_error([&] { rmt::pickle::read_pickle(lists.data(), lists.size()); }, "nested deeper than 10000");
  std::string tuples = "\x80\x02N";
  for (int i = 0; i < 1000000; ++i) tuples += '\x85';
  tuples += ".";
  expect_error([&] { rmt::pickle::read_pickle(tuples.data(), tuples.size()); }, "nested deeper");
  // Self-referencing lists are fine (no recursion anywhere) and render finitely.
  const std::string cycle("\x80\x02]q\x00h\x00" "a.", 9);
  auto tree = rmt::pickle::read_pickle(cycle.data(), cycle.size());
  EXPECT_EQ(tree->root()->items[0], tree->root());
  EXPECT_EQ(rmt::pickle::render(*tree->root(), {3, 4, 10}), "[[[...]]]");
}

TEST(Malformed, DangerousCallsAreRefused) {
  const std::string marker = temp_path("pwned");
  std::remove(marker.c_str());
  Pickle os_system;
  os_system.global("os", "system").str("touch " + marker).op('\x85').op('R');
  expect_error([&] { weights_of(torch_zip(os_system.done(), {})); }, "refusing to call os.system");
  expect_error([&] { weights_of(torch_zip(os_system.done(), {})); }, "hand.pth: archive/data.pkl");
  EXPECT_FALSE(std::filesystem::exists(marker));

  // builtins.eval through STACK_GLOBAL (protocol 4).
  Pickle eval(4);
  eval.raw("\x8c\x08" "builtins" "\x8c\x04" "eval" "\x93").str("__import__('os').system('true')");
  eval.op('\x85').op('R');
  expect_error([&] { weights_of(torch_zip(eval.done(), {})); }, "refusing to call builtins.eval");
  // Python 2's name for builtins, exec, and the other usual suspects.
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"__builtin__", "exec"}, {"posix", "system"}, {"nt", "system"}, {"subprocess", "Popen"},
      {"subprocess", "check_output"}, {"builtins", "getattr"}, {"builtins", "__import__"},
      {"builtins", "open"}, {"pty", "spawn"}, {"runpy", "_run_code"}, {"torch", "load"},
      {"torch.hub", "load"}, {"functools", "partial"}, {"mymodule", "run_me"}};
  for (const auto& [module, name] : bad) {
    SCOPED_TRACE(module + "." + name);
    Pickle reduce;
    reduce.global(module, name).str("x").op('\x85').op('R');
    expect_error([&] { rmt::pickle::read_pickle(reduce.done().data(), reduce.done().size()); },
                 "refusing to call");
    Pickle newobj;
    newobj.global(module, name).op(')').op('\x81');
    expect_error([&] { rmt::pickle::read_pickle(newobj.done().data(), newobj.done().size()); },
                 "refusing to call");
  }
  // BUILD on a global would set state on a function or class.
  Pickle build;
  build.global("os", "system").op('}').op('b');
  expect_error([&] { rmt::pickle::read_pickle(build.done().data(), build.done().size()); },
               "BUILD on the global os.system refused");
  // Referencing a global without calling it is harmless and kept as a name.
  Pickle ref;
  ref.global("os", "system");
  auto tree = rmt::pickle::read_pickle(ref.done().data(), ref.done().size());
  EXPECT_EQ(tree->root()->kind, Kind::Global);
  EXPECT_EQ(tree->root()->qualified_name(), "os.system");
}

TEST(Malformed, Safetensors) {
  const std::string eight = float_bytes({1, 2});
  expect_error([&] { weights_of(le<uint64_t>(uint64_t(1) << 62) + "{}"); }, "header length");
  expect_error([&] { weights_of(le<uint64_t>(1000) + "{}"); }, "exceeds the file size");
  expect_error([&] { weights_of(safetensors("{not json", "")); }, "not valid JSON");
  expect_error([&] { weights_of(safetensors("[1, 2]", "")); }, "not a JSON object");
  expect_error([&] { weights_of(safetensors(std::string(100000, '[') + std::string(100000, ']'), "")); },
               "not a JSON object");
  expect_error([&] {
    weights_of(safetensors(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0],"x":)" +
                               std::string(100000, '[') + std::string(100000, ']') + "}}",
                           ""));
  }, "nests deeper");
  expect_error([&] {
    weights_of(safetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                           eight + eight));
  }, "overlapping");
  expect_error([&] {
    weights_of(safetensors(R"({"a":{"dtype":"F32","shape":[250],"data_offsets":[0,1000]}})", eight));
  }, "out of range");
  expect_error([&] {
    weights_of(safetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", eight));
  }, "out of range");
  expect_error([&] {
    weights_of(safetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", eight));
  }, "negative");
  expect_error([&] {
    weights_of(safetensors(R"({"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", eight));
  }, "unsupported dtype 'Q7'");
  expect_error([&] {
    weights_of(safetensors(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight));
  }, "needs 12 bytes, but data_offsets give 8");
  expect_error([&] {
    weights_of(safetensors(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],)"
                           R"("data_offsets":[0,8]}})", eight));
  }, "overflows");
  expect_error([&] {
    weights_of(safetensors(R"({"a":{"dtype":"F32","shape":[2]}})", eight));
  }, "expected an object with dtype, shape and data_offsets");
  expect_error([&] {
    weights_of(safetensors(R"({"__metadata__":{"n":1},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", eight));
  }, "__metadata__ entry 'n' is not a string");
  // A valid one, for contrast.
  const StateDict sd = weights_of(
      safetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", eight));
  EXPECT_TRUE(at::equal(sd["a"], at::tensor({1.0f, 2.0f})));
}

// ---------------------------------------------------------------------------------------------
// The pickle reader on its own

TEST(Pickle, TextProtocolOpcodes) {
  const std::string text =
      "(dp0\nS'x'\np1\nI42\nsS'y'\np2\nF1.25\nsS'z'\nL12345678901234L\nsS'w'\n(lp3\nI01\naI00\n"
      "aNa(I1\nI2\ntp4\nag4\nasS'u'\nVcaf\\u00e9\nsS'v'\ng1\nsS'o'\n(i__main__\nThing\n(dp5\n"
      "S'k'\nI1\nsbsS'e'\nS'a\\'b\\n'\nsS'b'\nL-1180591620717411303424L\ns.";
  auto tree = rmt::pickle::read_pickle(text.data(), text.size());
  EXPECT_EQ(rmt::pickle::render(*tree->root()),
            "{'x': 42, 'y': 1.25, 'z': 12345678901234, 'w': [True, False, None, (1, 2), (1, 2)], "
            "'u': 'caf\xc3\xa9', 'v': 'x', 'o': __main__.Thing(k=1), 'e': 'a\\'b\\n', "
            "'b': -1180591620717411303424}");
}

TEST(Pickle, BinaryProtocolOpcodes) {
  std::string p = "\x80\x04";
  std::string body = "}\x94(";
  body += "\x8c\x01" "a\x94\x8a\x09" + std::string("\x00\x00\x00\x00\x00\x00\x00\x00\x01", 9);  // 2**64
  body += "\x8c\x01" "b\x8f\x94(K\x01K\x02\x90";                     // {1, 2}
  body += "\x8c\x01" "c(K\x03\x91";                                  // frozenset({3})
  body += "\x8c\x01" "d\x8e" + le<uint64_t>(3) + "xyz";              // BINBYTES8
  body += "\x8c\x01" "e\x96" + le<uint64_t>(2) + std::string("\x00\xff", 2);  // BYTEARRAY8
  body += "\x8c\x01" "f\x8d" + le<uint64_t>(2) + "hi";               // BINUNICODE8
  body += "\x8c\x01" "gG" + std::string("\x3f\xf8\x00\x00\x00\x00\x00\x00", 8);  // 1.5
  body += "\x8c\x01" "hh\x01";                                       // memo 1: 'a'
  body += "\x8c\x01" "i\x8b" + le<int32_t>(2) + "\xff\xff";          // LONG4 -1
  body += "\x8c\x01" "j\x8c\x0b" "collections\x8c\x07" "Counter\x93)}\x92";  // NEWOBJ_EX
  body += "\x8c\x01" "kC\x02" "ok";                                   // SHORT_BINBYTES
  body += "\x8c\x01" "lJ" + le<int32_t>(-5);
  body += "\x8c\x01" "mM" + le<uint16_t>(60000);
  body += "\x8c\x01" "n\x88\x89\x86";                                 // (True, False)
  body += std::string("\x8c\x01" "o\x8a\x00", 5);                      // LONG1 0
  body += "u";
  p += "\x95" + le<uint64_t>(body.size() + 1) + body + ".";
  auto tree = rmt::pickle::read_pickle(p.data(), p.size());
  EXPECT_EQ(rmt::pickle::render(*tree->root()),
            "{'a': 18446744073709551616, 'b': {1, 2}, 'c': frozenset({3}), 'd': b'xyz', "
            "'e': b'\\x00\\xff', 'f': 'hi', 'g': 1.5, 'h': 'a', 'i': -1, 'j': collections.Counter(), "
            "'k': b'ok', 'l': -5, 'm': 60000, 'n': (True, False), 'o': 0}");
}

TEST(Pickle, DataConstructors) {
  // Protocol 2 bytes: _codecs.encode('\xff', 'latin1'); a NumPy float64 scalar; sets; dict keys
  // that repeat (the last value wins, in the first position).
  Pickle p;
  p.op('}').mark();
  p.str("bytes").global("_codecs", "encode").mark().str("\xc3\xbf").str("latin1").op('t').op('R');
  p.str("np").global("numpy.core.multiarray", "scalar");
  p.global("numpy", "dtype").mark().str("f8").op('\x89').op('\x88').op('t').op('R');
  p.mark().integer(3).str("<").op('N').op('N').op('N').integer(-1).integer(-1).integer(0).op('t').op('b');
  p.raw("C\x08").raw(le<double>(82.4)).op('\x86').op('R');
  p.str("set").global("builtins", "set").op(']').mark().integer(1).integer(2).op('e').op('\x85').op('R');
  p.str("dup").integer(1).str("dup").integer(2);
  p.str("cfg").global("mmcv.utils.config", "ConfigDict").op(')').op('R');
  p.op('}').str("lr").integer(3).op('s').op('b');
  p.op('u');
  const std::string bytes = p.done();
  auto tree = rmt::pickle::read_pickle(bytes.data(), bytes.size());
  EXPECT_EQ(rmt::pickle::render(*tree->root()),
            "{'bytes': b'\\xff', 'np': 82.4, 'set': {1, 2}, 'dup': 2, "
            "'cfg': mmcv.utils.config.ConfigDict(lr=3)}");
  EXPECT_EQ(tree->root()->find("cfg")->attribute("lr")->integer, 3);
}

TEST(Pickle, LimitsAndBadInput) {
  Pickle many;
  many.op(']').mark();
  for (int i = 0; i < 1000; ++i) many.str("some string");
  many.op('e');
  const std::string bytes = many.done();
  rmt::pickle::Limits small;
  small.max_memory = 16384;
  expect_error([&] { rmt::pickle::read_pickle(bytes.data(), bytes.size(), small); }, "memory");
  EXPECT_NO_THROW(rmt::pickle::read_pickle(bytes.data(), bytes.size()));

  const std::vector<std::pair<std::string, std::string>> cases = {
      {"\x80\x02", "ends before STOP"},
      {"\x80\x02X\xff\xff\xff\x7f" "abc.", "truncated"},
      {"\x80\x09N.", "unsupported pickle protocol 9"},
      {"\x80\x02h\x05.", "memo entry 5 is missing"},
      {"\x80\x02.", "stack underflow"},
      {"\x80\x02(a.", "stack underflow"},
      {"\x80\x02K\x05K\x01K\x02s.", "not a dict"},
      {"\x80\x02\x82\x01.", "extension registry"},
      {"\x80\x05\x97.", "out-of-band"},
      {"\x80\x02\xff.", "unknown opcode 0xff"},
      {"\x80\x02" "K\x01)R.", "refusing to call a int"},
      {"\x80\x02" "]]a]e.", "no MARK"},
  };
  for (const auto& [input, needle] : cases) {
    SCOPED_TRACE(needle);
    const std::string& bytes = input;  // C++17 lambdas cannot capture structured bindings
    expect_error([&] { rmt::pickle::read_pickle(bytes.data(), bytes.size()); }, needle);
  }
}

}  // namespace

// Hostile checkpoints, one class of attack per test, built here byte by byte (the large ones at
// test time, never committed): each must be refused, or read, within the bounds docs/checkpoints.md
// guarantees: in a few seconds (a watchdog of 5 s of CPU time, not a speed measurement), with peak memory at most
// the file plus the tensors it holds plus 256 MiB, and with a message under 1 KB in which nothing
// from the file is raw (no control byte, no megabyte-long name). Each reader runs in a child
// process (tests/support/bounded_run.h), so a regression shows as a failed test, not a hung or
// killed test program.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/nn/modules/linear.h>

#include "bounded_run.h"
#include "checkpoint_bytes.h"
#include "rmt/io/checkpoint.h"
#include "rmt/io/npy.h"
#include "rmt/io/pickle.h"
#include "rmt/io/state_dict.h"
#include "rmt/io/untrusted.h"

namespace {

using namespace rmt::test;
using rmt::pickle::Kind;

// The watchdog: generous (the work is milliseconds to a second when bounded, minutes when not).
// Sanitizers slow everything down several times.
const double kDeadline = sanitized() ? 60.0 : 5.0;
// "the file size plus the tensors it really holds plus 256 MiB" (the file is in memory before the
// child starts, so it is not part of the increase measured).
constexpr long kSlackKb = 256 * 1024;

// No byte of a message may be a control byte (a message cannot forge a line or move the cursor);
// a few messages are laid out on several lines of their own.
bool has_control_bytes(const std::string& s, bool newlines_allowed = false) {
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c < 0x20 && !(newlines_allowed && c == '\n')) || c == 0x7F) return true;
  }
  return false;
}

// What each run took, in the test's output (for the record, not checked but by the bounds).
void report(const BoundedResult& r) {
  std::printf("    [bounded run] %.2f s, peak RSS +%ld MiB%s%s\n", r.seconds, r.peak_increase_kb / 1024,
              r.threw ? ": " : "", r.threw ? rmt::escape_and_cut(r.message, 110).c_str() : "");
}

// The checks every hostile file gets: finished within the deadline, refused with a message naming
// `needle`, under 1 KB, escaped, and within the memory bound (`tensor_kb`: what it really holds).
void expect_refused(const BoundedResult& r, const std::string& needle, long tensor_kb = 0,
                    bool multiline = false) {
  report(r);
  ASSERT_TRUE(r.finished) << r.failure << " (" << r.seconds << " s)";
  ASSERT_TRUE(r.threw) << "read without an error; expected one mentioning \"" << needle << "\"";
  EXPECT_NE(r.message.find(needle), std::string::npos)
      << "message: " << r.message.substr(0, 2000) << "\nexpected to contain: " << needle;
  EXPECT_LE(r.message.size(), rmt::kMaxMessageBytes) << r.message.substr(0, 2000);
  EXPECT_FALSE(has_control_bytes(r.message, multiline)) << r.message.substr(0, 2000);
  if (!sanitized()) EXPECT_LE(r.peak_increase_kb, tensor_kb + kSlackKb);
}

void expect_read(const BoundedResult& r, long tensor_kb = 0) {
  report(r);
  ASSERT_TRUE(r.finished) << r.failure << " (" << r.seconds << " s)";
  ASSERT_FALSE(r.threw) << r.message.substr(0, 2000);
  if (!sanitized()) EXPECT_LE(r.peak_increase_kb, tensor_kb + kSlackKb);
}

BoundedResult read_weights(const std::string& bytes) {
  return run_bounded([&] { rmt::read_state_dict_from_memory(bytes.data(), bytes.size(), "x.pth"); },
                     kDeadline);
}

// read_checkpoint + describe_checkpoint, as rmt-inspect does; `described` gets the text's size
// through an exception (the child reports only messages).
BoundedResult describe(const std::string& bytes, size_t max_description) {
  return run_bounded([&] {
    const auto c = rmt::read_checkpoint_from_memory(bytes.data(), bytes.size(), "x.pth");
    const std::string text = rmt::describe_checkpoint(c);
    if (text.size() > max_description) {
      throw std::runtime_error("the description has " + std::to_string(text.size()) + " bytes");
    }
  }, kDeadline);
}

BoundedResult parse_pickle(const std::string& bytes) {
  return run_bounded([&] { rmt::pickle::read_pickle(bytes.data(), bytes.size()); }, kDeadline);
}

// Memo opcodes with 4-byte indices.
std::string put(uint32_t i) { return "r" + le<uint32_t>(i); }
std::string get(uint32_t i) { return "j" + le<uint32_t>(i); }

std::string repeat(const std::string& s, size_t n) {
  std::string out;
  out.reserve(s.size() * n);
  for (size_t i = 0; i < n; ++i) out += s;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Algorithmic complexity

TEST(Complexity, DictKeyInsertedAgainAndAgain) {
  // One 1 MiB key set 1.5 million times in one dict through the memo (5 bytes each): Python keeps
  // one entry. Each insertion used to copy and hash the whole key (1.5 TB of work from 9 MB).
  Pickle p;
  p.op('}').raw(put(0)).str(std::string(1 << 20, 'k')).raw(put(1)).op('N').raw(put(2)).op('0').op('0');
  p.raw(repeat("h\x01h\x02s", 1500000));
  const std::string bytes = p.done();
  expect_read(parse_pickle(bytes));
  if (HasFatalFailure()) return;  // the checks below run in this process
  const auto tree = rmt::pickle::read_pickle(bytes.data(), bytes.size());
  EXPECT_EQ(tree->root()->entries.size(), 1u);
}

TEST(Complexity, SharedObjectDescribedOnce) {
  // An argparse.Namespace of 300 fields (each a 2 KB string, one object) referenced by 30 entries
  // of each of 200 top-level dicts: 56 KB that described every reference again (2 GB of text).
  Pickle p;
  p.op('}').mark();
  p.global("argparse", "Namespace").op(')').op('\x81').raw(put(0));
  p.op('}').mark();
  p.str("v").raw("X" + le<uint32_t>(2000) + std::string(2000, 'x')).raw(put(1)).op('0').op('0');
  for (int i = 0; i < 300; ++i) p.str("f" + std::to_string(i)).raw(get(1));
  p.op('u').op('b').op('0');
  for (int e = 0; e < 200; ++e) {
    p.str("entry" + std::to_string(e)).op('}').mark();
    for (int k = 0; k < 30; ++k) p.str("k" + std::to_string(k)).raw(get(0));
    p.op('u');
  }
  p.op('u');
  const std::string bytes = torch_zip(p.done(), {});
  ASSERT_LT(bytes.size(), 100000u);
  // The description stays under its 256 KiB limit, which says where it stopped.
  expect_read(describe(bytes, 300 * 1024));
  if (HasFatalFailure()) return;  // the checks below run in this process
  const auto c = rmt::read_checkpoint_from_memory(bytes.data(), bytes.size(), "x.pth");
  const std::string text = rmt::describe_checkpoint(c);
  EXPECT_NE(text.find("argparse.Namespace <same as entry0 > k0>"), std::string::npos)
      << text.substr(0, 3000);
  // The Namespace's fields are listed once, at its first reference.
  size_t listed = 0;
  for (size_t at = text.find("  f1 = "); at != std::string::npos; at = text.find("  f1 = ", at + 1)) {
    ++listed;
  }
  EXPECT_EQ(listed, 1u);
  // render() alone: the shared string is shown once in a call, then *N.
  const auto* ns = c.root->find("entry0")->find("k0");
  const std::string one = rmt::pickle::render(*ns, {2, 400, 5000, 1 << 20});
  EXPECT_LT(one.size(), 10000u);
  EXPECT_NE(one.find("f1=*1"), std::string::npos) << one.substr(0, 500);
}

TEST(Complexity, TextIntegersCannotStall) {
  // Protocol 0 integers of 4300 digits (Python's limit): converting one is quadratic in its
  // digits. 2000 of them (8.6 MB) took minutes; the work budget refuses them.
  std::string p = "(l";
  p += repeat("L" + std::string(4300, '7') + "L\na", 2000);
  p += ".";
  expect_refused(parse_pickle(p), "steps of work");
}

TEST(Complexity, ConversionsCannotStall) {
  // bytes(list) of a million-item list whose last item is not a byte, done again and again: each
  // call scans the list and gives up. The work budget refuses the repetition.
  Pickle p;
  p.raw("cbuiltins\nbytes\n").raw(put(0)).op('0');
  p.op(']').mark().raw("K\x01" + put(1)).raw(repeat(get(1), 1000000)).op('N').op('e').raw(put(2));
  p.op('0');
  p.raw(repeat(get(0) + get(2) + "\x85R0", 20000));
  p.op('N');
  expect_refused(parse_pickle(p.done()), "steps of work");
}

// ---------------------------------------------------------------------------------------------
// Copy amplification

TEST(CopyAmplification, BytesObjectIsNeverCopiedPerUse) {
  // A 16 MiB bytes object passed to bytes() 20000 times (8 bytes each): 320 GB of copies, none of
  // them charged to the memory limit. bytes of bytes is the same object now.
  Pickle p;
  p.raw("cbuiltins\nbytes\n").raw(put(0)).op('0');
  p.raw("B" + le<uint32_t>(16 << 20) + std::string(16 << 20, 'b')).raw(put(1)).op('0');
  p.op(']').raw(put(2)).op('0');
  p.raw(repeat(get(2) + get(0) + get(1) + "\x85Ra", 20000));
  p.raw(get(2));
  const std::string bytes = p.done();
  expect_read(parse_pickle(bytes));
  if (HasFatalFailure()) return;  // the checks below run in this process
  const auto tree = rmt::pickle::read_pickle(bytes.data(), bytes.size());
  ASSERT_EQ(tree->root()->items.size(), 20000u);
  EXPECT_EQ(tree->root()->items.front(), tree->root()->items.back());
  // Encoding a str is done once per str too (protocol 2's bytes), and charged.
  Pickle q;
  q.raw("c_codecs\nencode\n").raw(put(0)).op('0');
  q.str(std::string(8 << 20, 'e')).raw(put(1)).op('0').str("latin1").raw(put(2)).op('0');
  q.op(']').raw(put(3)).op('0');
  q.raw(repeat(get(3) + get(0) + get(1) + get(2) + "\x86Ra", 20000));
  q.raw(get(3));
  expect_read(parse_pickle(q.done()));
}

// Entries whose byte ranges overlap: entry k's local header sits inside entry k-1's data, each
// claims `span` bytes, so one stored range is read (and CRC-checked, and copied) `count` times.
std::string overlapping_zip(size_t count, size_t span) {
  Pickle p;
  p.op('}').mark();
  for (size_t k = 0; k < count; ++k) {
    p.str("w" + std::to_string(k))
        .tensor("ByteStorage", std::to_string(k), static_cast<int64_t>(span), 0,
                {static_cast<int64_t>(span)}, {1});
  }
  p.op('u');
  const std::string pkl = p.done();
  std::string out;
  std::vector<std::pair<std::string, uint64_t>> headers;  // name, offset
  auto local = [&](const std::string& name, const std::string& data) {
    headers.emplace_back(name, out.size());
    out += le<uint32_t>(0x04034b50) + le<uint16_t>(20) + le<uint16_t>(0) + le<uint16_t>(0) +
           le<uint32_t>(0) + le<uint32_t>(crc32(data)) + le<uint32_t>(uint32_t(data.size())) +
           le<uint32_t>(uint32_t(data.size())) + le<uint16_t>(uint16_t(name.size())) +
           le<uint16_t>(0) + name;
  };
  local("a/data.pkl", pkl);
  out += pkl;
  // The overlapping records: headers back to back, then the bytes they all reach into.
  const size_t first = out.size();
  std::vector<std::string> names;
  for (size_t k = 0; k < count; ++k) names.push_back("a/data/" + std::to_string(k));
  size_t headers_size = 0;
  for (const auto& n : names) headers_size += 30 + n.size();
  std::string region(headers_size + span, 'z');
  // Lay the headers into the region with the right CRCs (each covers `span` bytes after it).
  size_t at = 0;
  std::vector<size_t> offsets;
  for (const auto& n : names) {
    offsets.push_back(at);
    at += 30 + n.size();
  }
  for (size_t k = count; k-- > 0;) {  // back to front: a header's CRC covers the later headers
    const size_t data_at = offsets[k] + 30 + names[k].size();
    const std::string_view data(region.data() + data_at, span);
    const std::string h = le<uint32_t>(0x04034b50) + le<uint16_t>(20) + le<uint16_t>(0) +
                          le<uint16_t>(0) + le<uint32_t>(0) + le<uint32_t>(crc32(data)) +
                          le<uint32_t>(uint32_t(span)) + le<uint32_t>(uint32_t(span)) +
                          le<uint16_t>(uint16_t(names[k].size())) + le<uint16_t>(0) + names[k];
    region.replace(offsets[k], h.size(), h);
  }
  out += region;
  std::string central;
  auto central_entry = [&](const std::string& name, uint32_t crc, uint32_t size, uint64_t offset) {
    central += le<uint32_t>(0x02014b50) + le<uint16_t>(20) + le<uint16_t>(20) + le<uint16_t>(0) +
               le<uint16_t>(0) + le<uint32_t>(0) + le<uint32_t>(crc) + le<uint32_t>(size) +
               le<uint32_t>(size) + le<uint16_t>(uint16_t(name.size())) + le<uint16_t>(0) +
               le<uint16_t>(0) + le<uint16_t>(0) + le<uint16_t>(0) + le<uint32_t>(0) +
               le<uint32_t>(uint32_t(offset)) + name;
  };
  central_entry("a/data.pkl", crc32(pkl), uint32_t(pkl.size()), 0);
  for (size_t k = 0; k < count; ++k) {
    const size_t data_at = first + offsets[k] + 30 + names[k].size();
    central_entry(names[k], crc32(std::string_view(out.data() + data_at, span)), uint32_t(span),
                  first + offsets[k]);
  }
  const uint64_t cd = out.size();
  out += central;
  out += le<uint32_t>(0x06054b50) + le<uint16_t>(0) + le<uint16_t>(0) +
         le<uint16_t>(uint16_t(count + 1)) + le<uint16_t>(uint16_t(count + 1)) +
         le<uint32_t>(uint32_t(central.size())) + le<uint32_t>(uint32_t(cd)) + le<uint16_t>(0);
  return out;
}

TEST(CopyAmplification, ZipEntriesMayNotShareBytes) {
  // 100 records of 1 MiB over one 1 MiB range: 100 MiB of tensors from a 1 MiB file (the
  // audit's file made 5.5 GB from 8.6 MB the same way).
  const std::string bytes = overlapping_zip(100, 1 << 20);
  ASSERT_LT(bytes.size(), (1u << 20) + 100000u);
  expect_refused(read_weights(bytes), "overlap");
}

// ---------------------------------------------------------------------------------------------
// Attacker-controlled text in messages

TEST(Text, HugeSizeListIsCutInTheMessage) {
  // A tensor whose size tuple has 2 million entries (one memo'd int): the message used to list
  // them all (6 MB).
  Pickle p;
  p.op('}').mark().str("w");
  p.global("torch._utils", "_rebuild_tensor_v2").mark();
  p.mark().str("storage").global("torch", "FloatStorage").str("0").str("cpu").integer(1).op('t').op('Q');
  p.integer(0).integer(1).raw(put(0)).op('0');
  p.mark().raw(repeat(get(0), 2000000)).op('t');
  p.ints({1}).op('\x89').global("collections", "OrderedDict").op(')').op('R').op('t').op('R');
  p.op('u');
  const auto r = read_weights(torch_zip(p.done(), {{"0", float_bytes({1})}}));
  expect_refused(r, "2000000 sizes but 1 strides");
  EXPECT_NE(r.message.find("(1999992 more)"), std::string::npos) << r.message;
}

TEST(Text, LongJsonTokenIsCutInTheMessage) {
  // A safetensors header holding an unterminated 1 MiB string: the JSON parser's message quoted
  // the whole token.
  const std::string header = "{\"" + std::string(1 << 20, 'a');
  expect_refused(read_weights(safetensors(header, "")), "not valid JSON");
}

// .npy inputs (rmt-infer's) with a 1 MiB header (format version 2): a megabyte-long dtype string
// crashed the reader (std::regex recursed once per character and overflowed the stack), and a
// shape of 300,000 dimensions went through to a message listing them all.
TEST(Text, HostileNpyHeadersAreRefusedWithShortMessages) {
  auto npy = [](const std::string& dict) {
    std::string header = dict;
    while ((12 + header.size() + 1) % 64 != 0) header += ' ';
    header += '\n';
    const std::string path = testing::TempDir() + "hostile.npy";
    std::FILE* f = std::fopen(path.c_str(), "wb");
    const std::string bytes = std::string("\x93NUMPY\x02\x00", 8) +
                              le<uint32_t>(static_cast<uint32_t>(header.size())) + header +
                              std::string(8, '\0');
    std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
    return run_bounded([path] { rmt::read_npy(path); }, kDeadline);
  };
  expect_refused(npy("{'descr': '" + std::string(1000000, 'a') + "', 'fortran_order': False, "
                     "'shape': (2,), }"),
                 "unsupported .npy dtype");
  std::string dims;
  for (int i = 0; i < 300000; ++i) dims += "1, ";
  expect_refused(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }"),
                 "more than 64 dimensions");
  expect_refused(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (" +
                     std::string(500000, '(') + "), }"),
                 "bad dimension");
}

TEST(Text, KeyNamesAreEscapedAndCut) {
  // Key names with terminal control bytes (a forged "all weights loaded" line, a cursor move) and
  // a 1 MiB name, in every message that names keys.
  const std::string forged = "x\r\x1b[2Kall weights loaded\n";
  const std::string huge(1 << 20, 'n');
  Pickle p;
  p.op('}').mark();
  p.str(forged).integer(1).str(huge).integer(2).str("epoch").integer(3);
  p.op('u');
  const std::string bytes = torch_zip(p.done(), {});
  expect_refused(read_weights(bytes), "no weights found");
  const auto missing = run_bounded([&] {
    rmt::WeightsSelection s;
    s.weights_key = forged + huge;
    rmt::read_state_dict_from_memory(bytes.data(), bytes.size(), "x.pth", s);
  }, kDeadline);
  expect_refused(missing, "no entry 'x\\r\\x1b[2Kall weights loaded\\n");
  // load_state_dict's report of unexpected keys: 100000 of them, one per line once.
  rmt::StateDict many;
  const at::Tensor t = at::zeros({1});
  for (int i = 0; i < 100000; ++i) many.insert(forged + std::to_string(i), t);
  many.insert(huge, t);
  const auto load = run_bounded([&] {
    torch::nn::Linear linear(2, 3);
    rmt::load_state_dict(*linear, many, /*strict=*/true);
  }, kDeadline);
  expect_refused(load, "unexpected (100001)", 0, /*multiline=*/true);
  EXPECT_EQ(load.message.find("\nall weights loaded"), std::string::npos) << load.message;
  EXPECT_NE(load.message.find("x\\r\\x1b[2Kall weights loaded\\n0"), std::string::npos) << load.message;
  // The helper itself: control bytes, invalid UTF-8, direction overrides; a count of what is cut.
  EXPECT_EQ(rmt::escape_and_cut("a\x1b[0m\xff\xe2\x80\xae" "b\xc3\xa9"), "a\\x1b[0m\\xff\\u202eb\xc3\xa9");
  EXPECT_EQ(rmt::escape_and_cut(std::string(300, 'z'), 10), "zzzzzzzzzz... (290 more bytes)");
  const std::string cut = rmt::cut_message(std::string(5000, 'm'));
  EXPECT_LE(cut.size(), rmt::kMaxMessageBytes);
  EXPECT_NE(cut.find("(message cut: "), std::string::npos) << cut;
}

// ---------------------------------------------------------------------------------------------
// Validation on every path

TEST(Validation, BoolFromAnUntypedStorageIsChecked) {
  // _rebuild_tensor_v3 gives the dtype (bool) over an UntypedStorage: the bool bytes were only
  // checked when the storage itself said bool.
  Pickle p;
  p.op('}').mark().str("b");
  p.global("torch._utils", "_rebuild_tensor_v3").mark();
  p.mark().str("storage").global("torch", "UntypedStorage").str("0").str("cpu").integer(3);
  p.op('t').op('Q');
  p.integer(0).ints({3}).ints({1}).op('\x89');
  p.global("collections", "OrderedDict").op(')').op('R').global("torch", "bool").op('t').op('R');
  p.op('u');
  expect_refused(read_weights(torch_zip(p.done(), {{"0", std::string("\x01\x02\x00", 3)}})),
                 "neither 0 nor 1");
  if (HasFatalFailure()) return;
  // The same with valid bytes reads.
  const std::string ok = torch_zip(p.done(), {{"0", std::string("\x01\x00\x01", 3)}});
  const auto sd = rmt::read_state_dict_from_memory(ok.data(), ok.size(), "x.pth");
  EXPECT_TRUE(at::equal(sd["b"], at::tensor({1, 0, 1}, at::kByte).to(at::kBool)));
}

TEST(Validation, NestingIsBoundedHoweverTheListsAreFilled) {
  // 20000 lists, each appended to the previous one after that one was put in its own parent:
  // the depth seen at each insertion stays 1, the real nesting is 20000.
  std::string p = "\x80\x02]" + put(0);
  for (uint32_t i = 1; i <= 20000; ++i) p += get(i - 1) + "]" + put(i) + "a0";
  p += get(0) + ".";
  expect_refused(parse_pickle(p), "nested deeper than 10000");
  if (HasFatalFailure()) return;
  // A cycle is one level: a list inside itself reads.
  const std::string cycle("\x80\x02]q\x00h\x00" "a.", 9);
  const auto tree = rmt::pickle::read_pickle(cycle.data(), cycle.size());
  EXPECT_EQ(tree->root()->depth, 1u);
}

// ---------------------------------------------------------------------------------------------
// Arithmetic

TEST(Arithmetic, TotalsAndStridesDoNotOverflow) {
  // Sixteen names for one stride-0 tensor of 2^60 elements (4 bytes of data): 2^64 elements in
  // all. Summed in int64 this printed -9.2e18 (undefined behaviour).
  Pickle p;
  p.op('}').mark();
  p.str("t0").tensor("FloatStorage", "0", 1, 0, {int64_t(1) << 60}, {0}).raw(put(0));
  for (int i = 1; i < 16; ++i) p.str("t" + std::to_string(i)).raw(get(0));
  p.op('u');
  const std::string bytes = torch_zip(p.done(), {{"0", float_bytes({1})}});
  const auto c = rmt::read_checkpoint_from_memory(bytes.data(), bytes.size(), "x.pth");
  EXPECT_NE(rmt::describe_checkpoint(c).find("state_dict, 1 tensors, 1152921504606846976 elements"),
            std::string::npos)
      << rmt::describe_checkpoint(c);
  rmt::CountSum sum;
  for (int i = 0; i < 16; ++i) sum.add(int64_t(1) << 60);
  EXPECT_TRUE(sum.saturated());
  EXPECT_EQ(sum.value(), INT64_MAX);
  // safetensors: a zero-sized tensor whose other dimensions' product overflows the strides.
  const std::string st = safetensors(
      R"({"z":{"dtype":"F32","shape":[0,1099511627776,1099511627776],"data_offsets":[0,0]}})", "");
  expect_refused(read_weights(st), "strides of its shape");
}

// ---------------------------------------------------------------------------------------------
// safetensors, as strict as the reference implementation

TEST(Safetensors, ReferenceRules) {
  const std::string eight = float_bytes({1, 2});
  const std::string a = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string b = R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]})";
  // Valid: two tensors tiling the data.
  const std::string good = safetensors("{" + a + "," + b + "}", eight + eight);
  EXPECT_EQ(rmt::read_state_dict_from_memory(good.data(), good.size(), "x").size(), 2u);
  // The same name twice (JSON parsers keep one of them silently).
  expect_refused(read_weights(safetensors("{" + a + "," + a + "}", eight)), "appears twice");
  // Bytes that belong to no tensor: a gap, a first tensor not at 0, bytes after the last one.
  expect_refused(read_weights(safetensors(
                     "{" + a + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
                     eight + eight + "pad!")),
                 "data bytes 8 to 12 belong to no tensor");
  expect_refused(read_weights(safetensors(R"({"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                                          eight + eight)),
                 "data bytes 0 to 8 belong to no tensor");
  expect_refused(read_weights(safetensors("{" + a + "}", eight + "trailing")),
                 "8 bytes after the last tensor");
  // Overlap.
  expect_refused(read_weights(safetensors(
                     "{" + a + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                     eight + eight.substr(4))),
                 "overlapping");
  // Duplicate fields and metadata keys.
  expect_refused(read_weights(safetensors(
                     R"({"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})", eight)),
                 "two 'dtype' fields");
  expect_refused(read_weights(safetensors(R"({"__metadata__":{"k":"1","k":"2"},)" + a + "}", eight)),
                 "has the key 'k' twice");
  // The header limit is 100,000,000 bytes, as the reference's (checked before reading it).
  expect_refused(read_weights(le<uint64_t>(100000001) + std::string(100000001, ' ')),
                 "exceeds the limit of 100000000 bytes");
}

// ---------------------------------------------------------------------------------------------
// Memory and time on large files

TEST(Bounds, LargeFilesAreReadOrRefusedInTime) {
  // 100 MB pickle of 50 million pushes and pops: no memory, linear work: it reads.
  std::string churn = "\x80\x02N";
  churn += repeat("N0", 50000000);
  churn += ".";
  expect_read(parse_pickle(churn));
  // 50 MB of small ints kept on a list: each becomes a value; the memory limit refuses them.
  std::string ints = "\x80\x02]";
  ints += repeat("K\x01" "a", 16000000);
  ints += ".";
  expect_refused(parse_pickle(ints), "bytes of memory");
  // A 90 MB safetensors header of tiny tensors: refused at the memory limit, not parsed into GBs.
  std::string header = "{";
  for (int i = 0; header.size() < 90000000; ++i) {
    header += "\"" + std::to_string(i) + R"(":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},)";
  }
  header.back() = '}';
  expect_refused(read_weights(safetensors(header, "")), "bytes of tensor records");
  // Many tensors over one storage, each its own value (20 bytes of pickle each): what loading
  // makes for each (an at::Tensor view) is charged when the tensor is read, so 50000 of them read
  // within the bound and 300000 are refused before they are made.
  const auto tensors = [](int n) {
    Pickle p;
    p.raw("ctorch._utils\n_rebuild_tensor_v2\n").raw(put(0)).op('0');
    p.mark().str("storage").global("torch", "FloatStorage").str("0").str("cpu").integer(1);
    p.op('t').op('Q').raw(put(1)).op('0');
    p.ints({1}).raw(put(2)).op('0').global("collections", "OrderedDict").op(')').op('R');
    p.raw(put(3)).op('0');
    p.op('}').mark();
    for (int i = 0; i < n; ++i) {
      p.str(std::to_string(i)).raw(get(0)).mark().raw(get(1)).integer(0).raw(get(2) + get(2));
      p.op('\x89').raw(get(3)).op('t').op('R');
    }
    p.op('u');
    return torch_zip(p.done(), {{"0", float_bytes({1})}});
  };
  expect_read(read_weights(tensors(50000)));
  expect_refused(read_weights(tensors(300000)), "bytes of memory");
  // A central directory of 300000 entries (zip64: a plain end record counts up to 65535):
  // refused by count before anything is read.
  std::string z64(300000 * 46, '\0');
  const uint64_t record = z64.size();
  z64 += le<uint32_t>(0x06064b50) + le<uint64_t>(44) + le<uint16_t>(45) + le<uint16_t>(45) +
         le<uint32_t>(0) + le<uint32_t>(0) + le<uint64_t>(300000) + le<uint64_t>(300000) +
         le<uint64_t>(300000 * 46) + le<uint64_t>(0);
  z64 += le<uint32_t>(0x07064b50) + le<uint32_t>(0) + le<uint64_t>(record) + le<uint32_t>(1);
  z64 += le<uint32_t>(0x06054b50) + le<uint16_t>(0) + le<uint16_t>(0) + le<uint16_t>(0xFFFF) +
         le<uint16_t>(0xFFFF) + le<uint32_t>(0xFFFFFFFF) + le<uint32_t>(0xFFFFFFFF) + le<uint16_t>(0);
  expect_refused(read_weights("PK\x03\x04" + z64.substr(4)), "more than the 262144");
}

}  // namespace

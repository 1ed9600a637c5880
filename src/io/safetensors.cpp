// safetensors: an 8-byte little-endian header length, a JSON header
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
// then the tensors' bytes, offsets relative to the end of the header.
//
// The rules are the reference implementation's (huggingface/safetensors, tensor.rs): a header of
// at most 100,000,000 bytes of UTF-8 JSON, the tensors' byte ranges covering the data exactly
// (sorted by offset, each starting where the previous one ends, the first at 0, the last at the
// end of the file: no gap, no overlap, nothing after), each range exactly shape times dtype size.
// Stricter here: a key (tensor name, metadata key, field of a tensor) given twice is refused.
// The header is read by a SAX parser into compact records (no JSON tree), and what they take is
// charged against pickle::Limits::max_memory, so a header of tiny entries cannot inflate.

#include <algorithm>
#include <fstream>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/bytes.h"
#include "io/checkpoint_reader.h"

namespace rmt::io {

using pickle::Kind;
using pickle::Value;
using Json = nlohmann::ordered_json;  // keeps the order when writing

namespace {

constexpr uint64_t kMaxHeader = 100000000;  // the reference implementation's MAX_HEADER_SIZE
constexpr size_t kMaxJsonDepth = 64;
constexpr size_t kMaxDims = 64;

struct DtypeName {
  const char* name;
  at::ScalarType dtype;
};
constexpr DtypeName kDtypes[] = {
    {"F16", at::kHalf}, {"BF16", at::kBFloat16}, {"F32", at::kFloat}, {"F64", at::kDouble},
    {"I64", at::kLong}, {"I32", at::kInt},       {"I16", at::kShort}, {"I8", at::kChar},
    {"U8", at::kByte},  {"BOOL", at::kBool}};

// One tensor of the header, as read.
struct TensorEntry {
  std::string name;
  std::string dtype;
  std::vector<uint64_t> shape;
  uint64_t offsets[2] = {0, 0};
  size_t offset_count = 0;
  unsigned fields = 0;  // kDtype | kShape | kOffsets seen
};
constexpr unsigned kDtype = 1, kShape = 2, kOffsets = 4;

// What a tensor entry costs in memory, besides its name, until the tensors are built: the record,
// two Values, a TensorInfo and an empty at::Tensor.
constexpr size_t kTensorBytes = 1024;

std::string tensor_what(const std::string& name) {
  return fmt::format("safetensors: tensor '{}'", escape_and_cut(name));
}

// The header's JSON, event by event (nlohmann's SAX parser does not recurse).
class HeaderReader : public nlohmann::json_sax<Json> {
 public:
  explicit HeaderReader(size_t max_memory) : max_memory_(max_memory) {}

  std::vector<TensorEntry> tensors;
  std::map<std::string, std::string> metadata;

  bool null() override { return scalar("null"); }
  bool boolean(bool) override { return scalar("a boolean"); }
  bool number_integer(number_integer_t v) override {
    if (v >= 0) return number(static_cast<uint64_t>(v));
    if (state_ == State::Shape || state_ == State::Offsets) {
      fail(fmt::format("{} is negative", what()));
    }
    return scalar("a number");
  }
  bool number_unsigned(number_unsigned_t v) override { return number(v); }
  bool number_float(number_float_t, const string_t&) override {
    if (state_ == State::Shape || state_ == State::Offsets) {
      fail(fmt::format("{} is not a non-negative integer", what()));
    }
    return scalar("a number");
  }
  bool string(string_t& s) override {
    if (state_ == State::Metadata) {
      charge(key_.size() + s.size() + 96);
      if (!metadata.try_emplace(std::move(key_), std::move(s)).second) {
        fail(fmt::format("safetensors: __metadata__ has the key '{}' twice", escape_and_cut(key_)));
      }
      return true;
    }
    if (state_ == State::Tensor && field_ == kDtype) {
      tensors.back().dtype = std::move(s);
      return true;
    }
    return scalar("a string");
  }
  bool binary(binary_t&) override { return scalar("binary data"); }

  bool start_object(std::size_t) override {
    switch (state_) {
      case State::Start: state_ = State::Top; return true;
      case State::TopValue:
        if (key_ == "__metadata__") {
          if (seen_metadata_) fail("safetensors: the header has two __metadata__ entries");
          seen_metadata_ = true;
          state_ = State::Metadata;
        } else {
          charge(key_.size() + kTensorBytes);
          tensors.emplace_back();
          tensors.back().name = std::move(key_);
          state_ = State::Tensor;
        }
        return true;
      case State::Tensor:
        if (field_ == 0) return skip();
        return scalar("an object");
      case State::Skip: return skip();
      default: return scalar("an object");
    }
  }
  bool start_array(std::size_t) override {
    switch (state_) {
      case State::Start: fail("safetensors: the header is not a JSON object (it is an array)");
      case State::Tensor:
        if (field_ == kShape) {
          state_ = State::Shape;
          return true;
        }
        if (field_ == kOffsets) {
          state_ = State::Offsets;
          return true;
        }
        if (field_ == 0) return skip();
        return scalar("an array");
      case State::Skip: return skip();
      default: return scalar("an array");
    }
  }
  bool key(string_t& k) override {
    switch (state_) {
      case State::Top:
        key_ = std::move(k);
        state_ = State::TopValue;
        return true;
      case State::Metadata:
        key_ = std::move(k);
        return true;
      case State::Tensor: {
        field_ = k == "dtype" ? kDtype : k == "shape" ? kShape : k == "data_offsets" ? kOffsets : 0;
        if (field_ & tensors.back().fields) {
          fail(fmt::format("{} has two '{}' fields", tensor_what(tensors.back().name),
                           escape_and_cut(k, 20)));
        }
        tensors.back().fields |= field_;
        return true;
      }
      default: return true;  // inside a skipped value
    }
  }
  bool end_object() override {
    switch (state_) {
      case State::Top: state_ = State::End; return true;
      case State::Metadata:
      case State::Tensor: state_ = State::Top; return true;
      case State::Skip: return unskip();
      default: return true;
    }
  }
  bool end_array() override {
    switch (state_) {
      case State::Shape: state_ = State::Tensor; return true;
      case State::Offsets:
        if (tensors.back().offset_count != 2) {
          fail(fmt::format("{}: data_offsets is not [begin, end]",
                           tensor_what(tensors.back().name)));
        }
        state_ = State::Tensor;
        return true;
      case State::Skip: return unskip();
      default: return true;
    }
  }
  bool parse_error(std::size_t position, const std::string& last_token,
                   const nlohmann::detail::exception& e) override {
    // nlohmann's message ends with the token it read last, which can be megabytes long.
    std::string reason = e.what();
    const size_t token = reason.find("; last read:");
    if (token != std::string::npos) reason.resize(token);
    fail(fmt::format("safetensors: the header is not valid JSON ({}, near byte {} of the header: "
                     "'{}')",
                     escape_and_cut(reason, 200), position, escape_and_cut(last_token, 40)));
  }

 private:
  enum class State { Start, Top, TopValue, Metadata, Tensor, Shape, Offsets, Skip, End };

  std::string what() const {
    return fmt::format("{}: {}", tensor_what(tensors.back().name),
                       state_ == State::Shape ? "a shape entry" : "data_offsets");
  }
  void charge(size_t bytes) {
    memory_ += bytes;
    if (memory_ > max_memory_) {
      fail(fmt::format("safetensors: the header describes more than {} bytes of tensor records and "
                       "metadata",
                       max_memory_));
    }
  }
  bool number(uint64_t v) {
    if (state_ == State::Shape) {
      auto& shape = tensors.back().shape;
      if (shape.size() == kMaxDims) {
        fail(fmt::format("{}: more than 64 dimensions", tensor_what(tensors.back().name)));
      }
      shape.push_back(v);
      return true;
    }
    if (state_ == State::Offsets) {
      auto& t = tensors.back();
      if (t.offset_count == 2) {
        fail(fmt::format("{}: data_offsets is not [begin, end]", tensor_what(t.name)));
      }
      t.offsets[t.offset_count++] = v;
      return true;
    }
    return scalar("a number");
  }
  // A value where it does not belong (or an ignored field's scalar value).
  bool scalar(const char* kind) {
    switch (state_) {
      case State::Start:
        fail(fmt::format("safetensors: the header is not a JSON object (it is {})", kind));
      case State::TopValue:
        if (key_ == "__metadata__") fail("safetensors: __metadata__ is not an object");
        fail(fmt::format("{}: expected an object with dtype, shape and data_offsets",
                         tensor_what(key_)));
      case State::Metadata:
        fail(fmt::format("safetensors: __metadata__ entry '{}' is not a string",
                         escape_and_cut(key_)));
      case State::Tensor: {
        const char* problem = field_ == kDtype     ? "dtype is not a string"
                              : field_ == kShape   ? "shape is not an array"
                              : field_ == kOffsets ? "data_offsets is not [begin, end]"
                                                   : nullptr;
        if (problem) fail(fmt::format("{}: {}", tensor_what(tensors.back().name), problem));
        return true;  // an unknown field's value: ignored, as the reference does
      }
      case State::Shape:
      case State::Offsets: fail(fmt::format("{} is not a non-negative integer", what()));
      default: return true;
    }
  }
  bool skip() {
    if (state_ != State::Skip) {
      state_ = State::Skip;
      skip_depth_ = 0;
    }
    if (++skip_depth_ > kMaxJsonDepth) {
      fail(fmt::format("safetensors: the header nests deeper than {} levels", kMaxJsonDepth));
    }
    return true;
  }
  bool unskip() {
    if (--skip_depth_ == 0) state_ = State::Tensor;
    return true;
  }

  State state_ = State::Start;
  std::string key_;
  unsigned field_ = 0;
  size_t skip_depth_ = 0;
  bool seen_metadata_ = false;
  size_t max_memory_;
  size_t memory_ = 0;
};

class SafetensorsReader : public CheckpointReader {
 public:
  SafetensorsReader(const uint8_t* data, size_t size, const pickle::Limits& limits) {
    if (size < 8) fail("safetensors: the file is shorter than its 8-byte header length");
    const uint64_t header_size = load_le<uint64_t>(data);
    if (header_size > kMaxHeader || header_size > size - 8) {
      if (header_size > size - 8) {
        fail(fmt::format("safetensors: the header length {} exceeds the file size {}", header_size,
                         size));
      }
      fail(fmt::format("safetensors: the header length {} exceeds the limit of 100000000 bytes",
                       header_size));
    }
    const char* header = reinterpret_cast<const char*>(data + 8);
    HeaderReader reader(limits.max_memory);
    Json::sax_parse(header, header + header_size, &reader);
    std::vector<TensorEntry>& entries = reader.tensors;
    contents.metadata = std::move(reader.metadata);

    const uint8_t* bytes = data + 8 + header_size;
    const uint64_t data_size = size - 8 - header_size;
    struct Checked {
      at::ScalarType dtype;
      std::vector<int64_t> shape, strides;
    };
    std::vector<Checked> checked;
    checked.reserve(entries.size());
    for (const TensorEntry& e : entries) {
      const std::string what = tensor_what(e.name);
      if (e.fields != (kDtype | kShape | kOffsets)) {
        fail(fmt::format("{}: expected an object with dtype, shape and data_offsets", what));
      }
      const DtypeName* dt = nullptr;
      for (const auto& d : kDtypes) {
        if (e.dtype == d.name) dt = &d;
      }
      if (!dt) {
        fail(fmt::format("{}: unsupported dtype '{}' (supported: F16, BF16, F32, F64, I64, I32, "
                         "I16, I8, U8, BOOL)",
                         what, escape_and_cut(e.dtype, 20)));
      }
      Checked c{dt->dtype, {}, {}};
      uint64_t numel = 1;
      for (const uint64_t n : e.shape) {
        if (n > static_cast<uint64_t>(INT64_MAX) || !mul_ok<uint64_t>(numel, n, &numel)) {
          fail(fmt::format("{}: the element count of its shape overflows", what));
        }
        c.shape.push_back(static_cast<int64_t>(n));
      }
      const uint64_t begin = e.offsets[0], end = e.offsets[1];
      if (begin > end || end > data_size) {
        fail(fmt::format("{}: data_offsets [{}, {}] are out of range of the {} data bytes", what,
                         begin, end, data_size));
      }
      uint64_t nbytes = 0;
      if (!mul_ok<uint64_t>(numel, element_size(dt->dtype), &nbytes) ||
          nbytes > static_cast<uint64_t>(INT64_MAX)) {
        fail(fmt::format("{}: the element count of its shape overflows", what));
      }
      if (nbytes != end - begin) {
        fail(fmt::format("{}: shape {} of {} needs {} bytes, but data_offsets give {}", what,
                         join_ints(c.shape), dt->name, nbytes, end - begin));
      }
      // Row-major strides; with a zero-sized dimension the others can be anything, so check.
      c.strides.assign(c.shape.size(), 1);
      for (size_t i = c.shape.size(); i-- > 1;) {
        if (!mul_ok<int64_t>(c.strides[i], std::max<int64_t>(c.shape[i], 1), &c.strides[i - 1])) {
          fail(fmt::format("{}: the strides of its shape {} overflow", what, join_ints(c.shape)));
        }
      }
      checked.push_back(std::move(c));
    }
    check_names(entries);
    check_coverage(entries, data_size);

    auto tree = std::make_shared<pickle::Tree>();
    Value* root = tree->add(Kind::Dict);
    for (size_t i = 0; i < entries.size(); ++i) {
      TensorEntry& e = entries[i];
      Checked& c = checked[i];
      const uint64_t begin = e.offsets[0], end = e.offsets[1];
      if (c.dtype == at::kBool) {
        for (uint64_t k = begin; k < end; ++k) {
          if (bytes[k] > 1) {
            fail(fmt::format("{}: a bool byte is neither 0 nor 1", tensor_what(e.name)));
          }
        }
      }
      auto info = std::make_shared<pickle::TensorInfo>();
      info->dtype = c.dtype;
      info->data = at::empty(c.shape, at::TensorOptions().dtype(c.dtype));
      if (end > begin) std::memcpy(info->data.data_ptr(), bytes + begin, end - begin);
      info->sizes = std::move(c.shape);
      info->strides = std::move(c.strides);
      Value* key = tree->add(Kind::Str);
      key->text = std::move(e.name);
      Value* tensor = tree->add(Kind::Tensor);
      tensor->tensor = std::move(info);
      root->entries.emplace_back(key, tensor);
      root->depth = 1;
      tensors.push_back(tensor);
    }
    contents.format = "safetensors";
    contents.tree = tree;
    contents.root = root;
    tree->set_root(root);
  }

  void load(const std::vector<const Value*>&) override {}  // read eagerly

 private:
  // No name twice (sorted, so no hash a file could make collide).
  static void check_names(const std::vector<TensorEntry>& entries) {
    std::vector<const TensorEntry*> by_name;
    by_name.reserve(entries.size());
    for (const auto& e : entries) by_name.push_back(&e);
    std::sort(by_name.begin(), by_name.end(),
              [](const TensorEntry* a, const TensorEntry* b) { return a->name < b->name; });
    for (size_t i = 1; i < by_name.size(); ++i) {
      if (by_name[i]->name == by_name[i - 1]->name) {
        fail(fmt::format("{} appears twice in the header", tensor_what(by_name[i]->name)));
      }
    }
  }

  // The tensors' ranges, sorted, must tile [0, data_size): the reference implementation's rule.
  static void check_coverage(const std::vector<TensorEntry>& entries, uint64_t data_size) {
    std::vector<const TensorEntry*> by_offset;
    by_offset.reserve(entries.size());
    for (const auto& e : entries) by_offset.push_back(&e);
    std::sort(by_offset.begin(), by_offset.end(), [](const TensorEntry* a, const TensorEntry* b) {
      return std::make_pair(a->offsets[0], a->offsets[1]) <
             std::make_pair(b->offsets[0], b->offsets[1]);
    });
    uint64_t covered = 0;
    const TensorEntry* previous = nullptr;
    for (const TensorEntry* e : by_offset) {
      const uint64_t begin = e->offsets[0];
      if (begin < covered) {
        fail(fmt::format("safetensors: tensors '{}' and '{}' have overlapping data_offsets",
                         escape_and_cut(previous->name), escape_and_cut(e->name)));
      }
      if (begin > covered) {
        fail(fmt::format("safetensors: data bytes {} to {} belong to no tensor (a gap before "
                         "tensor '{}'); the tensors must cover the data without gaps",
                         covered, begin, escape_and_cut(e->name)));
      }
      covered = e->offsets[1];
      previous = e;
    }
    if (covered != data_size) {
      fail(fmt::format("safetensors: {} bytes after the last tensor's data belong to no tensor "
                       "(the file must end where the tensors end)",
                       data_size - covered));
    }
  }
};

}  // namespace

std::unique_ptr<CheckpointReader> open_safetensors(const uint8_t* data, size_t size,
                                                   const pickle::Limits& limits) {
  return std::make_unique<SafetensorsReader>(data, size, limits);
}

}  // namespace rmt::io

namespace rmt {

namespace {

void write_safetensors(const std::string& path, const StateDict& tensors,
                       const std::map<std::string, std::string>& metadata) {
  io::Json header = io::Json::object();
  if (!metadata.empty()) {
    io::Json meta = io::Json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = meta;
  }
  uint64_t offset = 0;
  for (const auto& item : tensors) {
    const std::string& name = item.key();
    const at::Tensor& t = item.value();
    if (name == "__metadata__") {
      io::fail(fmt::format("{}: a tensor cannot be named __metadata__", path));
    }
    const char* dtype = nullptr;
    for (const auto& d : io::kDtypes) {
      if (t.scalar_type() == d.dtype) dtype = d.name;
    }
    if (!dtype) {
      io::fail(fmt::format("{}: tensor '{}' has dtype {}, which safetensors cannot hold here", path,
                           escape_and_cut(name), c10::toString(t.scalar_type())));
    }
    uint64_t nbytes = 0, end = 0;
    if (!io::mul_ok<uint64_t>(static_cast<uint64_t>(t.numel()), t.element_size(), &nbytes) ||
        !io::add_ok(offset, nbytes, &end)) {
      io::fail(fmt::format("{}: the tensors' sizes overflow", path));
    }
    header[name] = {{"dtype", dtype}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data 8-byte aligned
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) io::fail(fmt::format("{}: cannot open for writing", path));
  const uint64_t length = text.size();
  out.write(reinterpret_cast<const char*>(&length), sizeof(length));
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  // One tensor at a time: a contiguous CPU copy lives only while it is written.
  for (const auto& item : tensors) {
    const at::Tensor t = item.value().detach().to(at::kCPU).contiguous();
    out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  }
  out.close();
  if (!out) io::fail(fmt::format("{}: writing failed", path));
}

}  // namespace

void save_safetensors(const std::string& path, const StateDict& tensors,
                      const std::map<std::string, std::string>& metadata) {
  try {
    write_safetensors(path, tensors, metadata);
  } catch (const nlohmann::json::exception& e) {  // e.g. a name that is not UTF-8
    io::fail(fmt::format("{}: {}", path, escape_and_cut(e.what(), 300)));
  }
}

}  // namespace rmt

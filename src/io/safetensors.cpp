// safetensors: an 8-byte little-endian header length, a JSON header
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
// then the tensors' bytes, offsets relative to the end of the header.

#include <algorithm>
#include <fstream>

#include <nlohmann/json.hpp>

#include "io/bytes.h"
#include "io/checkpoint_reader.h"

namespace rmt::io {

using pickle::Kind;
using pickle::Value;
using Json = nlohmann::ordered_json;  // keeps the file's tensor order

namespace {

constexpr uint64_t kMaxHeader = uint64_t(100) << 20;  // the reference implementation's limit
constexpr int kMaxJsonDepth = 64;

struct DtypeName {
  const char* name;
  at::ScalarType dtype;
};
constexpr DtypeName kDtypes[] = {
    {"F16", at::kHalf}, {"BF16", at::kBFloat16}, {"F32", at::kFloat}, {"F64", at::kDouble},
    {"I64", at::kLong}, {"I32", at::kInt},       {"I16", at::kShort}, {"I8", at::kChar},
    {"U8", at::kByte},  {"BOOL", at::kBool}};

// nlohmann's parser recurses per nesting level: refuse deep headers before parsing them.
bool shallow_json(const char* p, size_t n, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < n; ++i) {
    const char c = p[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

uint64_t json_uint(const Json& j, const std::string& what) {
  if (j.is_number_unsigned()) return j.get<uint64_t>();
  if (j.is_number_integer()) {
    if (j.get<int64_t>() < 0) fail(what + " is negative");
    return static_cast<uint64_t>(j.get<int64_t>());
  }
  fail(what + " is not a non-negative integer");
}

class SafetensorsReader : public CheckpointReader {
 public:
  SafetensorsReader(const uint8_t* data, size_t size) {
    if (size < 8) fail("safetensors: the file is shorter than its 8-byte header length");
    const uint64_t header_size = load_le<uint64_t>(data);
    if (header_size > kMaxHeader || header_size > size - 8) {
      fail("safetensors: the header length " + std::to_string(header_size) +
           (header_size > size - 8 ? " exceeds the file size " + std::to_string(size)
                                   : " exceeds the limit of 100 MiB"));
    }
    const char* header = reinterpret_cast<const char*>(data + 8);
    if (!shallow_json(header, header_size, kMaxJsonDepth)) {
      fail("safetensors: the header nests deeper than " + std::to_string(kMaxJsonDepth) +
           " levels");
    }
    Json json;
    try {
      json = Json::parse(header, header + header_size);
    } catch (const std::exception& e) {
      fail(std::string("safetensors: the header is not valid JSON: ") + e.what());
    }
    if (!json.is_object()) fail("safetensors: the header is not a JSON object");

    const uint8_t* bytes = data + 8 + header_size;
    const uint64_t data_size = size - 8 - header_size;
    auto tree = std::make_shared<pickle::Tree>();
    Value* root = tree->add(Kind::Dict);
    struct Range {
      uint64_t begin, end;
      const std::string* name;
    };
    std::vector<Range> ranges;
    for (const auto& [name, entry] : json.items()) {
      if (name == "__metadata__") {
        if (!entry.is_object()) fail("safetensors: __metadata__ is not an object");
        for (const auto& [k, v] : entry.items()) {
          if (!v.is_string()) {
            fail("safetensors: __metadata__ entry '" + printable(k) + "' is not a string");
          }
          contents.metadata[k] = v.get<std::string>();
        }
        continue;
      }
      const std::string what = "safetensors: tensor '" + printable(name) + "'";
      if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
          !entry.contains("data_offsets")) {
        fail(what + ": expected an object with dtype, shape and data_offsets");
      }
      const Json& jd = entry["dtype"];
      if (!jd.is_string()) fail(what + ": dtype is not a string");
      const std::string dtype_text = jd.get<std::string>();
      const DtypeName* dt = nullptr;
      for (const auto& d : kDtypes) {
        if (dtype_text == d.name) dt = &d;
      }
      if (!dt) {
        fail(what + ": unsupported dtype '" + printable(dtype_text, 20) +
             "' (supported: F16, BF16, F32, F64, I64, I32, I16, I8, U8, BOOL)");
      }
      const Json& js = entry["shape"];
      if (!js.is_array()) fail(what + ": shape is not an array");
      if (js.size() > 64) fail(what + ": more than 64 dimensions");
      std::vector<int64_t> shape;
      uint64_t numel = 1;
      for (const Json& d : js) {
        const uint64_t n = json_uint(d, what + ": a shape entry");
        if (n > static_cast<uint64_t>(INT64_MAX) || !mul_ok<uint64_t>(numel, n, &numel)) {
          fail(what + ": the element count of its shape overflows");
        }
        shape.push_back(static_cast<int64_t>(n));
      }
      const Json& jo = entry["data_offsets"];
      if (!jo.is_array() || jo.size() != 2) fail(what + ": data_offsets is not [begin, end]");
      const uint64_t begin = json_uint(jo[0], what + ": data_offsets[0]");
      const uint64_t end = json_uint(jo[1], what + ": data_offsets[1]");
      if (begin > end || end > data_size) {
        fail(what + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
             "] are out of range of the " + std::to_string(data_size) + " data bytes");
      }
      uint64_t nbytes = 0;
      if (!mul_ok<uint64_t>(numel, element_size(dt->dtype), &nbytes) ||
          nbytes > static_cast<uint64_t>(INT64_MAX)) {
        fail(what + ": the element count of its shape overflows");
      }
      if (nbytes != end - begin) {
        fail(what + ": shape " + printable(js.dump(), 80) + " of " + dt->name + " needs " +
             std::to_string(nbytes) + " bytes, but data_offsets give " +
             std::to_string(end - begin));
      }
      Value* key = tree->add(Kind::Str);
      key->text = name;
      Value* tensor = tree->add(Kind::Tensor);
      auto info = std::make_shared<pickle::TensorInfo>();
      info->dtype = dt->dtype;
      info->sizes = shape;
      info->strides.assign(shape.size(), 1);
      for (size_t i = shape.size(); i-- > 1;) {
        info->strides[i - 1] = info->strides[i] * std::max<int64_t>(shape[i], 1);
      }
      info->data = at::empty(shape, at::TensorOptions().dtype(dt->dtype));
      if (dt->dtype == at::kBool) {
        for (uint64_t i = begin; i < end; ++i) {
          if (bytes[i] > 1) fail(what + ": a bool byte is neither 0 nor 1");
        }
      }
      if (nbytes) std::memcpy(info->data.data_ptr(), bytes + begin, nbytes);
      tensor->tensor = std::move(info);
      root->entries.emplace_back(key, tensor);
      tensors.push_back(tensor);
      ranges.push_back({begin, end, &name});
    }
    // Tensors must not share bytes.
    std::sort(ranges.begin(), ranges.end(),
              [](const Range& a, const Range& b) { return a.begin < b.begin; });
    uint64_t covered = 0;
    const std::string* previous = nullptr;
    for (const Range& r : ranges) {
      if (r.begin == r.end) continue;
      if (previous && r.begin < covered) {
        fail("safetensors: tensors '" + printable(*previous) + "' and '" + printable(*r.name) +
             "' have overlapping data_offsets");
      }
      covered = r.end;
      previous = r.name;
    }
    contents.format = "safetensors";
    contents.tree = tree;
    contents.root = root;
    tree->set_root(root);
  }

  void load(const std::vector<const Value*>&) override {}  // read eagerly
};

}  // namespace

std::unique_ptr<CheckpointReader> open_safetensors(const uint8_t* data, size_t size) {
  return std::make_unique<SafetensorsReader>(data, size);
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
  std::vector<at::Tensor> data;
  uint64_t offset = 0;
  for (const auto& item : tensors) {
    const std::string& name = item.key();
    if (name == "__metadata__") io::fail(path + ": a tensor cannot be named __metadata__");
    at::Tensor t = item.value().detach().to(at::kCPU).contiguous();
    const char* dtype = nullptr;
    for (const auto& d : io::kDtypes) {
      if (t.scalar_type() == d.dtype) dtype = d.name;
    }
    if (!dtype) {
      io::fail(path + ": tensor '" + name + "' has dtype " +
               std::string(c10::toString(t.scalar_type())) + ", which safetensors cannot hold here");
    }
    const uint64_t nbytes = t.nbytes();
    header[name] = {{"dtype", dtype},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    data.push_back(std::move(t));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data 8-byte aligned
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) io::fail(path + ": cannot open for writing");
  const uint64_t length = text.size();
  out.write(reinterpret_cast<const char*>(&length), sizeof(length));
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const at::Tensor& t : data) {
    out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  }
  out.close();
  if (!out) io::fail(path + ": writing failed");
}

}  // namespace

void save_safetensors(const std::string& path, const StateDict& tensors,
                      const std::map<std::string, std::string>& metadata) {
  try {
    write_safetensors(path, tensors, metadata);
  } catch (const nlohmann::json::exception& e) {  // e.g. a name that is not UTF-8
    io::fail(path + ": " + e.what());
  }
}

}  // namespace rmt

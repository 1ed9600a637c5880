#pragma once
// Byte builders for checkpoint tests: little-endian integers, pickles written opcode by opcode,
// zip archives (zip64 included), torch.save-style archives, safetensors files. Everything is built
// in memory here, so malformed files of any size are made at test time, never committed.
#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rmt::test {

template <typename T>
inline std::string le(T v) {
  std::string s(sizeof(T), '\0');
  std::memcpy(s.data(), &v, sizeof(T));
  return s;
}

inline std::string float_bytes(const std::vector<float>& v) {
  std::string s;
  for (float f : v) s += le(f);
  return s;
}

class Pickle {
 public:
  explicit Pickle(int protocol = 2) {
    b_ += '\x80';
    b_ += static_cast<char>(protocol);
  }
  Pickle& raw(const std::string& s) { b_ += s; return *this; }
  Pickle& op(char c) { b_ += c; return *this; }
  Pickle& mark() { return op('('); }
  Pickle& str(const std::string& s) {
    op('X');
    b_ += le<uint32_t>(static_cast<uint32_t>(s.size())) + s;
    return *this;
  }
  Pickle& integer(int64_t v) {
    if (v >= 0 && v < 256) {
      op('K');
      b_ += static_cast<char>(v);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J');
      b_ += le<int32_t>(static_cast<int32_t>(v));
    } else {
      op('\x8a');
      b_ += '\x08';
      b_ += le<int64_t>(v);
    }
    return *this;
  }
  Pickle& global(const std::string& module, const std::string& name) {
    op('c');
    b_ += module + "\n" + name + "\n";
    return *this;
  }
  Pickle& ints(const std::vector<int64_t>& v) {
    mark();
    for (int64_t x : v) integer(x);
    return op('t');
  }
  // _rebuild_tensor_v2(('storage', torch.<type>, key, 'cpu', numel), offset, size, stride, ...)
  Pickle& tensor(const std::string& storage_type, const std::string& key, int64_t numel,
                 int64_t offset, const std::vector<int64_t>& size,
                 const std::vector<int64_t>& stride) {
    global("torch._utils", "_rebuild_tensor_v2");
    mark();
    mark().str("storage").global("torch", storage_type).str(key).str("cpu").integer(numel);
    op('t').op('Q');
    integer(offset).ints(size).ints(stride).op('\x89');
    global("collections", "OrderedDict").op(')').op('R');
    return op('t').op('R');
  }
  std::string done() { return b_ + "."; }
  const std::string& bytes() const { return b_; }

 private:
  std::string b_;
};

inline uint32_t crc32(std::string_view s) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t n = 0; n < 256; ++n) {
      uint32_t c = n;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
      t[n] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char byte : s) c = table[(c ^ byte) & 0xFFu] ^ (c >> 8);
  return ~c;
}

struct ZipOptions {
  bool zip64 = false;
  std::string compressed_entry;  // this entry claims method 8
};

inline std::string make_zip(const std::vector<std::pair<std::string, std::string>>& entries,
                     const ZipOptions& o = {}) {
  std::string out, central;
  for (const auto& [name, data] : entries) {
    const uint64_t offset = out.size();
    const uint16_t method = name == o.compressed_entry ? 8 : 0;
    const uint32_t crc = crc32(data);
    const uint32_t size32 = o.zip64 ? 0xFFFFFFFFu : static_cast<uint32_t>(data.size());
    std::string local_extra;
    if (o.zip64) {
      local_extra = le<uint16_t>(1) + le<uint16_t>(16) + le<uint64_t>(data.size()) +
                    le<uint64_t>(data.size());
    }
    out += le<uint32_t>(0x04034b50) + le<uint16_t>(45) + le<uint16_t>(0) + le<uint16_t>(method) +
           le<uint16_t>(0) + le<uint16_t>(0) + le<uint32_t>(crc) + le<uint32_t>(size32) +
           le<uint32_t>(size32) + le<uint16_t>(static_cast<uint16_t>(name.size())) +
           le<uint16_t>(static_cast<uint16_t>(local_extra.size())) + name + local_extra + data;
    std::string extra;
    if (o.zip64) {
      extra = le<uint16_t>(1) + le<uint16_t>(24) + le<uint64_t>(data.size()) +
              le<uint64_t>(data.size()) + le<uint64_t>(offset);
    }
    central += le<uint32_t>(0x02014b50) + le<uint16_t>(45) + le<uint16_t>(45) + le<uint16_t>(0) +
               le<uint16_t>(method) + le<uint16_t>(0) + le<uint16_t>(0) + le<uint32_t>(crc) +
               le<uint32_t>(size32) + le<uint32_t>(size32) +
               le<uint16_t>(static_cast<uint16_t>(name.size())) +
               le<uint16_t>(static_cast<uint16_t>(extra.size())) + le<uint16_t>(0) +
               le<uint16_t>(0) + le<uint16_t>(0) + le<uint32_t>(0) +
               le<uint32_t>(o.zip64 ? 0xFFFFFFFFu : static_cast<uint32_t>(offset)) + name + extra;
  }
  const uint64_t cd_offset = out.size();
  out += central;
  const uint64_t n = entries.size();
  if (o.zip64) {
    const uint64_t record = out.size();
    out += le<uint32_t>(0x06064b50) + le<uint64_t>(44) + le<uint16_t>(45) + le<uint16_t>(45) +
           le<uint32_t>(0) + le<uint32_t>(0) + le<uint64_t>(n) + le<uint64_t>(n) +
           le<uint64_t>(central.size()) + le<uint64_t>(cd_offset);
    out += le<uint32_t>(0x07064b50) + le<uint32_t>(0) + le<uint64_t>(record) + le<uint32_t>(1);
    out += le<uint32_t>(0x06054b50) + le<uint16_t>(0) + le<uint16_t>(0) + le<uint16_t>(0xFFFF) +
           le<uint16_t>(0xFFFF) + le<uint32_t>(0xFFFFFFFFu) + le<uint32_t>(0xFFFFFFFFu) +
           le<uint16_t>(0);
  } else {
    out += le<uint32_t>(0x06054b50) + le<uint16_t>(0) + le<uint16_t>(0) +
           le<uint16_t>(static_cast<uint16_t>(n)) + le<uint16_t>(static_cast<uint16_t>(n)) +
           le<uint32_t>(static_cast<uint32_t>(central.size())) +
           le<uint32_t>(static_cast<uint32_t>(cd_offset)) + le<uint16_t>(0);
  }
  return out;
}

// A torch.save-style archive: <name>/data.pkl, <name>/data/<key>, version, byteorder.
inline std::string torch_zip(const std::string& pkl,
                      const std::vector<std::pair<std::string, std::string>>& storages,
                      const ZipOptions& o = {}, const std::string& name = "archive") {
  std::vector<std::pair<std::string, std::string>> entries = {{name + "/data.pkl", pkl},
                                                              {name + "/byteorder", "little"}};
  for (const auto& [key, bytes] : storages) entries.emplace_back(name + "/data/" + key, bytes);
  entries.emplace_back(name + "/version", "3\n");
  return make_zip(entries, o);
}

// {'w': <one tensor>} as torch.save writes it.
inline std::string one_tensor_pickle(const std::string& type, int64_t numel, int64_t offset,
                              const std::vector<int64_t>& size, const std::vector<int64_t>& stride) {
  Pickle p;
  p.op('}').mark().str("w").tensor(type, "0", numel, offset, size, stride).op('u');
  return p.done();
}

inline std::string safetensors(const std::string& header, const std::string& data) {
  return le<uint64_t>(header.size()) + header + data;
}

}  // namespace rmt::test

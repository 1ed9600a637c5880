#include "rmt/io/npy.h"

#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <string_view>
#include <stdexcept>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "rmt/io/untrusted.h"

namespace rmt {

namespace {

constexpr char kMagic[] = "\x93NUMPY";

[[noreturn]] void fail(const std::string& path, const std::string& message) {
  throw std::runtime_error(fmt::format("{}: {}", path, message));
}

at::ScalarType dtype_from_descr(const std::string& path, const std::string& descr) {
  if (descr == "<f8") return at::kDouble;
  if (descr == "<f4") return at::kFloat;
  if (descr == "<f2") return at::kHalf;
  if (descr == "<i8") return at::kLong;
  if (descr == "<i4") return at::kInt;
  if (descr == "|u1") return at::kByte;
  if (descr == "|b1") return at::kBool;
  fail(path, fmt::format("unsupported .npy dtype '{}': expected one of <f8 <f4 <f2 <i8 <i4 |u1 |b1 "
                         "(little-endian)",
                         escape_and_cut(descr, 64)));
}

// The text after `'key':` and spaces in a .npy header dict, or npos. Plain scanning, no
// std::regex: libstdc++'s regex recurses once per character and a long header overflows the stack.
size_t value_of(std::string_view header, std::string_view key) {
  const std::string quoted = fmt::format("'{}':", key);
  size_t at = header.find(quoted);
  if (at == std::string_view::npos) return at;
  at += quoted.size();
  while (at < header.size() && (header[at] == ' ' || header[at] == '\t')) ++at;
  return at;
}

// The text between `open` at `at` and the next `close`, if there is one.
bool enclosed(std::string_view header, size_t at, char open, char close, std::string* out) {
  if (at == std::string_view::npos || at >= header.size() || header[at] != open) return false;
  const size_t end = header.find(close, at + 1);
  if (end == std::string_view::npos) return false;
  *out = std::string(header.substr(at + 1, end - at - 1));
  return true;
}

std::string descr_from_dtype(at::ScalarType type) {
  switch (type) {
    case at::kDouble: return "<f8";
    case at::kFloat: return "<f4";
    case at::kHalf: return "<f2";
    case at::kLong: return "<i8";
    case at::kInt: return "<i4";
    case at::kByte: return "|u1";
    case at::kBool: return "|b1";
    default: break;
  }
  throw std::runtime_error(fmt::format("write_npy: unsupported dtype {}", c10::toString(type)));
}

}  // namespace

at::Tensor read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open file");
  char magic[6];
  unsigned char version[2];
  if (!in.read(magic, 6) || std::memcmp(magic, kMagic, 6) != 0) fail(path, "not a .npy file (bad magic)");
  if (!in.read(reinterpret_cast<char*>(version), 2)) fail(path, "truncated .npy preamble");
  uint32_t header_len = 0;
  if (version[0] == 1) {
    unsigned char len[2];
    if (!in.read(reinterpret_cast<char*>(len), 2)) fail(path, "truncated .npy preamble");
    header_len = len[0] | (len[1] << 8);
  } else if (version[0] == 2 || version[0] == 3) {
    unsigned char len[4];
    if (!in.read(reinterpret_cast<char*>(len), 4)) fail(path, "truncated .npy preamble");
    header_len = len[0] | (len[1] << 8) | (len[2] << 16) | (uint32_t(len[3]) << 24);
    if (header_len > (1u << 20)) fail(path, "the .npy header is larger than 1 MiB");
  } else {
    fail(path, fmt::format("unsupported .npy format version {}", version[0]));
  }
  std::string header(header_len, '\0');
  if (!in.read(header.data(), header_len)) fail(path, "truncated .npy header");

  std::string descr, shape_text;
  if (!enclosed(header, value_of(header, "descr"), '\'', '\'', &descr)) {
    fail(path, "no 'descr' in the .npy header");
  }
  const auto dtype = dtype_from_descr(path, descr);
  const size_t order = value_of(header, "fortran_order");
  const std::string_view view(header);
  if (order == std::string_view::npos ||
      (view.substr(order, 4) != "True" && view.substr(order, 5) != "False")) {
    fail(path, "no 'fortran_order' in the .npy header");
  }
  if (view.substr(order, 4) == "True") {
    fail(path, "Fortran-ordered arrays are not supported: save with C order");
  }
  if (!enclosed(header, value_of(header, "shape"), '(', ')', &shape_text)) {
    fail(path, "no 'shape' in the .npy header");
  }
  std::vector<int64_t> shape;
  int64_t numel = 1;
  {
    std::stringstream dims(shape_text);
    std::string item;
    while (std::getline(dims, item, ',')) {
      if (item.find_first_not_of(" ") == std::string::npos) continue;
      int64_t dim = 0;
      try {
        dim = std::stoll(item);
      } catch (const std::exception&) {
        fail(path, fmt::format("bad dimension '{}' in the .npy shape", escape_and_cut(item, 64)));
      }
      if (dim < 0 || (dim > 0 && numel > std::numeric_limits<int64_t>::max() / 16 / dim)) {
        fail(path, fmt::format("bad or oversized dimension {} in the .npy shape",
                               escape_and_cut(item, 64)));
      }
      numel *= dim;
      shape.push_back(dim);
      if (shape.size() > 64) fail(path, "the .npy shape has more than 64 dimensions (NumPy's limit)");
    }
  }
  auto tensor = at::empty(shape, at::TensorOptions().dtype(dtype));
  const auto bytes = static_cast<std::streamsize>(tensor.nbytes());
  if (bytes > 0 && !in.read(static_cast<char*>(tensor.data_ptr()), bytes)) {
    fail(path, fmt::format("the data is shorter than the shape ({}) needs",
                             escape_and_cut(shape_text, 200)));
  }
  return tensor;
}

void write_npy(const std::string& path, const at::Tensor& input) {
  auto tensor = input.detach().to(at::kCPU);
  if (tensor.scalar_type() == at::kBFloat16) tensor = tensor.to(at::kFloat);
  tensor = tensor.contiguous();
  // A 1-D shape is Python's one-element tuple, (n, ).
  std::string text = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': ({}{}), }}",
                                 descr_from_dtype(tensor.scalar_type()),
                                 fmt::join(tensor.sizes(), ", "), tensor.dim() == 1 ? ", " : "");
  // Pad so that the data starts on a 64-byte boundary, header ending in '\n' (format version 1).
  const size_t preamble = 10;
  text.append(64 - (preamble + text.size() + 1) % 64, ' ');
  text.push_back('\n');
  std::ofstream out(path, std::ios::binary);
  if (!out) fail(path, "cannot open for writing");
  out.write(kMagic, 6);
  const unsigned char version[2] = {1, 0};
  out.write(reinterpret_cast<const char*>(version), 2);
  const unsigned char len[2] = {static_cast<unsigned char>(text.size() & 0xff),
                                static_cast<unsigned char>(text.size() >> 8)};
  out.write(reinterpret_cast<const char*>(len), 2);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  out.write(static_cast<const char*>(tensor.data_ptr()), static_cast<std::streamsize>(tensor.nbytes()));
  if (!out) fail(path, "write failed");
}

}  // namespace rmt

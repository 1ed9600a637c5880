#include "io/bytes.h"

#include <array>

#include <fmt/format.h>

namespace rmt::io {

namespace {

std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t n = 0; n < 256; ++n) {
    uint32_t c = n;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    table[n] = c;
  }
  return table;
}

}  // namespace

uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc) {
  static const std::array<uint32_t, 256> table = make_crc_table();
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ data[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

std::string join_ints(const std::vector<int64_t>& values, size_t max_items) {
  std::string s = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) s += ", ";
    if (i == max_items) {
      fmt::format_to(std::back_inserter(s), "... ({} more)", values.size() - i);
      break;
    }
    fmt::format_to(std::back_inserter(s), "{}", values[i]);
  }
  s += ']';
  return s;
}

size_t element_size(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::kHalf:
    case c10::kBFloat16:
    case c10::kShort:
      return 2;
    case c10::kFloat:
    case c10::kInt:
      return 4;
    case c10::kDouble:
    case c10::kLong:
      return 8;
    case c10::kChar:
    case c10::kByte:
    case c10::kBool:
      return 1;
    default:
      fail(fmt::format("unsupported dtype {}", c10::toString(dtype)));
  }
}

std::string dtype_name(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::kHalf: return "float16";
    case c10::kBFloat16: return "bfloat16";
    case c10::kFloat: return "float32";
    case c10::kDouble: return "float64";
    case c10::kLong: return "int64";
    case c10::kInt: return "int32";
    case c10::kShort: return "int16";
    case c10::kChar: return "int8";
    case c10::kByte: return "uint8";
    case c10::kBool: return "bool";
    default: return c10::toString(dtype);
  }
}

}  // namespace rmt::io

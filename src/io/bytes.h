#pragma once
// Little helpers shared by the checkpoint readers: overflow-checked arithmetic, little-endian
// loads from unaligned memory, CRC-32, dtypes. Text from a file reaches messages only through
// rmt::escape_and_cut (rmt/io/untrusted.h).

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>

#include <vector>

#include <c10/core/ScalarType.h>

#include "rmt/io/untrusted.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "rmt's checkpoint readers assume a little-endian host"
#endif

namespace rmt::io {

[[noreturn]] inline void fail(const std::string& message) { throw std::runtime_error(message); }

using rmt::add_ok;
using rmt::escape_and_cut;
using rmt::mul_ok;

// The product of non-negative sizes into *out, or false when one is negative or it overflows.
inline bool element_count(const std::vector<int64_t>& sizes, int64_t* out) {
  int64_t n = 1;
  for (int64_t s : sizes) {
    if (s < 0 || !mul_ok<int64_t>(n, s, &n)) return false;
  }
  *out = n;
  return true;
}

// escape_and_cut's rules, for text shown between quotes: `quote` is escaped too, and with `bytes`
// every byte from 0x80 up is written \xNN (Python's bytes repr). Returns the escaped text
// without the cut notice; *left_out receives the count of input bytes not shown.
std::string escape_text(std::string_view text, size_t max_bytes, char quote, bool bytes,
                        size_t* left_out);

// "[1, 2, 3]", at most `max_items` of them ("[1, 2, ... (N more)]"): sizes and strides from a
// file can be millions long.
std::string join_ints(const std::vector<int64_t>& values, size_t max_items = 8);

// [offset, offset + length) lies inside [0, size).
inline bool range_ok(uint64_t offset, uint64_t length, uint64_t size) {
  return offset <= size && length <= size - offset;
}

template <typename T>
inline T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));  // the host is little-endian (checked above)
  return v;
}

uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc = 0);

// Bytes per element of the dtypes the readers accept (others throw).
size_t element_size(c10::ScalarType dtype);
// "float32", "bfloat16", ... (the torch names)
std::string dtype_name(c10::ScalarType dtype);

}  // namespace rmt::io

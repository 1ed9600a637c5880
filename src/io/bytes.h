#pragma once
// Little helpers shared by the checkpoint readers: overflow-checked arithmetic, little-endian
// loads from unaligned memory, CRC-32, and error messages that are safe to print.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>

#include <c10/core/ScalarType.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "rmt's checkpoint readers assume a little-endian host"
#endif

namespace rmt::io {

[[noreturn]] inline void fail(const std::string& message) { throw std::runtime_error(message); }

// a + b and a * b, or false when the result does not fit.
template <typename T>
inline bool add_ok(T a, T b, T* out) { return !__builtin_add_overflow(a, b, out); }
template <typename T>
inline bool mul_ok(T a, T b, T* out) { return !__builtin_mul_overflow(a, b, out); }

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

// Text from a file, made printable and short for an error message.
std::string printable(std::string_view text, size_t max_length = 120);

// Bytes per element of the dtypes the readers accept (others throw).
size_t element_size(c10::ScalarType dtype);
// "float32", "bfloat16", ... (the torch names)
std::string dtype_name(c10::ScalarType dtype);

}  // namespace rmt::io

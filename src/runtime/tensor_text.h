#pragma once
// Tensor properties in messages built with fmt, as LibTorch's operator<< writes them. Private to
// the library's sources (fmt never appears in an installed header). A dtype is
// c10::toString(dtype) ("Float") and a device device.str() ("cuda:0"), as operator<< writes them.

#include <string>

#include <c10/util/ArrayRef.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

namespace rmt::text {

// "[2, 3, 224, 224]"
inline std::string shape(c10::IntArrayRef sizes) {
  return fmt::format("[{}]", fmt::join(sizes, ", "));
}

}  // namespace rmt::text

#pragma once
// NumPy .npy files (format versions 1-3, little-endian, C order): float16/32/64, bfloat16 is written
// as float32, int32/64, uint8, bool.

#include <string>

#include <ATen/ATen.h>

namespace rmt {

// Throws std::runtime_error naming the file when it is not a .npy file this reader understands.
at::Tensor read_npy(const std::string& path);
void write_npy(const std::string& path, const at::Tensor& tensor);

}  // namespace rmt

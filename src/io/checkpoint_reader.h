#pragma once
// Format detection and the readers behind rmt::read_state_dict / rmt::read_checkpoint.
// A reader parses a checkpoint's object tree first and reads tensor data only when asked, so
// read_state_dict touches only the storages of the weights it returns (not the optimizer's).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "rmt/io/checkpoint.h"

namespace rmt::io {

class CheckpointReader {
 public:
  virtual ~CheckpointReader() = default;

  // path is left empty; the tree, root, format and metadata are filled.
  CheckpointContents contents;
  // Every tensor of the tree.
  std::vector<const pickle::Value*> tensors;

  // Reads the data of these tensors (TensorInfo::data); tensors of one storage share it.
  // The bytes given to open_checkpoint must still be alive.
  virtual void load(const std::vector<const pickle::Value*>& tensors) = 0;
};

// Detects the format from the bytes. Errors do not name the file: callers add it.
std::unique_ptr<CheckpointReader> open_checkpoint(const uint8_t* data, size_t size,
                                                  const pickle::Limits& limits = {});

// The individual formats.
std::unique_ptr<CheckpointReader> open_torch_zip(const uint8_t* data, size_t size,
                                                 const pickle::Limits& limits);
std::unique_ptr<CheckpointReader> open_torch_legacy(const uint8_t* data, size_t size,
                                                    const pickle::Limits& limits);
std::unique_ptr<CheckpointReader> open_safetensors(const uint8_t* data, size_t size,
                                                   const pickle::Limits& limits = {});

// A read-only view of a whole file (memory-mapped when possible).
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  std::vector<uint8_t> copy_;
};

}  // namespace rmt::io

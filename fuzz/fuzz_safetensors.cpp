// libFuzzer entry point: any bytes as a safetensors file (the reader is called directly, so the
// format detection does not steer inputs elsewhere).

#include <cstddef>
#include <cstdint>
#include <exception>

#include "io/checkpoint_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto reader = rmt::io::open_safetensors(data, size);
    reader->load(reader->tensors);
    (void)rmt::describe_checkpoint(reader->contents);
  } catch (const std::exception&) {
  }
  return 0;
}

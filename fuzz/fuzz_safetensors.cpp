// libFuzzer entry point: any bytes as a safetensors file (the reader is called directly, so the
// format detection does not steer inputs elsewhere), with the bounds of fuzz_checks.h checked.

#include <cstddef>
#include <cstdint>
#include <exception>

#include "fuzz_checks.h"
#include "io/checkpoint_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto reader = rmt::io::open_safetensors(data, size);
    reader->load(reader->tensors);
    rmt::fuzz::check_text(rmt::describe_checkpoint(reader->contents), (size_t(256) << 10) + 4096);
  } catch (const std::exception& e) {
    rmt::fuzz::check_message(e);
  }
  return 0;
}

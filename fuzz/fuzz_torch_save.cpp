// libFuzzer entry point: any bytes as a checkpoint file (torch.save zip, legacy torch.save or
// safetensors, detected as read_checkpoint does). Errors are expected; crashes, hangs, leaks and
// sanitizer reports are bugs.

#include <cstddef>
#include <cstdint>
#include <exception>

#include "rmt/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const rmt::CheckpointContents contents =
        rmt::read_checkpoint_from_memory(data, size, "fuzz.pth");
    (void)rmt::describe_checkpoint(contents);
  } catch (const std::exception&) {
  }
  try {
    (void)rmt::read_state_dict_from_memory(data, size, "fuzz.pth");
  } catch (const std::exception&) {
  }
  return 0;
}

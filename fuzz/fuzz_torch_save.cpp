// libFuzzer entry point: any bytes as a checkpoint file (torch.save zip, legacy torch.save or
// safetensors, detected as read_checkpoint does), read and described as rmt-inspect does, then
// its weights selected as read_state_dict does. Errors are expected; crashes, hangs, leaks,
// sanitizer reports and broken bounds (fuzz_checks.h: messages under 1 KB and escaped, the
// description within its limit) are bugs.

#include <cstddef>
#include <cstdint>
#include <exception>

#include "fuzz_checks.h"
#include "rmt/io/checkpoint.h"
#include "rmt/io/untrusted.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const rmt::CheckpointContents contents =
        rmt::read_checkpoint_from_memory(data, size, "fuzz.pth");
    rmt::fuzz::check_text(rmt::describe_checkpoint(contents), (size_t(256) << 10) + 4096);
    const rmt::StateDict weights = rmt::select_state_dict(contents);
    rmt::CountSum elements;  // as the tools total them
    for (const auto& item : weights) elements.add(item.value().numel());
  } catch (const std::exception& e) {
    rmt::fuzz::check_message(e);
  }
  try {
    (void)rmt::read_state_dict_from_memory(data, size, "fuzz.pth");
  } catch (const std::exception& e) {
    rmt::fuzz::check_message(e);
  }
  return 0;
}

// libFuzzer entry point: any bytes as one pickle (protocols 0-5, torch persistent ids).

#include <cstddef>
#include <cstdint>
#include <exception>

#include "rmt/pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rmt::pickle::Limits limits;
  limits.max_memory = size_t(256) << 20;  // well under libFuzzer's default 2 GB RSS limit
  try {
    const auto tree = rmt::pickle::read_pickle(data, size, limits);
    (void)rmt::pickle::render(*tree->root());
  } catch (const std::exception&) {
  }
  return 0;
}

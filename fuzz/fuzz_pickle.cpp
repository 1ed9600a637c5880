// libFuzzer entry point: any bytes as one pickle (protocols 0-5, torch persistent ids), then
// rendered alone and as a listing of its entries (rmt-inspect's --json), with the bounds of
// fuzz_checks.h checked.

#include <cstddef>
#include <cstdint>
#include <exception>

#include "fuzz_checks.h"
#include "rmt/io/pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rmt::pickle::Limits limits;
  // An input is at most 64 KiB, which a valid pickle reads in well under these: smaller budgets
  // than the defaults keep each execution short (the budgets themselves are what is tested).
  limits.max_memory = size_t(32) << 20;
  limits.max_work = uint64_t(1) << 22;
  try {
    const auto tree = rmt::pickle::read_pickle(data, size, limits);
    const rmt::pickle::Value& root = *tree->root();
    rmt::fuzz::check_text(rmt::pickle::render(root), 65536 + 64);
    rmt::pickle::RenderSession session(size_t(1) << 18);
    size_t n = 0;
    for (const auto& [key, value] : root.entries) {
      if (n++ == 64) break;
      rmt::fuzz::check_text(session.render(*value, "entry", {3, 12, 200, 4000}), 4000 + 64);
    }
  } catch (const std::exception& e) {
    rmt::fuzz::check_message(e);
  }
  return 0;
}

#include "nn/batch_chunks.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include <ATen/Parallel.h>
#include <fmt/format.h>

namespace rmt::nn::detail {

namespace {

constexpr int64_t kWholeBatch = -1;
constexpr int64_t kAuto = 0;

// RMT_CPU_BATCH_CHUNK, read once: kAuto, kWholeBatch or a positive count.
int64_t forced_chunk() {
  static const int64_t forced = [] {
    const char* value = std::getenv("RMT_CPU_BATCH_CHUNK");
    if (value == nullptr || std::string(value) == "auto") return kAuto;
    if (std::string(value) == "off") return kWholeBatch;
    char* end = nullptr;
    errno = 0;
    const long long count = std::strtoll(value, &end, 10);
    if (end == value || *end != '\0' || errno != 0 || count < 1) {
      throw std::invalid_argument(fmt::format(
          "RMT_CPU_BATCH_CHUNK='{}': expected auto, off or a positive number of images",
          std::string(value).substr(0, 64)));
    }
    return static_cast<int64_t>(count);
  }();
  return forced;
}

// Half of a core's L2 (1 MiB where the system does not say): the rest holds the weights' tiles.
int64_t budget_per_thread() {
  static const int64_t budget = [] {
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return l2 > 0 ? static_cast<int64_t>(l2) / 2 : int64_t{1} << 20;
  }();
  return budget;
}

}  // namespace

int64_t images_per_chunk(const at::Tensor& stage_input) {
  const int64_t batch = stage_input.size(0);
  const int64_t forced = forced_chunk();
  if (forced == kWholeBatch || batch <= 1) return std::max<int64_t>(batch, 1);
  if (forced != kAuto) return std::min(forced, batch);
  const int64_t image_bytes =
      stage_input.numel() / batch * static_cast<int64_t>(stage_input.element_size());
  const int64_t budget = budget_per_thread() * at::get_num_threads();
  return std::clamp<int64_t>(budget / std::max<int64_t>(image_bytes, 1), 1, batch);
}

}  // namespace rmt::nn::detail

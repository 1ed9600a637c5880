#include "runtime/env_choice.h"

#include <cstdlib>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace rmt::runtime {

std::optional<std::string_view> env_choice(const char* name,
                                           std::initializer_list<std::string_view> choices,
                                           std::string_view unset_means) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  const std::string_view text(value);
  std::string expected;
  size_t i = 0;
  for (const auto choice : choices) {
    if (choice == text) return choice;  // a view of the caller's literal, not of the environment
    expected += std::string(i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ") +
                std::string(choice);
    ++i;
  }
  throw std::invalid_argument(fmt::format("{}='{}': expected {} (or unset: {})", name,
                                          text.substr(0, 64), expected, unset_means));
}

}  // namespace rmt::runtime

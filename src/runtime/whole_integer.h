#pragma once
// The one strict reader of integers from environment variables, cgroup files and launcher
// variables. strtoll and std::stoll accept leading blanks, a '+', trailing text (stoll) and
// overflow silently in other forms; a value the user wrote is either exactly a number or an error.

#include <cstdint>
#include <optional>
#include <string_view>

namespace rmt::runtime {

// An optional '-' and then 1 to 18 decimal digits, nothing else (no blanks, no '+'); nullopt for
// anything else. 18 digits cannot overflow int64_t.
std::optional<int64_t> whole_integer(std::string_view text);

}  // namespace rmt::runtime

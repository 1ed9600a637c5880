#pragma once
// The one reader of environment variables that pick one of a few words (RMT_CPU_LINEAR,
// RMT_BUSY_CPUS, RMT_MASA_CPU_ISA): a value the user wrote is either one of the words or an error
// that names the variable, the value and the words, never silently the default.

#include <initializer_list>
#include <optional>
#include <string_view>

namespace rmt::runtime {

// The value of the environment variable `name` when it is one of `choices`; nullopt when it is
// unset or empty. Anything else throws std::invalid_argument:
// "NAME='value': expected a, b or c (or unset: <unset_means>)", the value cut to 64 characters.
std::optional<std::string_view> env_choice(const char* name,
                                           std::initializer_list<std::string_view> choices,
                                           std::string_view unset_means);

}  // namespace rmt::runtime

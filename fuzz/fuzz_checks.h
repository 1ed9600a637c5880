#pragma once
// What every fuzz target checks beyond crashes, leaks and sanitizer reports: the bounds
// docs/checkpoints.md guarantees for any input. A violation aborts, which libFuzzer reports as a
// crash with the input that caused it.
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "rmt/io/untrusted.h"

namespace rmt::fuzz {

[[noreturn]] inline void violated(const char* rule, const std::string& text) {
  std::fprintf(stderr, "fuzz: bound violated: %s (%zu bytes): %.2000s\n", rule, text.size(),
               text.c_str());
  std::abort();
}

// An error message: under 1 KB, and no control byte but the newlines of a multi-line report.
inline void check_message(const std::exception& e) {
  const std::string m = e.what();
  if (m.size() > kMaxMessageBytes) violated("a message over 1 KB", m);
  for (const char ch : m) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c < 0x20 && c != '\n') || c == 0x7F) violated("a raw control byte in a message", m);
  }
}

// A text for people (describe_checkpoint, render): as long as what the input holds, within the
// limit, and escaped.
inline void check_text(const std::string& text, size_t limit) {
  if (text.size() > limit) violated("a text longer than its limit", text);
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c < 0x20 && c != '\n') || c == 0x7F) violated("a raw control byte in a text", text);
  }
}

}  // namespace rmt::fuzz

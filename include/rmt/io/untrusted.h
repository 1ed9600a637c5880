#pragma once
// Helpers for values that come from an untrusted file (a checkpoint): text made safe to print and
// short, and integer arithmetic that cannot overflow. Every reader of src/io and every tool that
// shows something taken from a file goes through these, so the rules live in one place.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace rmt {

// Text from a file, safe to put in a message or on a terminal: printable ASCII and valid UTF-8
// letters pass through; backslash, control bytes (C0, DEL, the C1 controls U+0080-U+009F),
// Unicode direction and zero-width controls, line separators and bytes that are not valid UTF-8
// are written as escapes (\n, \t, \r, \\, \xNN, \uNNNN). At most `max_bytes` bytes of escaped text
// are kept; when the text is longer it ends with "... (N more bytes)", N counting the input bytes
// left out, so a cut is never silent.
std::string escape_and_cut(std::string_view text, size_t max_bytes = 200);

// The most bytes an error message of the readers and tools may have.
constexpr size_t kMaxMessageBytes = 1000;

// `message` itself when it has at most `max_bytes` bytes, else its start followed by
// "... (message cut: N more bytes)", at most `max_bytes` bytes in all. (The parts taken from a
// file are escaped before they are put in a message; this is the last guard on its length.)
std::string cut_message(std::string message, size_t max_bytes = kMaxMessageBytes);

// a + b and a * b into *out, or false (and *out unspecified) when the result does not fit.
template <typename T>
inline bool add_ok(T a, T b, T* out) { return !__builtin_add_overflow(a, b, out); }
template <typename T>
inline bool mul_ok(T a, T b, T* out) { return !__builtin_mul_overflow(a, b, out); }

// A sum of non-negative counts that stops at INT64_MAX instead of overflowing; `saturated()` says
// whether it did (the true total is then larger; a negative count, which no size can be, also
// saturates it rather than being subtracted).
class CountSum {
 public:
  void add(int64_t n) {
    if (n < 0 || !add_ok(total_, n, &total_)) {
      total_ = INT64_MAX;
      saturated_ = true;
    }
  }
  int64_t value() const { return total_; }
  bool saturated() const { return saturated_; }

 private:
  int64_t total_ = 0;
  bool saturated_ = false;
};

}  // namespace rmt

#include "rmt/io/untrusted.h"

#include <fmt/format.h>

#include "io/bytes.h"

namespace rmt {

namespace {

// Length of the valid UTF-8 sequence starting at s[i] (2 to 4 bytes) and its code point, or 0
// when the bytes there are not valid UTF-8 (overlong forms and surrogates included).
size_t utf8_sequence(std::string_view s, size_t i, uint32_t* cp) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  size_t n = 0;
  uint32_t v = 0, min = 0;
  if ((b0 & 0xE0) == 0xC0) {
    n = 2, v = b0 & 0x1Fu, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    n = 3, v = b0 & 0x0Fu, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    n = 4, v = b0 & 0x07u, min = 0x10000;
  } else {
    return 0;
  }
  if (s.size() - i < n) return 0;
  for (size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    v = (v << 6) | (b & 0x3Fu);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
  *cp = v;
  return n;
}

// Code points that change how a terminal shows the text around them rather than being letters:
// C1 controls, bidirectional overrides and isolates, zero-width characters, line separators.
bool invisible_control(uint32_t cp) {
  return (cp >= 0x80 && cp <= 0x9F) || cp == 0x61C || (cp >= 0x200B && cp <= 0x200F) ||
         (cp >= 0x2028 && cp <= 0x202E) || (cp >= 0x2060 && cp <= 0x2069) || cp == 0xFEFF ||
         (cp >= 0xFFF9 && cp <= 0xFFFB);
}

}  // namespace

namespace io {

std::string escape_text(std::string_view text, size_t max_bytes, char quote, bool bytes,
                        size_t* left_out) {
  std::string out;
  out.reserve(text.size() < max_bytes ? text.size() : max_bytes);
  size_t i = 0;
  char buf[16];
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    std::string_view piece;
    size_t length = 1;
    if (c < 0x80 || bytes) {
      switch (c) {
        case '\\': piece = "\\\\"; break;
        case '\n': piece = "\\n"; break;
        case '\r': piece = "\\r"; break;
        case '\t': piece = "\\t"; break;
        default:
          if (c < 0x20 || c >= 0x7F) {
            *fmt::format_to_n(buf, sizeof(buf) - 1, "\\x{:02x}", c).out = 0;
            piece = buf;
          } else if (c == static_cast<unsigned char>(quote) && quote) {
            buf[0] = '\\';
            buf[1] = quote;
            buf[2] = 0;
            piece = buf;
          } else {
            piece = text.substr(i, 1);
          }
      }
    } else {
      uint32_t cp = 0;
      length = utf8_sequence(text, i, &cp);
      if (length == 0) {
        length = 1;
        *fmt::format_to_n(buf, sizeof(buf) - 1, "\\x{:02x}", c).out = 0;
        piece = buf;
      } else if (invisible_control(cp)) {
        *fmt::format_to_n(buf, sizeof(buf) - 1, "\\u{:04x}", cp).out = 0;
        piece = buf;
      } else {
        piece = text.substr(i, length);
      }
    }
    if (out.size() + piece.size() > max_bytes) break;
    out += piece;
    i += length;
  }
  *left_out = text.size() - i;
  return out;
}

}  // namespace io

std::string escape_and_cut(std::string_view text, size_t max_bytes) {
  size_t left_out = 0;
  std::string out = io::escape_text(text, max_bytes, 0, false, &left_out);
  if (left_out) fmt::format_to(std::back_inserter(out), "... ({} more bytes)", left_out);
  return out;
}

std::string cut_message(std::string message, size_t max_bytes) {
  if (message.size() <= max_bytes) return message;
  const size_t total = message.size();
  // The suffix is at most 45 bytes; keep whole UTF-8 sequences.
  size_t keep = max_bytes > 90 ? max_bytes - 45 : max_bytes / 2;
  while (keep > 0 && (static_cast<unsigned char>(message[keep]) & 0xC0) == 0x80) --keep;
  message.resize(keep);
  fmt::format_to(std::back_inserter(message), "... (message cut: {} more bytes)", total - keep);
  return message;
}

}  // namespace rmt

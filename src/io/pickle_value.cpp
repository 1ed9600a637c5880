// The inert object tree: lookups and Python-like rendering (bounded in depth and width, so
// cycles and deep nesting from a hostile file cannot blow the stack).

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "io/bytes.h"
#include "rmt/pickle.h"

namespace rmt::pickle {

Value* Tree::add(Kind kind) {
  values_.emplace_back();
  values_.back().kind = kind;
  return &values_.back();
}

const Value* Value::find(std::string_view key) const {
  for (const auto& [k, v] : entries) {
    if (k->kind == Kind::Str && k->text == key) return v;
  }
  return nullptr;
}

const Value* Value::attribute(std::string_view key) const {
  if (!state) return nullptr;
  if (state->kind == Kind::Dict) return state->find(key);
  // (dict state, slot state) as Python's BUILD accepts
  if (state->kind == Kind::Tuple && state->items.size() == 2) {
    for (const Value* part : state->items) {
      if (part->kind == Kind::Dict) {
        if (const Value* v = part->find(key)) return v;
      }
    }
  }
  return nullptr;
}

std::string Value::qualified_name() const {
  if (kind != Kind::Global && kind != Kind::Object) return {};
  return text.empty() ? name : text + "." + name;
}

std::string Value::type_name() const {
  switch (kind) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int:
    case Kind::BigInt: return "int";
    case Kind::Float: return "float";
    case Kind::Str: return "str";
    case Kind::Bytes: return "bytes";
    case Kind::List: return "list";
    case Kind::Tuple: return "tuple";
    case Kind::Dict: return "dict";
    case Kind::Set: return "set";
    case Kind::FrozenSet: return "frozenset";
    case Kind::Global: return "global " + io::printable(qualified_name());
    case Kind::Object: return io::printable(qualified_name());
    case Kind::Storage: return "storage";
    case Kind::Tensor: return "tensor";
  }
  return "?";
}

namespace {

std::string quote(std::string_view s, size_t max_chars, bool bytes) {
  std::string out = bytes ? "b'" : "'";
  size_t shown = 0;
  for (size_t i = 0; i < s.size(); ++i, ++shown) {
    if (shown >= max_chars) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\'': out += "\\'"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7F || (bytes && c >= 0x80)) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\x%02x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);  // UTF-8 text passes through
        }
    }
  }
  return out + "'";
}

std::string float_text(double v) {
  if (v != v) return "nan";
  if (v == 1.0 / 0.0) return "inf";
  if (v == -1.0 / 0.0) return "-inf";
  // Python's repr: the shortest round-trip digits, positional when 1e-4 <= |v| < 1e16.
  char buf[400];
  auto r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
  std::string s(buf, r.ptr);
  const size_t e = s.find('e');
  const int exponent = e == std::string::npos ? 0 : std::atoi(s.c_str() + e + 1);
  if (exponent < -4 || exponent >= 16) return s;
  r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed);
  s.assign(buf, r.ptr);
  if (s.find('.') == std::string::npos) s += ".0";
  return s;
}

std::string bigint_text(const std::string& le) {
  const bool negative = !le.empty() && (static_cast<unsigned char>(le.back()) & 0x80);
  if (le.size() > 64) {
    return std::string(negative ? "-" : "") + "<int of " + std::to_string(le.size()) + " bytes>";
  }
  std::vector<unsigned> mag(le.begin(), le.end());  // magnitude of the two's complement number
  for (auto& b : mag) b &= 0xFF;
  if (negative) {
    unsigned carry = 1;
    for (auto& b : mag) {
      const unsigned v = ((~b) & 0xFF) + carry;
      b = v & 0xFF;
      carry = v >> 8;
    }
  }
  std::string digits;  // repeated division by 10, most significant byte first
  bool zero = false;
  while (!zero) {
    unsigned rem = 0;
    zero = true;
    for (size_t i = mag.size(); i-- > 0;) {
      const unsigned v = (rem << 8) | mag[i];
      mag[i] = v / 10;
      rem = v % 10;
      if (mag[i]) zero = false;
    }
    digits += static_cast<char>('0' + rem);
  }
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  return std::string(negative ? "-" : "") + std::string(digits.rbegin(), digits.rend());
}

std::string shape_text(const std::vector<int64_t>& sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

class Renderer {
 public:
  explicit Renderer(const RenderOptions& o) : o_(o) {}

  void value(const Value& v, size_t depth) {
    if (out_.size() >= o_.max_length) {
      if (!truncated_) out_ += "...";
      truncated_ = true;
      return;
    }
    switch (v.kind) {
      case Kind::None: out_ += "None"; return;
      case Kind::Bool: out_ += v.boolean ? "True" : "False"; return;
      case Kind::Int: out_ += std::to_string(v.integer); return;
      case Kind::BigInt: out_ += bigint_text(v.text); return;
      case Kind::Float: out_ += float_text(v.real); return;
      case Kind::Str: out_ += quote(v.text, o_.max_string, false); return;
      case Kind::Bytes: out_ += quote(v.text, o_.max_string, true); return;
      case Kind::Global: out_ += io::printable(v.qualified_name()); return;
      case Kind::Storage:
        out_ += "storage(" + io::printable(v.storage->type_name) + ", key=" +
                quote(v.storage->key, 40, false) + ", " + std::to_string(v.storage->numel) +
                " elements)";
        return;
      case Kind::Tensor:
        out_ += "tensor(" + io::dtype_name(v.tensor->dtype) + ", " +
                shape_text(v.tensor->sizes) + ")";
        return;
      default: break;
    }
    if (depth >= o_.max_depth) {
      out_ += "...";
      return;
    }
    switch (v.kind) {
      case Kind::List: sequence("[", v.items, "]", depth); return;
      case Kind::Tuple:
        sequence("(", v.items, v.items.size() == 1 ? ",)" : ")", depth);
        return;
      case Kind::Set:
        if (v.items.empty()) {
          out_ += "set()";
        } else {
          sequence("{", v.items, "}", depth);
        }
        return;
      case Kind::FrozenSet: sequence("frozenset({", v.items, "})", depth); return;
      case Kind::Dict: mapping(v.entries, depth); return;
      case Kind::Object: object(v, depth); return;
      default: return;
    }
  }

  std::string take() { return std::move(out_); }

 private:
  void sequence(const char* open, const std::vector<const Value*>& items, const char* close,
                size_t depth) {
    out_ += open;
    for (size_t i = 0; i < items.size(); ++i) {
      if (i) out_ += ", ";
      if (i == o_.max_items) {
        out_ += "... (" + std::to_string(items.size() - i) + " more)";
        break;
      }
      value(*items[i], depth + 1);
    }
    out_ += close;
  }

  void mapping(const std::vector<std::pair<const Value*, const Value*>>& entries, size_t depth) {
    out_ += "{";
    for (size_t i = 0; i < entries.size(); ++i) {
      if (i) out_ += ", ";
      if (i == o_.max_items) {
        out_ += "... (" + std::to_string(entries.size() - i) + " more)";
        break;
      }
      value(*entries[i].first, depth + 1);
      out_ += ": ";
      value(*entries[i].second, depth + 1);
    }
    out_ += "}";
  }

  void object(const Value& v, size_t depth) {
    out_ += io::printable(v.qualified_name()) + "(";
    size_t shown = 0;
    auto comma = [&] {
      if (shown++) out_ += ", ";
    };
    if (v.args) {
      for (size_t i = 0; i < v.args->items.size() && i < o_.max_items; ++i) {
        comma();
        value(*v.args->items[i], depth + 1);
      }
    }
    auto keywords = [&](const Value* dict) {
      for (size_t i = 0; i < dict->entries.size(); ++i) {
        comma();
        if (i == o_.max_items) {
          out_ += "... (" + std::to_string(dict->entries.size() - i) + " more)";
          break;
        }
        const Value& k = *dict->entries[i].first;
        if (k.kind == Kind::Str) {
          out_ += io::printable(k.text, o_.max_string);
        } else {
          value(k, depth + 1);
        }
        out_ += "=";
        value(*dict->entries[i].second, depth + 1);
      }
    };
    if (v.kwargs && v.kwargs->kind == Kind::Dict) keywords(v.kwargs);
    if (v.state) {
      if (v.state->kind == Kind::Dict) {
        keywords(v.state);
      } else {
        comma();
        out_ += "state=";
        value(*v.state, depth + 1);
      }
    }
    if (!v.items.empty()) {
      comma();
      out_ += "items=";
      sequence("[", v.items, "]", depth + 1);
    }
    if (!v.entries.empty()) {
      comma();
      out_ += "entries=";
      mapping(v.entries, depth + 1);
    }
    out_ += ")";
  }

  const RenderOptions& o_;
  std::string out_;
  bool truncated_ = false;
};

}  // namespace

std::string render(const Value& value, const RenderOptions& options) {
  Renderer r(options);
  r.value(value, 0);
  return r.take();
}

}  // namespace rmt::pickle

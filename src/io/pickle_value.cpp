// The inert object tree: lookups and Python-like rendering (bounded in depth, width and length,
// each shared value shown once, so cycles, deep nesting and values referenced a million times
// cannot blow the stack or the output).

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>

#include "io/bytes.h"
#include "rmt/io/pickle.h"

namespace rmt::pickle {

Value* Tree::add(Kind kind) {
  values_.emplace_back();
  values_.back().kind = kind;
  values_.back().index = static_cast<uint32_t>(values_.size() - 1);
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
  return text.empty() ? name : fmt::format("{}.{}", text, name);
}

std::string Value::shown_name(size_t max_bytes) const {
  if (kind != Kind::Global && kind != Kind::Object) return {};
  if (text.empty()) return io::escape_and_cut(name, max_bytes);
  return fmt::format("{}.{}", io::escape_and_cut(text, max_bytes),
                     io::escape_and_cut(name, max_bytes));
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
    case Kind::Global: return fmt::format("global {}", shown_name());
    case Kind::Object: return shown_name();
    case Kind::Storage: return "storage";
    case Kind::Tensor: return "tensor";
  }
  return "?";
}

namespace {

std::string quote(std::string_view s, size_t max_bytes, bool bytes) {
  size_t left_out = 0;
  std::string out = fmt::format("{}'{}'", bytes ? "b" : "",
                                io::escape_text(s, max_bytes, '\'', bytes, &left_out));
  if (left_out) fmt::format_to(std::back_inserter(out), "... ({} more bytes)", left_out);
  return out;
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
    return fmt::format("{}<int of {} bytes>", negative ? "-" : "", le.size());
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
  if (negative) digits += '-';
  return std::string(digits.rbegin(), digits.rend());
}

}  // namespace

// One render() call. Values that may be shared (large containers and objects, long strings) are recorded
// where they are first shown; a later reference is written *N and the first showing gets &N in
// front, both put in when the text is finished (only values referenced again get a number).
class Renderer {
 public:
  Renderer(const RenderOptions& o, const RenderSession* session) : o_(o), session_(session) {}

  void value(const Value& v, size_t depth) {
    if (out_.size() >= o_.max_length) {
      if (!truncated_) put("... (cut at {} bytes)", o_.max_length);
      truncated_ = true;
      return;
    }
    const bool container = v.kind == Kind::List || v.kind == Kind::Tuple || v.kind == Kind::Dict ||
                           v.kind == Kind::Set || v.kind == Kind::FrozenSet ||
                           v.kind == Kind::Object;
    if (shareable(v, container)) {
      if (session_) {
        const std::string seen = session_->reference(&v);
        if (!seen.empty()) {
          out_ += seen;
          return;
        }
      }
      const auto found = defs_.find(&v);
      if (found != defs_.end()) {
        events_.push_back({out_.size(), found->second, false});
        ++refs_[found->second];
        return;
      }
      if (!(container && depth >= o_.max_depth)) {
        const auto d = static_cast<uint32_t>(shown_.size());
        defs_.emplace(&v, d);
        shown_.push_back(&v);
        refs_.push_back(0);
        events_.push_back({out_.size(), d, true});
      }
    }
    switch (v.kind) {
      case Kind::None: out_ += "None"; return;
      case Kind::Bool: out_ += v.boolean ? "True" : "False"; return;
      case Kind::Int: put("{}", v.integer); return;
      case Kind::BigInt: out_ += bigint_text(v.text); return;
      case Kind::Float: out_ += float_text(v.real); return;
      case Kind::Str: out_ += quote(v.text, o_.max_string, false); return;
      case Kind::Bytes: out_ += quote(v.text, o_.max_string, true); return;
      case Kind::Global: out_ += v.shown_name(o_.max_string); return;
      case Kind::Storage:
        put("storage({}, key={}, {} elements)", io::escape_and_cut(v.storage->type_name, 60),
            quote(v.storage->key, 40, false), v.storage->numel);
        return;
      case Kind::Tensor:
        put("tensor({}, {})", io::dtype_name(v.tensor->dtype), io::join_ints(v.tensor->sizes, 64));
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

  // The text, with &N and *N put in.
  std::string finish() {
    std::vector<uint32_t> number(shown_.size(), 0);
    uint32_t next = 1;
    for (const Event& e : events_) {
      if (e.def && refs_[e.value]) number[e.value] = next++;
    }
    if (next == 1) return std::move(out_);
    std::string text;
    text.reserve(out_.size() + events_.size() * 4);
    size_t done = 0;
    for (const Event& e : events_) {
      if (e.def && !number[e.value]) continue;
      text.append(out_, done, e.pos - done);
      done = e.pos;
      fmt::format_to(std::back_inserter(text), "{}{}{}", e.def ? "&" : "*", number[e.value],
                     e.def ? " " : "");
    }
    text.append(out_, done, std::string::npos);
    return text;
  }

  // The values this call showed (for the session), the call's own value first.
  const std::vector<const Value*>& shown() const { return shown_; }

 private:
  // Appends fmt's text to out_.
  template <typename... Args>
  void put(fmt::format_string<Args...> format, Args&&... args) {
    fmt::format_to(std::back_inserter(out_), format, std::forward<Args>(args)...);
  }

  // Worth a mark: a container or object of more than 4 elements, a string of more than 64 bytes.
  // (Smaller ones are shown again: their text is short, and the limits bound it anyway.)
  static bool shareable(const Value& v, bool container) {
    if (container) {
      size_t elements = v.items.size() + v.entries.size();
      if (v.args) elements += v.args->items.size();
      if (v.kwargs) elements += v.kwargs->entries.size();
      if (v.state) elements += v.state->kind == Kind::Dict ? v.state->entries.size() : 1;
      return elements > 4;
    }
    return (v.kind == Kind::Str || v.kind == Kind::Bytes || v.kind == Kind::BigInt) &&
           v.text.size() > 64;
  }

  void sequence(const char* open, const std::vector<const Value*>& items, const char* close,
                size_t depth) {
    out_ += open;
    for (size_t i = 0; i < items.size(); ++i) {
      if (i) out_ += ", ";
      if (i == o_.max_items) {
        put("... ({} more)", items.size() - i);
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
        put("... ({} more)", entries.size() - i);
        break;
      }
      value(*entries[i].first, depth + 1);
      out_ += ": ";
      value(*entries[i].second, depth + 1);
    }
    out_ += "}";
  }

  void object(const Value& v, size_t depth) {
    put("{}(", v.shown_name(o_.max_string));
    size_t shown = 0;
    auto comma = [&] {
      if (shown++) out_ += ", ";
    };
    if (v.args) {
      const auto& args = v.args->items;
      for (size_t i = 0; i < args.size(); ++i) {
        comma();
        if (i == o_.max_items) {
          put("... ({} more)", args.size() - i);
          break;
        }
        value(*args[i], depth + 1);
      }
    }
    auto keywords = [&](const Value* dict) {
      for (size_t i = 0; i < dict->entries.size(); ++i) {
        comma();
        if (i == o_.max_items) {
          put("... ({} more)", dict->entries.size() - i);
          break;
        }
        const Value& k = *dict->entries[i].first;
        if (k.kind == Kind::Str) {
          out_ += io::escape_and_cut(k.text, o_.max_string);
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

  struct Event {
    size_t pos;      // in out_
    uint32_t value;  // index in shown_
    bool def;        // the first showing, or a reference back to it
  };

  const RenderOptions& o_;
  const RenderSession* session_;
  std::string out_;
  bool truncated_ = false;
  std::unordered_map<const Value*, uint32_t> defs_;
  std::vector<const Value*> shown_;
  std::vector<uint32_t> refs_;
  std::vector<Event> events_;
};

std::string render(const Value& value, const RenderOptions& options) {
  Renderer r(options, nullptr);
  r.value(value, 0);
  return r.finish();
}

std::string RenderSession::render(const Value& value, const std::string& label,
                                  const RenderOptions& options) {
  if (exhausted()) return "<not shown: output limit reached>";
  RenderOptions o = options;
  o.max_length = std::min(o.max_length, max_total_ - written_);
  Renderer r(o, this);
  r.value(value, 0);
  std::string text = r.finish();
  written_ += text.size();
  const auto label_index = static_cast<uint32_t>(labels_.size());
  labels_.push_back(cut_message(label, 120));
  for (const Value* v : r.shown()) {
    shown_.emplace(v, label_index * 2 + (v == &value ? 1 : 0));
  }
  return text;
}

void RenderSession::mark_shown(const Value* value, const std::string& label) {
  const auto label_index = static_cast<uint32_t>(labels_.size());
  labels_.push_back(cut_message(label, 120));
  shown_.emplace(value, label_index * 2 + 1);
}

std::string RenderSession::reference(const Value* value) const {
  const auto found = shown_.find(value);
  if (found == shown_.end()) return {};
  const std::string& label = labels_[found->second / 2];
  return fmt::format("<{} {}>", found->second % 2 ? "same as" : "see", label);
}


}  // namespace rmt::pickle

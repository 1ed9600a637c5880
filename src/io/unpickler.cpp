// A pickle virtual machine that builds inert values and never calls anything.
//
// Python's unpickler imports module.name for GLOBAL and calls it for REDUCE/NEWOBJ/INST/OBJ; here a
// global is only a name. Calls of a few known names become data (OrderedDict -> dict, torch's
// tensor rebuild functions -> checked tensors, ...), calls of harmless-looking classes become
// placeholder Objects, and everything else (os.system, builtins.eval, any unknown function) is
// refused. The stack, memo and marks are explicit, so nesting never recurses in C++.
//
// The cost of reading is bounded by Limits: every byte the reader keeps is charged to its memory
// budget as it is kept (copies included), and every step (an opcode, a byte copied, hashed or
// compared, an item visited) to its work budget. Work that a memo reference could repeat is done
// once per value: a dict key's identity is computed once and interned, an immutable bytes object
// passed to bytes() is the same object, a str encoded to bytes is encoded once.

#include "io/unpickler.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstring>
#include <map>
#include <string_view>
#include <unordered_set>

#include <fmt/format.h>

#include "io/bytes.h"

namespace rmt::io {

using pickle::Kind;
using pickle::Limits;
using pickle::Tree;
using pickle::Value;

namespace {

// ---------------------------------------------------------------------------------------------
// Which globals may be called, and as what.

std::string normalize_module(const std::string& module) {
  // Python 2 names and NumPy 2's private package, as Python 3's unpickler maps them.
  if (module == "__builtin__") return "builtins";
  if (module == "copy_reg") return "copyreg";
  if (module.rfind("numpy._core", 0) == 0) return "numpy.core" + module.substr(11);
  return module;
}

bool starts_with(const std::string& s, std::string_view prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

// Modules whose callables can run code, touch files or the network, or reach such things.
bool dangerous_module(const std::string& module) {
  static const std::unordered_set<std::string> top_level = {
      "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "_posixsubprocess", "sys",
      "shutil", "importlib", "imp", "pickle", "_pickle", "cPickle", "pickletools", "marshal",
      "socket", "_socket", "ssl", "runpy", "code", "codeop", "compileall", "py_compile",
      "ctypes", "_ctypes", "multiprocessing", "_multiprocessing", "pty", "webbrowser", "shelve",
      "dill", "cloudpickle", "joblib", "types", "operator", "_operator", "functools",
      "_functools", "io", "_io", "tempfile", "glob", "requests", "urllib", "urllib2", "urllib3",
      "http", "httplib", "ftplib", "smtplib", "telnetlib", "asyncio", "threading", "_thread",
      "thread", "signal", "pdb", "bdb", "timeit", "trace", "profile", "cProfile", "platform",
      "zipimport", "pkgutil", "site", "distutils", "setuptools", "pip", "commands", "popen2",
      "inspect", "gc", "sysconfig", "ensurepip", "venv", "pydoc", "idlelib", "xmlrpc", "mmap",
      "resource", "fcntl", "termios", "select", "selectors", "zipfile", "tarfile", "shlex",
      "logging", "atexit", "weakref", "copy", "nturl2path", "sqlite3", "dbm", "gzip", "bz2",
      "lzma", "fileinput", "linecache", "tokenize", "ast", "dis"};
  const std::string top = module.substr(0, module.find('.'));
  if (top_level.count(top)) return true;
  static const char* torch_prefixes[] = {"torch.hub", "torch.utils.cpp_extension", "torch.jit",
                                         "torch.package", "torch.ops", "torch._ops",
                                         "torch._dynamo", "torch.distributed", "torch.multiprocessing",
                                         "torch.cuda", "torch.backends", "torch.library",
                                         "torch._C._distributed", "numpy.lib.npyio",
                                         "numpy.testing", "numpy.distutils", "numpy.f2py"};
  for (const char* p : torch_prefixes) {
    const std::string_view prefix(p);
    if (starts_with(module, prefix) &&
        (module.size() == prefix.size() || module[prefix.size()] == '.')) {
      return true;
    }
  }
  return false;
}

// A name that looks like a class (CapWords, possibly nested: Outer.Inner), not a function or a
// dunder method.
bool class_like(const std::string& name) {
  if (name.empty()) return false;
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('.', start);
    if (end == std::string::npos) end = name.size();
    std::string_view part(name.data() + start, end - start);
    if (part.size() >= 2 && part[0] == '_' && part[1] == '_') return false;
    while (!part.empty() && part[0] == '_') part.remove_prefix(1);
    if (part.empty() || !(part[0] >= 'A' && part[0] <= 'Z')) return false;
    for (char c : part) {
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
    }
    start = end + 1;
    if (end == name.size()) break;
  }
  return true;
}

// Names we understand (turned into data) or know to be inert constructors.
const std::unordered_set<std::string>& known_callables() {
  static const std::unordered_set<std::string> names = {
      // torch
      "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2",
      "torch._utils._rebuild_tensor_v3", "torch._utils._rebuild_parameter",
      "torch._utils._rebuild_parameter_with_state", "torch._tensor._rebuild_from_type",
      "torch._tensor._rebuild_from_type_v2", "torch.Size", "torch.device",
      "torch.serialization._get_layout",
      // plain data
      "collections.OrderedDict", "collections.defaultdict", "collections.deque",
      "builtins.set", "builtins.frozenset", "builtins.list", "builtins.tuple", "builtins.dict",
      "builtins.bytearray", "builtins.bytes", "builtins.slice", "builtins.range",
      "builtins.complex", "builtins.object", "builtins.int", "builtins.float", "builtins.str",
      "builtins.bool", "_codecs.encode", "copyreg._reconstructor", "copyreg.__newobj__",
      "copyreg.__newobj_ex__",
      // numpy values found in training checkpoints
      "numpy.dtype", "numpy.ndarray", "numpy.core.multiarray._reconstruct",
      "numpy.core.multiarray.scalar", "numpy.random._pickle.__randomstate_ctor",
      "numpy.random._pickle.__generator_ctor", "numpy.random._pickle.__bit_generator_ctor",
      // dates
      "datetime.datetime", "datetime.date", "datetime.time", "datetime.timedelta",
      "datetime.timezone"};
  return names;
}

// Throws when calling module.name could do anything but build a value.
void check_callable(const std::string& module, const std::string& name, const char* opcode) {
  const std::string q = module + "." + name;
  if (known_callables().count(q)) return;
  const std::string shown = escape_and_cut(q);
  if (dangerous_module(module)) {
    fail(fmt::format("refusing to call {} ({}): it could run code; only data and tensors are read "
                     "from checkpoints",
                     shown, opcode));
  }
  if (module == "builtins") {
    const bool exception_class =
        class_like(name) && (name.find("Error") != std::string::npos ||
                             name.find("Exception") != std::string::npos ||
                             name.find("Warning") != std::string::npos);
    if (!exception_class) {
      fail(fmt::format("refusing to call {} ({}): builtins other than the plain data types could "
                       "run code",
                       shown, opcode));
    }
    return;
  }
  if (!class_like(name)) {
    fail(fmt::format("refusing to call {} ({}): an unknown function; only known data constructors "
                     "and classes are accepted",
                     shown, opcode));
  }
}

at::ScalarType storage_dtype(const std::string& module, const std::string& name, bool* known) {
  *known = true;
  if (module == "torch" || module == "torch.cuda" || module == "torch.storage") {
    static const std::pair<const char*, at::ScalarType> table[] = {
        {"FloatStorage", at::kFloat},    {"DoubleStorage", at::kDouble},
        {"HalfStorage", at::kHalf},      {"BFloat16Storage", at::kBFloat16},
        {"LongStorage", at::kLong},      {"IntStorage", at::kInt},
        {"ShortStorage", at::kShort},    {"CharStorage", at::kChar},
        {"ByteStorage", at::kByte},      {"BoolStorage", at::kBool},
        {"UntypedStorage", at::kByte},   {"_UntypedStorage", at::kByte}};
    for (const auto& [n, t] : table) {
      if (name == n) return t;
    }
  }
  *known = false;
  return at::kByte;
}

bool dtype_from_global(const Value& g, at::ScalarType* out) {
  if (g.kind != Kind::Global || g.text != "torch") return false;
  static const std::pair<const char*, at::ScalarType> table[] = {
      {"float32", at::kFloat},   {"float", at::kFloat},       {"float64", at::kDouble},
      {"double", at::kDouble},   {"float16", at::kHalf},      {"half", at::kHalf},
      {"bfloat16", at::kBFloat16}, {"int64", at::kLong},      {"long", at::kLong},
      {"int32", at::kInt},       {"int", at::kInt},           {"int16", at::kShort},
      {"short", at::kShort},     {"int8", at::kChar},         {"uint8", at::kByte},
      {"bool", at::kBool}};
  for (const auto& [n, t] : table) {
    if (g.name == n) {
      *out = t;
      return true;
    }
  }
  return false;
}

// Checks a strided view of `capacity` elements; throws naming what does not fit.
void check_view(int64_t offset, const std::vector<int64_t>& sizes,
                const std::vector<int64_t>& strides, int64_t capacity, size_t element_bytes,
                const std::string& storage_key) {
  // Sizes and strides come from the file: at most 8 of each go into a message.
  const std::string view = fmt::format("tensor of size {}, stride {}, storage offset {}",
                                       join_ints(sizes), join_ints(strides), offset);
  if (sizes.size() != strides.size()) {
    fail(fmt::format("{}: {} sizes but {} strides", view, sizes.size(), strides.size()));
  }
  if (sizes.size() > 64) fail(fmt::format("{}: more than 64 dimensions", view));
  if (offset < 0) fail(fmt::format("{}: negative storage offset", view));
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] < 0) fail(fmt::format("{}: negative size", view));
    if (strides[i] < 0) fail(fmt::format("{}: negative stride", view));
  }
  int64_t numel = 1;
  if (!element_count(sizes, &numel)) fail(fmt::format("{}: the element count overflows", view));
  int64_t bytes = 0;
  if (!mul_ok<int64_t>(numel, static_cast<int64_t>(element_bytes), &bytes)) {
    fail(fmt::format("{}: the element count overflows", view));
  }
  if (numel == 0) {
    if (offset > capacity) {
      fail(fmt::format("{}: the offset is past the end of storage '{}' of {} elements", view,
                       escape_and_cut(storage_key), capacity));
    }
    return;
  }
  int64_t last = offset;
  for (size_t i = 0; i < sizes.size(); ++i) {
    int64_t step = 0;
    if (!mul_ok<int64_t>(sizes[i] - 1, strides[i], &step) || !add_ok(last, step, &last)) {
      fail(fmt::format("{}: its extent overflows", view));
    }
  }
  if (last >= capacity) {
    fail(fmt::format("{} reaches element {}, past the end of storage '{}' of {} elements", view,
                     last, escape_and_cut(storage_key), capacity));
  }
}

// Decodes UTF-8 into code points; false if it is not valid UTF-8.
bool utf8_to_latin1(const std::string& text, std::string* out) {
  out->clear();
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      out->push_back(static_cast<char>(c));
      i += 1;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < text.size()) {
      const auto d = static_cast<unsigned char>(text[i + 1]);
      if ((d & 0xC0) != 0x80) return false;
      const unsigned cp = ((c & 0x1Fu) << 6) | (d & 0x3Fu);
      if (cp > 0xFF) return false;
      out->push_back(static_cast<char>(cp));
      i += 2;
    } else {
      return false;
    }
  }
  return true;
}

void append_utf8(std::string* out, uint32_t cp) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// ---------------------------------------------------------------------------------------------

class Unpickler {
 public:
  Unpickler(const uint8_t* data, size_t size, const Limits& limits)
      : data_(data), size_(size), limits_(limits), tree_(std::make_shared<Tree>()) {}

  PickleResult run();

 private:
  [[noreturn]] void error(const std::string& what) const {
    // Under 1 KB with the location kept: the parts from the file are already escaped and cut.
    fail(fmt::format("pickle: {} at byte {}", cut_message(what, 900), op_start_));
  }

  // --- input
  const uint8_t* take(uint64_t n) {
    if (n > size_ - pos_) error(fmt::format("truncated data: needs {} more bytes", n));
    const uint8_t* p = data_ + pos_;
    pos_ += static_cast<size_t>(n);
    return p;
  }
  uint8_t u8() { return *take(1); }
  template <typename T>
  T le() { return load_le<T>(take(sizeof(T))); }
  std::string line() {
    const void* nl = std::memchr(data_ + pos_, '\n', size_ - pos_);
    if (!nl) error("truncated data: a text argument without its newline");
    const size_t n = static_cast<const uint8_t*>(nl) - (data_ + pos_);
    spend(n);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n + 1;
    return s;
  }
  std::string bytes_arg(uint64_t n) {
    const uint8_t* p = take(n);
    spend(n);
    return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
  }

  // --- limits
  void spend(uint64_t steps) {
    work_ += steps;
    if (work_ > limits_.max_work) {
      error(fmt::format("reading it would take more than {} steps of work (the pickle repeats "
                        "costly operations far more than a checkpoint does)",
                        limits_.max_work));
    }
  }
  void charge(uint64_t bytes) {
    memory_ += bytes;
    if (memory_ > limits_.max_memory) {
      error(fmt::format("reading it would take more than {} bytes of memory", limits_.max_memory));
    }
    spend(bytes);
  }
  void nest(Value* container, const Value* child) {
    if (child->depth + 1 > container->depth) {
      container->depth = child->depth + 1;
      if (container->depth > limits_.max_depth) {
        error(fmt::format("values nested deeper than {} levels", limits_.max_depth));
      }
    }
  }
  void check_depth();

  // --- values
  static constexpr size_t kValueBytes = sizeof(Value) + 16;  // with the deque's share
  Value* make(Kind kind) {
    charge(kValueBytes);
    return tree_->add(kind);
  }
  Value* make_int(int64_t v) {
    Value* x = make(Kind::Int);
    x->integer = v;
    return x;
  }
  // Every string a Value keeps is charged here, whether read from the file or made by a call.
  Value* make_str(std::string s, Kind kind = Kind::Str) {
    charge(s.size());
    Value* x = make(kind);
    x->text = std::move(s);
    return x;
  }
  Value* make_container(Kind kind, std::vector<Value*>&& items) {
    Value* x = make(kind);
    charge(items.size() * sizeof(void*));
    x->items.reserve(items.size());
    for (Value* v : items) {
      x->items.push_back(v);
      nest(x, v);
    }
    return x;
  }

  // --- stack (its memory is charged at its high-water mark, as it is really used)
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(Value* v) {
    stack_.push_back(v);
    if (stack_.size() > stack_peak_) {
      stack_peak_ = stack_.size();
      charge(sizeof(void*));
    }
  }
  Value* pop() {
    if (stack_.size() <= floor()) error("stack underflow");
    Value* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  Value* top() {
    if (stack_.size() <= floor()) error("stack underflow");
    return stack_.back();
  }
  std::vector<Value*> pop_mark() {
    if (marks_.empty()) error("no MARK to pop to");
    const size_t m = marks_.back();
    marks_.pop_back();
    spend(stack_.size() - m);
    std::vector<Value*> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }

  // --- memo
  void memo_put(uint64_t index, Value* v) {
    auto [it, fresh] = memo_.insert_or_assign(index, v);
    (void)it;
    if (fresh) charge(48);
  }
  Value* memo_get(uint64_t index) {
    const auto it = memo_.find(index);
    if (it == memo_.end()) error(fmt::format("memo entry {} is missing", index));
    return it->second;
  }

  // --- containers
  uint64_t key_id(const Value* k);
  void set_item(Value* target, Value* key, Value* value);
  void append(Value* target, Value* item, const char* opcode);
  void add_to_set(Value* target, Value* item);
  int64_t as_int(const Value* v, const char* what) const {
    if (v->kind == Kind::Int) return v->integer;
    if (v->kind == Kind::Bool) return v->boolean ? 1 : 0;
    error(fmt::format("{} should be an int, found {}", what, v->type_name()));
  }
  std::vector<int64_t> int_tuple(const Value* v, const char* what) {
    if (v->kind != Kind::Tuple && v->kind != Kind::List) {
      error(fmt::format("{} should be a tuple of ints, found {}", what, v->type_name()));
    }
    charge(v->items.size() * sizeof(int64_t));
    std::vector<int64_t> out;
    out.reserve(v->items.size());
    for (const Value* x : v->items) out.push_back(as_int(x, what));
    return out;
  }

  // --- numbers
  Value* decode_long(const uint8_t* p, size_t n);
  int64_t parse_decimal(const std::string& text, const char* opcode);
  Value* text_int(const std::string& text, const char* opcode);
  double parse_float(const std::string& text);
  std::string unescape_string(const std::string& quoted);
  std::string raw_unicode_escape(const std::string& text);

  // --- calls
  Value* global(std::string module, std::string name) {
    Value* g = make(Kind::Global);
    g->text = normalize_module(module);
    g->name = std::move(name);
    charge(g->text.size() + g->name.size());
    return g;
  }
  Value* call(Value* callable, Value* args, Value* kwargs, const char* opcode);
  // check_callable, its refusal located like every other error ("pickle: ... at byte N").
  void checked_callable(const std::string& module, const std::string& name, const char* opcode) {
    try {
      check_callable(module, name, opcode);
    } catch (const std::runtime_error& e) {
      error(e.what());
    }
  }
  Value* placeholder(const Value* cls, Value* args, Value* kwargs);
  Value* rebuild_tensor(const std::string& function, const Value* args);
  Value* persistent_load(Value* pid);
  void build(Value* target, Value* state);
  Value* numpy_scalar(const Value* args);
  Value* to_bytes(const Value* text, bool latin1);
  static const std::vector<const Value*>* iterable_items(const Value* v) {
    if (v->kind == Kind::List || v->kind == Kind::Tuple || v->kind == Kind::Set ||
        v->kind == Kind::FrozenSet) {
      return &v->items;
    }
    return nullptr;
  }

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  size_t op_start_ = 0;
  Limits limits_;
  uint64_t memory_ = 0;
  uint64_t work_ = 0;
  std::shared_ptr<Tree> tree_;
  std::vector<Value*> stack_;
  size_t stack_peak_ = 0;
  std::vector<size_t> marks_;
  size_t marks_peak_ = 0;
  std::unordered_map<uint64_t, Value*> memo_;

  // Dict keys. Python replaces the value of a key that is already there, comparing keys by
  // value: each key Value gets an id once (equal values, the same id), interned in ordered maps
  // (comparisons, so no hash a file could make collide), and a dict's entries are found by
  // (dict, key id). A key referenced a million times through the memo costs one lookup each.
  struct DictSlot {
    const Value* dict;
    uint64_t key;
    bool operator==(const DictSlot& o) const { return dict == o.dict && key == o.key; }
  };
  struct DictSlotHash {
    size_t operator()(const DictSlot& s) const {
      uint64_t x = reinterpret_cast<uintptr_t>(s.dict) ^ (s.key * 0x9E3779B97F4A7C15ull);
      x ^= x >> 31;  // splitmix64's finalizer: neither input is chosen by the file
      x *= 0xBF58476D1CE4E5B9ull;
      x ^= x >> 29;
      return static_cast<size_t>(x);
    }
  };
  std::unordered_map<DictSlot, size_t, DictSlotHash> dict_slots_;  // -> index in entries
  std::unordered_map<const Value*, uint64_t> key_ids_;
  std::map<int64_t, uint64_t> int_keys_;     // ints, bools and integral floats (1 == 1.0 == True)
  std::map<uint64_t, uint64_t> float_keys_;  // other floats, by their bits
  std::map<std::pair<Kind, std::string_view>, uint64_t> text_keys_;  // str, bytes, big ints
  uint64_t next_key_id_ = 1;
  // str -> bytes conversions already made (latin-1 and UTF-8 apart): made once per str.
  std::map<std::pair<const Value*, bool>, Value*> encoded_;

  Value* none_ = nullptr;
  Value* true_ = nullptr;
  Value* false_ = nullptr;
  PickleResult result_;
};

uint64_t Unpickler::key_id(const Value* k) {
  const auto cached = key_ids_.find(k);
  if (cached != key_ids_.end()) return cached->second;
  uint64_t id = 0;
  auto intern = [&](auto& map, const auto& content) {
    const auto [it, fresh] = map.emplace(content, next_key_id_);
    if (fresh) {
      ++next_key_id_;
      charge(96);
    }
    return it->second;
  };
  switch (k->kind) {
    case Kind::None: id = intern(text_keys_, std::make_pair(Kind::None, std::string_view())); break;
    case Kind::Bool: id = intern(int_keys_, int64_t(k->boolean ? 1 : 0)); break;
    case Kind::Int: id = intern(int_keys_, k->integer); break;
    case Kind::Float:
      if (std::isfinite(k->real) && std::floor(k->real) == k->real && std::fabs(k->real) < 9.0e18) {
        id = intern(int_keys_, static_cast<int64_t>(k->real));
      } else {
        uint64_t bits = 0;
        std::memcpy(&bits, &k->real, sizeof(bits));
        id = intern(float_keys_, bits);
      }
      break;
    case Kind::Str:
    case Kind::Bytes:
    case Kind::BigInt:
      // The text stays where it is (Values never move): the map holds a view of it. Comparing
      // costs at most the key's length per level of the map.
      spend(k->text.size() * 8);
      id = intern(text_keys_, std::make_pair(k->kind, std::string_view(k->text)));
      break;
    default:
      id = next_key_id_++;  // tuples, objects, ...: by identity
  }
  key_ids_.emplace(k, id);
  charge(48);
  return id;
}

void Unpickler::set_item(Value* target, Value* key, Value* value) {
  if (target->kind != Kind::Dict && target->kind != Kind::Object) {
    error(fmt::format("setting an item of a {}, which is not a dict", target->type_name()));
  }
  spend(1);
  const DictSlot slot{target, key_id(key)};
  const auto it = dict_slots_.find(slot);
  if (it != dict_slots_.end()) {
    target->entries[it->second].second = value;  // Python keeps the first position
  } else {
    charge(64 + 2 * sizeof(std::pair<const Value*, const Value*>));
    dict_slots_.emplace(slot, target->entries.size());
    target->entries.emplace_back(key, value);
  }
  nest(target, key);
  nest(target, value);
}

void Unpickler::append(Value* target, Value* item, const char* opcode) {
  if (target->kind != Kind::List && target->kind != Kind::Object) {
    error(fmt::format("{} on a {}, which is not a list", opcode, target->type_name()));
  }
  charge(2 * sizeof(void*));  // with the vector's spare capacity
  target->items.push_back(item);
  nest(target, item);
}

void Unpickler::add_to_set(Value* target, Value* item) {
  if (target->kind != Kind::Set && target->kind != Kind::Object) {
    error(fmt::format("ADDITEMS on a {}, which is not a set", target->type_name()));
  }
  charge(2 * sizeof(void*));
  target->items.push_back(item);
  nest(target, item);
}

// The true nesting depth of every value, whatever order the containers were filled in (a list
// filled after it was put in another makes that one deeper too, which nest() cannot see):
// Tarjan's strongly connected components, iterative, then the longest chain of components.
void Unpickler::check_depth() {
  const Tree& tree = *tree_;
  const size_t n = tree.size();
  charge(n * 24);
  constexpr uint32_t kUnseen = UINT32_MAX;
  std::vector<uint32_t> order(n, kUnseen), low(n, 0), component_depth;
  std::vector<uint32_t> component(n, kUnseen);
  std::vector<uint32_t> scc_stack;
  struct Frame {
    uint32_t value;
    size_t next_child;
  };
  std::vector<Frame> frames;
  uint32_t counter = 0;
  auto child = [&](const Value& v, size_t k) -> const Value* {
    if (k < v.items.size()) return v.items[k];
    k -= v.items.size();
    if (k < 2 * v.entries.size()) return k % 2 ? v.entries[k / 2].second : v.entries[k / 2].first;
    k -= 2 * v.entries.size();
    if (k == 0) return v.args;
    if (k == 1) return v.kwargs;
    if (k == 2) return v.state;
    return nullptr;
  };
  auto children = [&](const Value& v) { return v.items.size() + 2 * v.entries.size() + 3; };
  for (size_t start = 0; start < n; ++start) {
    if (order[start] != kUnseen) continue;
    frames.push_back({static_cast<uint32_t>(start), 0});
    order[start] = low[start] = counter++;
    scc_stack.push_back(static_cast<uint32_t>(start));
    while (!frames.empty()) {
      Frame& f = frames.back();
      const Value& v = tree[f.value];
      if (f.next_child < children(v)) {
        const Value* c = child(v, f.next_child++);
        spend(1);
        if (!c) continue;
        const uint32_t ci = c->index;
        if (order[ci] == kUnseen) {
          order[ci] = low[ci] = counter++;
          scc_stack.push_back(ci);
          frames.push_back({ci, 0});
        } else if (component[ci] == kUnseen) {
          low[f.value] = std::min(low[f.value], order[ci]);  // on the stack: same component
        }
        continue;
      }
      const uint32_t vi = f.value;
      frames.pop_back();
      if (!frames.empty()) low[frames.back().value] = std::min(low[frames.back().value], low[vi]);
      if (low[vi] != order[vi]) continue;
      // vi roots a component: every component its members reach is finished already.
      const auto id = static_cast<uint32_t>(component_depth.size());
      size_t members = 0;
      for (size_t k = scc_stack.size(); k-- > 0;) {
        component[scc_stack[k]] = id;
        ++members;
        if (scc_stack[k] == vi) break;
      }
      uint32_t depth = 0;
      for (size_t k = scc_stack.size() - members; k < scc_stack.size(); ++k) {
        const Value& m = tree[scc_stack[k]];
        for (size_t j = 0, count = children(m); j < count; ++j) {
          const Value* c = child(m, j);
          if (!c) continue;
          const uint32_t cc = component[c->index];
          depth = std::max(depth, cc == id ? 1u : component_depth[cc] + 1);
        }
      }
      spend(members);
      component_depth.push_back(depth);
      if (depth > limits_.max_depth) {
        error(fmt::format("values nested deeper than {} levels", limits_.max_depth));
      }
      for (size_t k = scc_stack.size() - members; k < scc_stack.size(); ++k) {
        tree_->at(scc_stack[k]).depth = depth;
      }
      scc_stack.resize(scc_stack.size() - members);
    }
  }
}

Value* Unpickler::decode_long(const uint8_t* p, size_t n) {
  if (n == 0) return make_int(0);
  const bool negative = p[n - 1] & 0x80;
  // Fits in int64 when every byte past the 8th is the sign extension.
  bool fits = true;
  for (size_t i = 8; i < n; ++i) {
    if (p[i] != (negative ? 0xFF : 0x00)) fits = false;
  }
  if (fits && n > 8 && ((p[7] & 0x80) != 0) != negative) fits = false;
  if (fits) {
    uint64_t u = negative ? ~uint64_t(0) : 0;
    for (size_t i = 0; i < std::min<size_t>(n, 8); ++i) {
      u &= ~(uint64_t(0xFF) << (8 * i));
      u |= uint64_t(p[i]) << (8 * i);
    }
    int64_t v;
    std::memcpy(&v, &u, sizeof(v));
    return make_int(v);
  }
  return make_str(std::string(reinterpret_cast<const char*>(p), n), Kind::BigInt);
}

int64_t Unpickler::parse_decimal(const std::string& text, const char* opcode) {
  std::string_view s(text);
  if (!s.empty() && (s.back() == 'L')) s.remove_suffix(1);  // Python 2 longs: 12L
  while (!s.empty() && (s.back() == ' ' || s.back() == '\r')) s.remove_suffix(1);
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  int64_t v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || r.ec != std::errc() || r.ptr != s.data() + s.size()) {
    error(fmt::format("{}: '{}' is not an integer that fits 64 bits", opcode,
                      escape_and_cut(text, 60)));
  }
  return v;
}

// INT and LONG (protocol 0): decimal text of any size, as Python's int() takes it (which refuses
// more than 4300 digits, bounding the quadratic conversion below).
Value* Unpickler::text_int(const std::string& text, const char* opcode) {
  std::string_view s(text);
  if (!s.empty() && s.back() == 'L') s.remove_suffix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\r')) s.remove_suffix(1);
  int64_t small = 0;
  std::string_view digits = s;
  if (!digits.empty() && digits.front() == '+') digits.remove_prefix(1);
  const auto r = std::from_chars(digits.data(), digits.data() + digits.size(), small);
  if (!digits.empty() && r.ec == std::errc() && r.ptr == digits.data() + digits.size()) {
    return make_int(small);
  }
  const bool negative = !digits.empty() && digits.front() == '-';
  if (negative) digits.remove_prefix(1);
  if (digits.empty() || digits.size() > 4300 ||
      digits.find_first_not_of("0123456789") != std::string_view::npos) {
    error(fmt::format("{}: '{}' is not an integer", opcode, escape_and_cut(text, 60)));
  }
  // Quadratic in the digits, as in Python: each digit is a pass over the bytes so far.
  spend(uint64_t(digits.size()) * (digits.size() / 2 + 1));
  std::vector<uint8_t> bytes{0};  // magnitude, little-endian
  for (char c : digits) {
    unsigned carry = static_cast<unsigned>(c - '0');
    for (uint8_t& b : bytes) {
      const unsigned v = b * 10u + carry;
      b = static_cast<uint8_t>(v & 0xFF);
      carry = v >> 8;
    }
    if (carry) bytes.push_back(static_cast<uint8_t>(carry));
  }
  bytes.push_back(0);  // room for the sign bit
  if (negative) {      // two's complement
    unsigned carry = 1;
    for (uint8_t& b : bytes) {
      const unsigned v = static_cast<uint8_t>(~b) + carry;
      b = static_cast<uint8_t>(v & 0xFF);
      carry = v >> 8;
    }
  }
  return decode_long(bytes.data(), bytes.size());
}

double Unpickler::parse_float(const std::string& text) {
  std::string_view s(text);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\r')) s.remove_suffix(1);
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  double v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || r.ec != std::errc() || r.ptr != s.data() + s.size()) {
    error(fmt::format("FLOAT: '{}' is not a number", escape_and_cut(text, 60)));
  }
  return v;
}

// STRING's argument: a Python 2 repr such as 'it\'s' or "a\x00b".
std::string Unpickler::unescape_string(const std::string& quoted) {
  std::string_view s(quoted);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\r')) s.remove_suffix(1);
  if (s.size() < 2 || (s.front() != '\'' && s.front() != '"') || s.back() != s.front()) {
    error("STRING: the argument is not quoted");
  }
  s = s.substr(1, s.size() - 2);
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    const char c = s[++i];
    switch (c) {
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'v': out += '\v'; break;
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case '\n': break;
      case 'x': {
        if (i + 2 < s.size() && hex_digit(s[i + 1]) >= 0 && hex_digit(s[i + 2]) >= 0) {
          out += static_cast<char>(hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2]));
          i += 2;
        } else {
          error("STRING: a bad \\x escape");
        }
        break;
      }
      default:
        if (c >= '0' && c <= '7') {
          int v = c - '0';
          for (int k = 0; k < 2 && i + 1 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '7'; ++k) {
            v = v * 8 + (s[++i] - '0');
          }
          out += static_cast<char>(v & 0xFF);
        } else {
          out += '\\';
          out += c;
        }
    }
  }
  return out;
}

// UNICODE's argument: latin-1 text with \uXXXX and \UXXXXXXXX escapes; returned as UTF-8.
std::string Unpickler::raw_unicode_escape(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '\\' && i + 1 < text.size() && (text[i + 1] == 'u' || text[i + 1] == 'U')) {
      const size_t digits = text[i + 1] == 'u' ? 4 : 8;
      if (i + 2 + digits > text.size()) error("UNICODE: a truncated escape");
      uint32_t cp = 0;
      for (size_t k = 0; k < digits; ++k) {
        const int d = hex_digit(text[i + 2 + k]);
        if (d < 0) error("UNICODE: a bad escape");
        cp = cp * 16 + static_cast<uint32_t>(d);
      }
      if (cp > 0x10FFFF) error("UNICODE: a code point past U+10FFFF");
      append_utf8(&out, cp);
      i += 1 + digits;
    } else {
      append_utf8(&out, c);
    }
  }
  return out;
}

Value* Unpickler::placeholder(const Value* cls, Value* args, Value* kwargs) {
  charge(cls->text.size() + cls->name.size());
  Value* obj = make(Kind::Object);
  obj->text = cls->text;
  obj->name = cls->name;
  obj->args = args;
  obj->kwargs = kwargs;
  if (args) nest(obj, args);
  if (kwargs) nest(obj, kwargs);
  return obj;
}

Value* Unpickler::persistent_load(Value* pid) {
  const char* expected = "a persistent id ('storage', storage type, key, location, numel[, view])";
  if (pid->kind != Kind::Tuple || pid->items.empty() || !pid->items[0]->is_str("storage")) {
    error(fmt::format("unsupported persistent id: expected {}, found {}", expected,
                      pickle::render(*pid, {2, 6, 40, 300})));
  }
  const auto& t = pid->items;
  if (t.size() != 5 && t.size() != 6) {
    error(fmt::format("persistent id with {} fields; expected {}", t.size(), expected));
  }
  const Value* type = t[1];
  if (type->kind != Kind::Global) {
    error(fmt::format("persistent id: the storage type is a {}, expected a global",
                      type->type_name()));
  }
  bool known = false;
  const at::ScalarType dtype = storage_dtype(type->text, type->name, &known);
  if (!known) {
    error(fmt::format("unknown storage type {} (supported: Float, Double, Half, BFloat16, Long, "
                      "Int, Short, Char, Byte, Bool and Untyped storages)",
                      type->shown_name()));
  }
  if (t[2]->kind != Kind::Str) error("persistent id: the storage key is not a string");
  if (t[3]->kind != Kind::Str) error("persistent id: the storage location is not a string");
  const int64_t numel = as_int(t[4], "the storage's element count");
  if (numel < 0) error("persistent id: negative storage element count");
  const size_t elem = element_size(dtype);
  int64_t nbytes = 0;
  if (!mul_ok<int64_t>(numel, static_cast<int64_t>(elem), &nbytes)) {
    error("persistent id: the storage size overflows");
  }

  Value* v = make(Kind::Storage);
  auto info = std::make_shared<pickle::StorageInfo>();
  info->key = t[2]->text;
  info->type_name = type->qualified_name();
  info->location = t[3]->text;
  info->dtype = dtype;
  info->numel = numel;
  info->root_numel = numel;
  charge(info->key.size() + info->type_name.size() + info->location.size() + sizeof(*info) + 32);

  // Legacy files may name a view of a bigger root storage: (view key, offset, size).
  if (t.size() == 6 && t[5]->kind != Kind::None) {
    const Value* view = t[5];
    if (view->kind != Kind::Tuple || view->items.size() != 3) {
      error("persistent id: the view metadata should be (key, offset, size)");
    }
    const int64_t offset = as_int(view->items[1], "the storage view's offset");
    const int64_t size = as_int(view->items[2], "the storage view's size");
    int64_t end = 0;
    if (offset < 0 || size < 0 || !add_ok(offset, size, &end) || end > numel) {
      error(fmt::format("persistent id: the storage view [{}, +{}) lies outside storage '{}' of {} "
                        "elements",
                        offset, size, escape_and_cut(info->key), numel));
    }
    info->view_offset = offset;
    info->numel = size;
  }

  // One record per key: every id naming it must agree on its type and size.
  const auto found = result_.record_index.find(info->key);
  if (found == result_.record_index.end()) {
    charge(2 * info->key.size() + info->type_name.size() + 128);
    result_.record_index.emplace(info->key, result_.records.size());
    result_.records.push_back(
        {info->key, info->type_name, dtype, numel, static_cast<uint64_t>(nbytes)});
  } else {
    const StorageRecord& r = result_.records[found->second];
    if (r.dtype != dtype || r.numel != numel) {
      error(fmt::format("storage '{}' is named twice, as {} of {} elements and as {} of {}",
                        escape_and_cut(info->key), escape_and_cut(r.type_name, 60), r.numel,
                        escape_and_cut(info->type_name, 60), numel));
    }
  }
  v->storage = std::move(info);
  return v;
}

Value* Unpickler::rebuild_tensor(const std::string& function, const Value* args) {
  const auto& a = args->items;
  const bool v1 = function == "_rebuild_tensor";
  const bool v3 = function == "_rebuild_tensor_v3";
  const size_t min_args = v1 ? 4 : (v3 ? 7 : 4);
  if (a.size() < min_args || a.size() > (v3 ? 8 : 7)) {
    error(fmt::format("torch._utils.{} called with {} arguments", function, a.size()));
  }
  const Value* storage = a[0];
  if (storage->kind != Kind::Storage) {
    error(fmt::format("torch._utils.{}: the first argument is a {}, expected a storage", function,
                      storage->type_name()));
  }
  const auto& st = *storage->storage;
  auto info = std::make_shared<pickle::TensorInfo>();
  info->storage = storage;
  info->dtype = st.dtype;
  info->storage_offset = as_int(a[1], "the tensor's storage offset");
  info->sizes = int_tuple(a[2], "the tensor's size");
  info->strides = int_tuple(a[3], "the tensor's stride");
  if (!v1 && a.size() > 4) {
    if (a[4]->kind != Kind::Bool) {
      error(fmt::format("torch._utils.{}: requires_grad is not a bool", function));
    }
    info->requires_grad = a[4]->boolean;
  }
  if (v3 && !dtype_from_global(*a[6], &info->dtype)) {
    error(fmt::format("torch._utils._rebuild_tensor_v3: unsupported dtype {}", a[6]->type_name()));
  }
  // With what loading it will take: the at::Tensor view made for it (TensorImpl, sizes, strides).
  charge(sizeof(*info) + 16 * info->sizes.size() + 1024);

  // Capacity in elements of the tensor's dtype (differs from the storage's for v3 only).
  const size_t elem = element_size(info->dtype);
  int64_t capacity = st.numel;
  if (info->dtype != st.dtype) {
    const uint64_t bytes = static_cast<uint64_t>(st.numel) * element_size(st.dtype);
    if (st.view_offset != 0) error("a legacy storage view read as another dtype");
    capacity = static_cast<int64_t>(bytes / elem);
  }
  try {
    check_view(info->storage_offset, info->sizes, info->strides, capacity, elem, st.key);
  } catch (const std::exception& e) {
    error(e.what());
  }
  Value* v = make(Kind::Tensor);
  v->tensor = std::move(info);
  nest(v, args);
  result_.tensors.push_back(v);
  return v;
}

// _codecs.encode(text, 'latin1' or 'utf-8'): the bytes, made once per text and encoding; null
// when the text has characters latin-1 cannot hold.
Value* Unpickler::to_bytes(const Value* text, bool latin1) {
  const auto key = std::make_pair(text, latin1);
  const auto found = encoded_.find(key);
  if (found != encoded_.end()) return found->second;
  spend(text->text.size());
  Value* b = nullptr;
  if (!latin1) {
    b = make_str(text->text, Kind::Bytes);
  } else {
    std::string raw;
    if (utf8_to_latin1(text->text, &raw)) b = make_str(std::move(raw), Kind::Bytes);
  }
  charge(96);
  encoded_.emplace(key, b);
  return b;
}

Value* Unpickler::numpy_scalar(const Value* args) {
  // numpy.core.multiarray.scalar(dtype, bytes): a NumPy scalar such as a float64 metric.
  const auto& a = args->items;
  if (a.size() != 2 || a[0]->kind != Kind::Object || a[0]->text != "numpy" || a[0]->name != "dtype" ||
      !a[0]->args || a[0]->args->items.empty() || a[0]->args->items[0]->kind != Kind::Str ||
      a[1]->kind != Kind::Bytes) {
    return nullptr;
  }
  const std::string& code = a[0]->args->items[0]->text;
  const std::string& raw = a[1]->text;
  bool big_endian = false;
  if (a[0]->state && a[0]->state->kind == Kind::Tuple && a[0]->state->items.size() > 1 &&
      a[0]->state->items[1]->kind == Kind::Str) {
    big_endian = a[0]->state->items[1]->text == ">";
  }
  uint8_t b[8] = {0};
  if (raw.size() > 8) return nullptr;
  for (size_t i = 0; i < raw.size(); ++i) {
    b[i] = static_cast<uint8_t>(raw[big_endian ? raw.size() - 1 - i : i]);
  }
  auto need = [&](size_t n) { return raw.size() == n; };
  if (code == "f8" && need(8)) {
    Value* v = make(Kind::Float);
    v->real = load_le<double>(b);
    return v;
  }
  if (code == "f4" && need(4)) {
    Value* v = make(Kind::Float);
    v->real = load_le<float>(b);
    return v;
  }
  if (code == "i8" && need(8)) return make_int(load_le<int64_t>(b));
  if (code == "i4" && need(4)) return make_int(load_le<int32_t>(b));
  if (code == "i2" && need(2)) return make_int(load_le<int16_t>(b));
  if (code == "i1" && need(1)) return make_int(static_cast<int8_t>(b[0]));
  if (code == "u1" && need(1)) return make_int(b[0]);
  if (code == "u2" && need(2)) return make_int(load_le<uint16_t>(b));
  if (code == "u4" && need(4)) return make_int(load_le<uint32_t>(b));
  if (code == "b1" && need(1)) return b[0] ? true_ : false_;
  return nullptr;
}

Value* Unpickler::call(Value* callable, Value* args, Value* kwargs, const char* opcode) {
  if (callable->kind != Kind::Global) {
    error(fmt::format("{}: refusing to call a {} (only globals can be called)", opcode,
                      callable->type_name()));
  }
  if (args->kind != Kind::Tuple && args->kind != Kind::List) {
    error(fmt::format("{}: the arguments of {} are a {}, not a tuple", opcode,
                      callable->shown_name(), args->type_name()));
  }
  if (kwargs && kwargs->kind != Kind::Dict) {
    error(fmt::format("{}: the keyword arguments are not a dict", opcode));
  }
  const std::string& module = callable->text;
  const std::string& name = callable->name;
  if (module == "torch._utils" && starts_with(name, "_rebuild_") && !known_callables().count(module + "." + name)) {
    error(fmt::format("unsupported tensor kind: {} (only dense CPU-storable tensors are read)",
                      callable->shown_name()));
  }
  checked_callable(module, name, opcode);
  const std::string q = module + "." + name;
  const auto& a = args->items;

  if (module == "torch._utils" && starts_with(name, "_rebuild_tensor")) {
    return rebuild_tensor(name, args);
  }
  if (q == "torch._utils._rebuild_parameter" || q == "torch._utils._rebuild_parameter_with_state") {
    if (a.size() < 3 || a[0]->kind != Kind::Tensor) {
      error(fmt::format("{}: expected (tensor, requires_grad, hooks, ...)", q));
    }
    Value* data = const_cast<Value*>(a[0]);
    if (a[1]->kind == Kind::Bool) data->tensor->requires_grad = a[1]->boolean;
    return data;
  }
  if (q == "torch._tensor._rebuild_from_type_v2" || q == "torch._tensor._rebuild_from_type") {
    // (func, type, args, state): only for the tensor rebuild functions, never recursively.
    if (a.size() != 4 || a[0]->kind != Kind::Global || a[0]->text != "torch._utils" ||
        !starts_with(a[0]->name, "_rebuild_") ||
        (a[2]->kind != Kind::Tuple && a[2]->kind != Kind::List)) {
      error(fmt::format("{}: expected a torch._utils._rebuild_* function and its arguments", q));
    }
    Value* inner = call(const_cast<Value*>(a[0]), const_cast<Value*>(a[2]), nullptr, opcode);
    if (inner->kind != Kind::Tensor) error(fmt::format("{} did not give a tensor", q));
    return inner;
  }
  if (q == "collections.OrderedDict" || q == "builtins.dict" || q == "collections.defaultdict") {
    Value* d = make(Kind::Dict);
    // OrderedDict(pairs) or dict(mapping); defaultdict(factory[, mapping]) ignores its factory.
    const Value* source = nullptr;
    if (q == "collections.defaultdict") {
      if (a.size() > 1) source = a[1];
    } else if (!a.empty()) {
      source = a[0];
    }
    if (source && source->kind == Kind::Dict) {
      for (const auto& [k, v] : source->entries) set_item(d, const_cast<Value*>(k), const_cast<Value*>(v));
    } else if (source && iterable_items(source)) {
      spend(iterable_items(source)->size());
      for (const Value* pair : *iterable_items(source)) {
        const auto* kv = iterable_items(pair);
        if (!kv || kv->size() != 2) error(fmt::format("{}: an item is not a (key, value) pair", q));
        set_item(d, const_cast<Value*>((*kv)[0]), const_cast<Value*>((*kv)[1]));
      }
    } else if (source && source->kind != Kind::None) {
      return placeholder(callable, args, kwargs);
    }
    return d;
  }
  if (q == "builtins.set" || q == "builtins.frozenset" || q == "builtins.list" ||
      q == "builtins.tuple" || q == "torch.Size") {
    const Kind kind = q == "builtins.set" ? Kind::Set
                      : q == "builtins.frozenset" ? Kind::FrozenSet
                      : q == "builtins.list" ? Kind::List : Kind::Tuple;
    std::vector<Value*> items;
    if (!a.empty()) {
      const auto* source = iterable_items(a[0]);
      if (!source) return placeholder(callable, args, kwargs);
      if (a[0]->kind == Kind::Tuple && kind == Kind::Tuple) return const_cast<Value*>(a[0]);
      charge(source->size() * sizeof(void*));  // the copy below (make_container charges its own)
      for (const Value* x : *source) items.push_back(const_cast<Value*>(x));
    }
    return make_container(kind, std::move(items));
  }
  if (q == "_codecs.encode" || q == "builtins.bytes" || q == "builtins.bytearray") {
    // Protocol 2 pickles bytes as _codecs.encode(latin-1 text, 'latin1').
    if (a.empty()) return make_str("", Kind::Bytes);
    // bytes are immutable (and a bytearray is as inert as they are here): the same object, so
    // a large one referenced a million times is never copied.
    if (a[0]->kind == Kind::Bytes) return const_cast<Value*>(a[0]);
    if (a[0]->kind == Kind::Str && a.size() == 2 && a[1]->kind == Kind::Str &&
        a[1]->text.size() <= 16) {
      std::string enc = a[1]->text;
      std::transform(enc.begin(), enc.end(), enc.begin(), ::tolower);
      const bool latin1 = enc == "latin1" || enc == "latin-1" || enc == "iso-8859-1" ||
                          enc == "iso8859-1";
      if (latin1 || enc == "utf-8" || enc == "utf8" || enc == "ascii") {
        if (Value* b = to_bytes(a[0], latin1)) return b;
      }
    }
    if (a[0]->kind == Kind::List && q != "_codecs.encode") {
      spend(4 * a[0]->items.size());  // an item checked and copied: a few nanoseconds
      std::string raw;
      for (const Value* x : a[0]->items) {
        if (x->kind != Kind::Int || x->integer < 0 || x->integer > 255) {
          return placeholder(callable, args, kwargs);
        }
        raw += static_cast<char>(x->integer);
      }
      return make_str(std::move(raw), Kind::Bytes);
    }
    return placeholder(callable, args, kwargs);
  }
  if (q == "copyreg._reconstructor") {
    // _reconstructor(cls, base, state): an instance of cls, created without __init__.
    if (a.size() != 3 || a[0]->kind != Kind::Global) {
      error(fmt::format("{}: expected (class, base, state)", q));
    }
    checked_callable(a[0]->text, a[0]->name, opcode);
    std::vector<Value*> ctor;
    if (a[2]->kind != Kind::None) ctor.push_back(const_cast<Value*>(a[2]));
    return placeholder(a[0], make_container(Kind::Tuple, std::move(ctor)), nullptr);
  }
  if (q == "copyreg.__newobj__" || q == "copyreg.__newobj_ex__") {
    if (a.empty() || a[0]->kind != Kind::Global) {
      error(fmt::format("{}: expected a class first", q));
    }
    if (q == "copyreg.__newobj__") {
      std::vector<Value*> rest;
      for (size_t i = 1; i < a.size(); ++i) rest.push_back(const_cast<Value*>(a[i]));
      Value* inner = make_container(Kind::Tuple, std::move(rest));
      if (a[0]->text == "copyreg") error(fmt::format("{} of itself", q));
      return call(const_cast<Value*>(a[0]), inner, nullptr, opcode);
    }
    if (a.size() != 3 || a[0]->text == "copyreg") {
      error(fmt::format("{}: expected (class, args, kwargs)", q));
    }
    return call(const_cast<Value*>(a[0]), const_cast<Value*>(a[1]),
                a[2]->kind == Kind::Dict ? const_cast<Value*>(a[2]) : nullptr, opcode);
  }
  if (q == "numpy.core.multiarray.scalar") {
    if (Value* v = numpy_scalar(args)) return v;
  }
  return placeholder(callable, args, kwargs);
}

void Unpickler::build(Value* target, Value* state) {
  switch (target->kind) {
    case Kind::Object:
    case Kind::Dict:
    case Kind::List:
    case Kind::Set:
    case Kind::Tensor:
      if (state->kind == Kind::None) return;
      target->state = state;  // recorded, never applied through __setstate__
      nest(target, state);
      return;
    case Kind::Global:
      error(fmt::format("BUILD on the global {} refused (it would set state on a class or "
                        "function)",
                        target->shown_name()));
    default:
      error(fmt::format("BUILD on a {}, which has no state", target->type_name()));
  }
}

PickleResult Unpickler::run() {
  none_ = make(Kind::None);
  true_ = make(Kind::Bool);
  true_->boolean = true;
  false_ = make(Kind::Bool);

  while (true) {
    op_start_ = pos_;
    if (pos_ >= size_) {
      fail(fmt::format("pickle: the data ends before STOP (truncated) at byte {}", pos_));
    }
    const uint8_t op = u8();
    spend(1);
    switch (op) {
      case 0x80: {  // PROTO
        const uint8_t proto = u8();
        if (proto > 5) error(fmt::format("unsupported pickle protocol {}", proto));
        break;
      }
      case 0x95: {  // FRAME: a length prefix for the opcodes that follow; nothing to do.
        const uint64_t n = le<uint64_t>();
        if (n > size_ - pos_) error(fmt::format("FRAME of {} bytes past the end", n));
        break;
      }
      case '.': {  // STOP
        Value* root = pop();
        check_depth();
        tree_->set_root(root);
        result_.tree = tree_;
        result_.end = pos_;
        result_.memory = memory_;
        result_.work = work_;
        return std::move(result_);
      }
      case '(':  // MARK
        marks_.push_back(stack_.size());
        if (marks_.size() > marks_peak_) {
          marks_peak_ = marks_.size();
          charge(sizeof(size_t));
        }
        if (marks_.size() > limits_.max_depth) {
          error(fmt::format("marks nested deeper than {} levels", limits_.max_depth));
        }
        break;
      case '0':  // POP
        if (stack_.size() > floor()) {
          stack_.pop_back();
        } else {
          pop_mark();
        }
        break;
      case '1':  // POP_MARK
        pop_mark();
        break;
      case '2':  // DUP
        push(top());
        break;

      // --- constants and numbers
      case 'N': push(none_); break;
      case 0x88: push(true_); break;
      case 0x89: push(false_); break;
      case 'I': {  // INT (text); "00"/"01" are False/True
        const std::string s = line();
        if (s == "00") {
          push(false_);
        } else if (s == "01") {
          push(true_);
        } else {
          push(text_int(s, "INT"));
        }
        break;
      }
      case 'L': push(text_int(line(), "LONG")); break;
      case 'J': push(make_int(le<int32_t>())); break;
      case 'K': push(make_int(u8())); break;
      case 'M': push(make_int(le<uint16_t>())); break;
      case 0x8a: {  // LONG1
        const uint8_t n = u8();
        push(decode_long(take(n), n));
        break;
      }
      case 0x8b: {  // LONG4
        const int32_t n = le<int32_t>();
        if (n < 0) error("LONG4 with a negative length");
        push(decode_long(take(static_cast<uint64_t>(n)), static_cast<size_t>(n)));
        break;
      }
      case 'F': {
        Value* v = make(Kind::Float);
        v->real = parse_float(line());
        push(v);
        break;
      }
      case 'G': {  // BINFLOAT: big-endian double
        const uint8_t* p = take(8);
        uint8_t b[8];
        for (int i = 0; i < 8; ++i) b[i] = p[7 - i];
        Value* v = make(Kind::Float);
        v->real = load_le<double>(b);
        push(v);
        break;
      }

      // --- strings and bytes
      case 'S': push(make_str(unescape_string(line()))); break;
      case 'T': {  // BINSTRING
        const int32_t n = le<int32_t>();
        if (n < 0) error("BINSTRING with a negative length");
        push(make_str(bytes_arg(static_cast<uint64_t>(n))));
        break;
      }
      case 'U': push(make_str(bytes_arg(u8()))); break;  // SHORT_BINSTRING
      case 'V': push(make_str(raw_unicode_escape(line()))); break;  // UNICODE
      case 'X': push(make_str(bytes_arg(le<uint32_t>()))); break;  // BINUNICODE
      case 0x8c: push(make_str(bytes_arg(u8()))); break;  // SHORT_BINUNICODE
      case 0x8d: push(make_str(bytes_arg(le<uint64_t>()))); break;  // BINUNICODE8
      case 'B': push(make_str(bytes_arg(le<uint32_t>()), Kind::Bytes)); break;  // BINBYTES
      case 'C': push(make_str(bytes_arg(u8()), Kind::Bytes)); break;  // SHORT_BINBYTES
      case 0x8e: push(make_str(bytes_arg(le<uint64_t>()), Kind::Bytes)); break;  // BINBYTES8
      case 0x96: push(make_str(bytes_arg(le<uint64_t>()), Kind::Bytes)); break;  // BYTEARRAY8
      case 0x97: error("NEXT_BUFFER: out-of-band buffers are not supported");
      case 0x98: top(); break;  // READONLY_BUFFER: marks the top buffer read-only

      // --- containers
      case ')': push(make_container(Kind::Tuple, {})); break;
      case 't': push(make_container(Kind::Tuple, pop_mark())); break;
      case 0x85: {
        Value* a = pop();
        push(make_container(Kind::Tuple, {a}));
        break;
      }
      case 0x86: {
        Value* b = pop();
        Value* a = pop();
        push(make_container(Kind::Tuple, {a, b}));
        break;
      }
      case 0x87: {
        Value* c = pop();
        Value* b = pop();
        Value* a = pop();
        push(make_container(Kind::Tuple, {a, b, c}));
        break;
      }
      case ']': push(make_container(Kind::List, {})); break;
      case 'l': push(make_container(Kind::List, pop_mark())); break;
      case '}': push(make(Kind::Dict)); break;
      case 'd': {  // DICT
        std::vector<Value*> items = pop_mark();
        if (items.size() % 2) error("DICT with an odd number of items");
        Value* d = make(Kind::Dict);
        for (size_t i = 0; i < items.size(); i += 2) set_item(d, items[i], items[i + 1]);
        push(d);
        break;
      }
      case 0x8f: push(make(Kind::Set)); break;  // EMPTY_SET
      case 0x91: push(make_container(Kind::FrozenSet, pop_mark())); break;
      case 'a': {  // APPEND
        Value* v = pop();
        append(top(), v, "APPEND");
        break;
      }
      case 'e': {  // APPENDS
        std::vector<Value*> items = pop_mark();
        Value* target = top();
        for (Value* v : items) append(target, v, "APPENDS");
        break;
      }
      case 's': {  // SETITEM
        Value* v = pop();
        Value* k = pop();
        set_item(top(), k, v);
        break;
      }
      case 'u': {  // SETITEMS
        std::vector<Value*> items = pop_mark();
        if (items.size() % 2) error("SETITEMS with an odd number of items");
        Value* target = top();
        for (size_t i = 0; i < items.size(); i += 2) set_item(target, items[i], items[i + 1]);
        break;
      }
      case 0x90: {  // ADDITEMS
        std::vector<Value*> items = pop_mark();
        Value* target = top();
        for (Value* v : items) add_to_set(target, v);
        break;
      }

      // --- memo
      case 'g': push(memo_get(static_cast<uint64_t>(parse_decimal(line(), "GET")))); break;
      case 'h': push(memo_get(u8())); break;
      case 'j': push(memo_get(le<uint32_t>())); break;
      case 'p': {
        const int64_t i = parse_decimal(line(), "PUT");
        if (i < 0) error("PUT with a negative index");
        memo_put(static_cast<uint64_t>(i), top());
        break;
      }
      case 'q': memo_put(u8(), top()); break;
      case 'r': memo_put(le<uint32_t>(), top()); break;
      case 0x94: memo_put(memo_.size(), top()); break;  // MEMOIZE

      // --- globals and calls
      case 'c': {  // GLOBAL
        std::string module = line();
        std::string name = line();
        push(global(std::move(module), std::move(name)));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        Value* name = pop();
        Value* module = pop();
        if (name->kind != Kind::Str || module->kind != Kind::Str) {
          error("STACK_GLOBAL: module and name must be strings");
        }
        push(global(module->text, name->text));
        break;
      }
      case 'R': {  // REDUCE
        Value* args = pop();
        Value* callable = pop();
        push(call(callable, args, nullptr, "REDUCE"));
        break;
      }
      case 0x81: {  // NEWOBJ
        Value* args = pop();
        Value* cls = pop();
        push(call(cls, args, nullptr, "NEWOBJ"));
        break;
      }
      case 0x92: {  // NEWOBJ_EX
        Value* kwargs = pop();
        Value* args = pop();
        Value* cls = pop();
        push(call(cls, args, kwargs, "NEWOBJ_EX"));
        break;
      }
      case 'i': {  // INST: module and name as text, arguments since the mark
        std::string module = line();
        std::string name = line();
        Value* cls = global(std::move(module), std::move(name));
        Value* args = make_container(Kind::Tuple, pop_mark());
        push(call(cls, args, nullptr, "INST"));
        break;
      }
      case 'o': {  // OBJ: class and arguments since the mark
        std::vector<Value*> items = pop_mark();
        if (items.empty()) error("OBJ without a class");
        Value* cls = items[0];
        items.erase(items.begin());
        Value* args = make_container(Kind::Tuple, std::move(items));
        push(call(cls, args, nullptr, "OBJ"));
        break;
      }
      case 'b': {  // BUILD
        Value* state = pop();
        build(top(), state);
        break;
      }
      case 'P': {  // PERSID (text)
        Value* pid = make_str(line());
        push(persistent_load(pid));
        break;
      }
      case 'Q': push(persistent_load(pop())); break;  // BINPERSID
      case 0x82:
        error(fmt::format("EXT1 {}: the extension registry is not supported", u8()));
      case 0x83:
        error(fmt::format("EXT2 {}: the extension registry is not supported", le<uint16_t>()));
      case 0x84:
        error(fmt::format("EXT4 {}: the extension registry is not supported", le<int32_t>()));
      default:
        error(fmt::format("unknown opcode 0x{:02x}", op));
    }
  }
}

}  // namespace

PickleResult unpickle(const uint8_t* data, size_t size, const Limits& limits) {
  if (size == 0) fail("pickle: no data");
  Unpickler u(data, size, limits);
  return u.run();
}

}  // namespace rmt::io

namespace rmt::pickle {

std::shared_ptr<Tree> read_pickle(const void* data, size_t size, const Limits& limits,
                                  size_t* end) {
  auto result = io::unpickle(static_cast<const uint8_t*>(data), size, limits);
  if (end) *end = result.end;
  return result.tree;
}

}  // namespace rmt::pickle

#pragma once
// The object tree of a Python pickle, read without Python and without executing anything.
//
// Every value a pickle can build becomes an inert Value: plain data (None, bool, int, float, str,
// bytes, list, tuple, dict, set), torch storages and tensors (rebuilt only through
// torch._utils._rebuild_tensor*/_rebuild_parameter*), and placeholders for everything else: a
// reference to a global (`Kind::Global`) or an instance of a class that was never constructed
// (`Kind::Object`, holding the class name, its constructor arguments and its state). Calls of
// dangerous or unknown functions (os.system, builtins.eval, subprocess.*, ...) are refused.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

namespace rmt {
namespace pickle {

enum class Kind : uint8_t {
  None,
  Bool,
  Int,
  BigInt,     // an int that does not fit in 64 bits
  Float,
  Str,
  Bytes,      // bytes and bytearray
  List,
  Tuple,
  Dict,       // insertion-ordered, keys of any kind
  Set,
  FrozenSet,
  Global,     // module.name, referenced but never called
  Object,     // an instance of module.name: arguments and state, never constructed
  Storage,    // a torch storage named by a persistent id
  Tensor,
};

struct Value;

// A torch storage: the record it lives in and how many elements of which dtype it holds.
struct StorageInfo {
  std::string key;        // record name: <archive>/data/<key> (zip) or the legacy storage key
  std::string type_name;  // e.g. "torch.FloatStorage"
  std::string location;   // e.g. "cpu", "cuda:0" (ignored: data is always read to the CPU)
  at::ScalarType dtype = at::kByte;
  int64_t numel = 0;        // elements of dtype in this storage
  int64_t root_numel = 0;   // elements of dtype in the record (differs only for legacy views)
  int64_t view_offset = 0;  // legacy views: first element of this storage within the record
};

// A tensor: its view of a storage (checked to lie inside it) and, once read, its data.
struct TensorInfo {
  const Value* storage = nullptr;  // Kind::Storage; null for safetensors
  at::ScalarType dtype = at::kFloat;
  int64_t storage_offset = 0;      // in elements of dtype, relative to the storage
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;
  bool requires_grad = false;
  at::Tensor data;                 // CPU tensor; undefined until the storage has been read
};

struct Value {
  Kind kind = Kind::None;
  bool boolean = false;
  // Nesting depth: 0 for a scalar or an empty container, else 1 + its deepest element's (a cycle
  // counts as one level). Bounded by Limits::max_depth once the whole pickle is read, however the
  // containers were filled.
  uint32_t depth = 0;
  uint32_t index = 0;  // position in its Tree
  int64_t integer = 0;
  double real = 0;
  // Str: the text as stored (UTF-8); Bytes: the bytes; BigInt: two's complement, little-endian;
  // Global and Object: the module.
  std::string text;
  std::string name;  // Global and Object: the name inside the module
  std::vector<const Value*> items;  // List, Tuple, Set, FrozenSet; Object: appended items
  std::vector<std::pair<const Value*, const Value*>> entries;  // Dict; Object: set items
  const Value* args = nullptr;    // Object: positional constructor arguments (a Tuple)
  const Value* kwargs = nullptr;  // Object: keyword arguments (NEWOBJ_EX)
  const Value* state = nullptr;   // BUILD's state: an Object's attributes, a dict's __dict__
  std::shared_ptr<StorageInfo> storage;  // Kind::Storage
  std::shared_ptr<TensorInfo> tensor;    // Kind::Tensor

  bool is(Kind k) const { return kind == k; }
  bool is_str(std::string_view s) const { return kind == Kind::Str && text == s; }
  // Dict (or Object) entry whose key is the string `key`; null if there is none.
  const Value* find(std::string_view key) const;
  // An Object's attribute: an entry of its state when that is a dict (argparse.Namespace fields).
  const Value* attribute(std::string_view key) const;
  std::string qualified_name() const;  // Global/Object: "module.name"
  // qualified_name() for messages and listings: each part escaped and cut to `max_bytes` (so
  // showing it costs the same however long the names in the file are).
  std::string shown_name(size_t max_bytes = 120) const;
  std::string type_name() const;       // "int", "dict", "tensor", "argparse.Namespace", ...
};

// Owns every Value of one pickle (values point at each other, cycles included).
class Tree {
 public:
  Tree() = default;
  Tree(const Tree&) = delete;
  Tree& operator=(const Tree&) = delete;

  const Value* root() const { return root_; }
  size_t size() const { return values_.size(); }
  const Value& operator[](size_t index) const { return values_[index]; }

  // For readers building a tree.
  Value* add(Kind kind);
  Value& at(size_t index) { return values_[index]; }
  void set_root(const Value* root) { root_ = root; }

 private:
  std::deque<Value> values_;
  const Value* root_ = nullptr;
};

// What a hostile file may cost. Past either budget the pickle is refused.
struct Limits {
  size_t max_depth = 10000;  // nesting of marks and containers
  // Bytes of Values, strings, containers and the reader's own indexes, charged as they are built
  // (every copy included).
  size_t max_memory = size_t(128) << 20;
  // Steps of work: opcodes, bytes copied, hashed or compared, items visited. A pickle's work grows
  // with its size, not faster: a valid pickle takes a few steps per byte.
  uint64_t max_work = uint64_t(1) << 30;
};

// Parses one pickle (protocols 0-5) from memory. Persistent ids must be torch's
// ('storage', type, key, location, numel[, view]); the tensors they make have no data
// (TensorInfo::data undefined). `end`, when given, receives the offset just after STOP.
// Throws std::runtime_error "pickle: <problem> at byte N" (under 1 KB, text from the file escaped).
std::shared_ptr<Tree> read_pickle(const void* data, size_t size, const Limits& limits = {},
                                  size_t* end = nullptr);

struct RenderOptions {
  size_t max_depth = 6;     // deeper containers are shown as ...
  size_t max_items = 16;    // per container, then "... (N more)"
  size_t max_string = 200;  // bytes per string (escaped), then "... (N more bytes)"
  size_t max_length = 65536;  // the whole text, then "... (cut at N bytes)"
};

// Python-like text of a value: tensors as tensor(float32, [8, 3, 3, 3]), placeholders as
// module.name(args..., attribute=value, ...), strings escaped. A container or object of more than
// 4 elements, or a string of more than 64 bytes, met more than once is shown once, marked &N, and
// written *N where it recurs (cycles included), so the text grows with the distinct values shown,
// not with the references to them.
std::string render(const Value& value, const RenderOptions& options = {});

// Several render() calls that make one text (e.g. one line per entry of a checkpoint). Such a
// container, object or long string that an earlier call showed is written <same as LABEL> (it was
// that call's value) or <see LABEL> (it was inside it) instead of again, and the calls together
// write at most `max_total` bytes; past that, render() gives "<not shown: output limit reached>".
class RenderSession {
 public:
  explicit RenderSession(size_t max_total = size_t(1) << 20) : max_total_(max_total) {}
  // `label` says where the value is shown ("args", "optimizer > state").
  std::string render(const Value& value, const std::string& label,
                     const RenderOptions& options = {});
  // Records that the caller showed `value` itself under `label` (without render()).
  void mark_shown(const Value* value, const std::string& label);
  // Where an earlier call showed `value` ("<same as LABEL>" or "<see LABEL>"), or "" if none.
  std::string reference(const Value* value) const;
  bool exhausted() const { return written_ >= max_total_; }
  size_t written() const { return written_; }
  // Counts text the caller writes around the rendered values against the same budget.
  void count(size_t bytes) { written_ += bytes; }

 private:
  friend class Renderer;
  size_t max_total_;
  size_t written_ = 0;
  std::vector<std::string> labels_;
  // value -> (index in labels_) * 2 + (1 when it was the call's value itself)
  std::unordered_map<const Value*, uint32_t> shown_;
};

}  // namespace pickle
}  // namespace rmt

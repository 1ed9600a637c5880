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
  uint32_t depth = 0;  // nesting depth seen while reading (bounded by Limits::max_depth)
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

  // For readers building a tree.
  Value* add(Kind kind);
  void set_root(const Value* root) { root_ = root; }

 private:
  std::deque<Value> values_;
  const Value* root_ = nullptr;
};

// What a hostile file may cost.
struct Limits {
  size_t max_depth = 10000;                // nesting of marks and containers
  size_t max_memory = size_t(1) << 30;     // bytes of Values, strings and containers
};

// Parses one pickle (protocols 0-5) from memory. Persistent ids must be torch's
// ('storage', type, key, location, numel[, view]); the tensors they make have no data
// (TensorInfo::data undefined). `end`, when given, receives the offset just after STOP.
// Throws std::runtime_error "pickle: <problem> at byte N".
std::shared_ptr<Tree> read_pickle(const void* data, size_t size, const Limits& limits = {},
                                  size_t* end = nullptr);

struct RenderOptions {
  size_t max_depth = 6;     // deeper containers are shown as ...
  size_t max_items = 16;    // per container
  size_t max_string = 200;  // characters per string
  size_t max_length = 65536;  // the whole text (shared sub-trees could make it explode)
};

// Python-like text of a value: tensors as tensor(float32, [8, 3, 3, 3]), placeholders as
// module.name(args..., attribute=value, ...).
std::string render(const Value& value, const RenderOptions& options = {});

}  // namespace pickle
}  // namespace rmt

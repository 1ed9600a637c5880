#pragma once
// Weights derived from a module's tensors (a BatchNorm folded into its conv, a Linear's weight
// packed for MKL or oneDNN, RelPos2d's sin/cos tables), computed once and kept until one of the
// tensors they come from changes: another tensor, another storage, or an in-place write (the
// version counter; a checkpoint load writes in place); with get_at_least, also until a call asks
// for a higher level than the kept value was made at (MKL's packs: a thread count). Inference
// tensors have no version counter: nothing can be kept for them, and get() says so (the callers
// then run the plain ops rather than deriving weights on every call).
// Safe to share between threads running one model.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <optional>
#include <vector>

namespace rmt::nn::detail {

template <class Value>
class DerivedWeights {
 public:
  // The kept value, made by make() when it is not current for `sources` (undefined tensors
  // allowed) and `sizes` (anything else it depends on, e.g. an input size); nullopt when a source
  // is an inference tensor, whose changes cannot be followed.
  template <class Make>
  std::optional<Value> get(std::initializer_list<const at::Tensor*> sources,
                           std::initializer_list<int64_t> sizes, Make make) {
    return find_or_make(sources, sizes, 0, 0, make);
  }
  template <class Make>
  std::optional<Value> get(std::initializer_list<const at::Tensor*> sources, Make make) {
    return find_or_make(sources, {}, 0, 0, make);
  }
  // The same, where the kept value is current only if it was made at a level of at least `least`,
  // and a value made now is kept at `level`: for values made for a number of threads that serve
  // any smaller number (MKL's packed weights), so that a call on more threads than the kept value
  // was made for makes it again, once, and calls on fewer take it as it is.
  template <class Make>
  std::optional<Value> get_at_least(std::initializer_list<const at::Tensor*> sources,
                                    int64_t least, int64_t level, Make make) {
    return find_or_make(sources, {}, least, level, make);
  }

 private:
  template <class Make>
  std::optional<Value> find_or_make(std::initializer_list<const at::Tensor*> sources,
                                    std::initializer_list<int64_t> sizes, int64_t least,
                                    int64_t level, Make make) {
    Key key{{}, std::vector<int64_t>(sizes)};
    key.sources.reserve(sources.size());
    for (const auto* t : sources) {
      if (t->defined() && t->is_inference()) return std::nullopt;
      key.sources.push_back(
          {*t, t->defined() ? t->data_ptr() : nullptr, t->defined() ? t->_version() : 0});
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (!valid_ || !(key == key_) || level_ < least) {
      value_ = make();
      key_ = std::move(key);
      level_ = level;
      valid_ = true;
    }
    return value_;
  }

  struct Source {
    // Held, so that no other tensor can take its TensorImpl's address while it is compared;
    // Module::to swaps the storage of the same TensorImpl (data), load_state_dict writes into it
    // (version).
    at::Tensor tensor;
    const void* data;
    int64_t version;
    bool operator==(const Source& o) const {
      return tensor.is_same(o.tensor) && data == o.data && version == o.version;
    }
  };
  struct Key {
    std::vector<Source> sources;
    std::vector<int64_t> sizes;
    bool operator==(const Key& o) const { return sources == o.sources && sizes == o.sizes; }
  };
  std::mutex mutex_;
  bool valid_ = false;
  Key key_;
  int64_t level_ = 0;
  Value value_;
};

}  // namespace rmt::nn::detail

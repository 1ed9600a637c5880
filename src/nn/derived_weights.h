#pragma once
// Weights derived from a module's tensors (a BatchNorm folded into its conv, a Linear's weight
// packed for oneDNN), computed once and kept until one of the tensors they come from changes:
// another tensor, another storage, or an in-place write (the version counter; a checkpoint load
// writes in place). Inference tensors have no version counter: nothing is kept for them. Safe to
// share between threads running one model.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <vector>

namespace rmt::nn::detail {

template <class Value>
class DerivedWeights {
 public:
  // make() when the cache is not current for `sources` (undefined tensors allowed).
  template <class Make>
  Value get(std::initializer_list<const at::Tensor*> sources, Make make) {
    std::vector<Source> key;
    key.reserve(sources.size());
    for (const auto* t : sources) {
      if (!t->defined()) {
        key.push_back({nullptr, nullptr, 0});
        continue;
      }
      if (t->is_inference()) return make();
      key.push_back({t->unsafeGetTensorImpl(), t->data_ptr(), t->_version()});
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (!valid_ || key != key_) {
      value_ = make();
      key_ = std::move(key);
      valid_ = true;
    }
    return value_;
  }

 private:
  struct Source {
    const void* impl;
    const void* data;
    int64_t version;
    bool operator==(const Source& o) const {
      return impl == o.impl && data == o.data && version == o.version;
    }
  };
  std::mutex mutex_;
  bool valid_ = false;
  std::vector<Source> key_;
  Value value_;
};

}  // namespace rmt::nn::detail

#pragma once
// RetNetRelPos2d (`Relpos`): the theta-shift angles and the per-head log-decay of one stage.

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <memory>
#include <utility>

#include "rmt/nn/backend.h"

namespace rmt::nn {
namespace detail {
class SinCosTables;  // src/nn/relpos.cpp: the last sin/cos pair, kept while angle and size hold
}  // namespace detail

struct RelPos2dOptions {
  RelPos2dOptions(int64_t embed_dim, int64_t num_heads, double initial_value, double heads_range)
      : embed_dim_(embed_dim), num_heads_(num_heads), initial_value_(initial_value),
        heads_range_(heads_range) {}
  TORCH_ARG(int64_t, embed_dim);
  TORCH_ARG(int64_t, num_heads);
  TORCH_ARG(double, initial_value);
  TORCH_ARG(double, heads_range);
};

class RelPos2dImpl : public torch::nn::Module, public WithBackend {
 public:
  explicit RelPos2dImpl(const RelPos2dOptions& options);

  // sin and cos of (flattened position index * angle): each (H, W, head_dim), in the buffers' dtype.
  // They depend only on the input size: the last pair is kept and returned again while the size
  // and `angle` (same tensor, same storage, no in-place change since) stay the same, unless the
  // backend is Reference (the authors recompute the tables every call) or `angle` is an inference
  // tensor (its changes cannot be followed: computed every call).
  std::pair<torch::Tensor, torch::Tensor> sin_cos(int64_t height, int64_t width) const;
  // decay[h] * |i - j|: (heads, length, length), the decomposed MaSA's 1D masks.
  torch::Tensor mask_1d(int64_t length) const;
  // decay[h] * (|dy| + |dx|): (heads, HW, HW), the full MaSA's 2D mask.
  torch::Tensor mask_2d(int64_t height, int64_t width) const;

  RelPos2dOptions options;
  // angle: (head_dim,), 1 / 10000^linspace(0, 1, head_dim/2), each value twice.
  torch::Tensor angle;
  // decay: (heads,), log(1 - 2^(-initial_value - heads_range * h / heads)).
  torch::Tensor decay;

 private:
  std::shared_ptr<detail::SinCosTables> tables_;  // safe for forwards on several threads at once
};
TORCH_MODULE(RelPos2d);

// The per-head log-decay log(1 - 2^(-initial_value - heads_range * h / num_heads)), float32, with the
// authors' op sequence (RelPos2d's `decay` buffer). Non-finite where 2^-x rounds to 1 or above.
torch::Tensor retention_decay(double initial_value, double heads_range, int64_t num_heads);

}  // namespace rmt::nn

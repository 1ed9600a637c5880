#include "rmt/nn/masa.h"

#include <cmath>

#include <fmt/format.h>

#include "rmt/ops/masa.h"
#include "nn/token_linear.h"

namespace rmt::nn {
namespace {

// Channels [start, start + length) of the last dimension of t, a tensor sharing t's storage, built
// directly: what narrow() returns, without the dispatch and autograd's view set-up (~5 us, serial
// between the parallel regions). Only where no gradient is recorded: the result is not known to
// autograd as a view of t.
at::Tensor channel_slice(const at::Tensor& t, int64_t start, int64_t length) {
  auto impl = c10::make_intrusive<c10::TensorImpl>(c10::Storage(t.storage()), t.key_set(),
                                                   t.dtype());
  auto sizes = t.sizes().vec();
  sizes.back() = length;
  impl->set_sizes_and_strides(sizes, t.strides(), t.storage_offset() + start * t.stride(-1));
  return at::Tensor(std::move(impl));
}

}  // namespace

MaSAImpl::MaSAImpl(const MaSAOptions& options_) : options(options_) {
  const auto dim = options.embed_dim();
  TORCH_CHECK(options.num_heads() > 0 && dim % options.num_heads() == 0,
              fmt::format("MaSA: embed_dim ({}) must be a multiple of num_heads ({})", dim,
                          options.num_heads()));
  q_proj = register_module("q_proj", torch::nn::Linear(dim, dim));
  k_proj = register_module("k_proj", torch::nn::Linear(dim, dim));
  v_proj = register_module("v_proj", torch::nn::Linear(dim, dim));
  lepe = register_module("lepe", DWConv2d(dim, 5, 1, 2));
  out_proj = register_module("out_proj", torch::nn::Linear(dim, dim));
  for (auto& p : packed_) p = std::make_shared<detail::PackedLinear>();
  packed_qkv_ = std::make_shared<detail::PackedLinearStack>();
  scaled_out_ = std::make_shared<detail::ScaledLinear>();
}

torch::Tensor MaSAImpl::mixed(const torch::Tensor& x, const torch::Tensor& sin,
                              const torch::Tensor& cos, const torch::Tensor& decay) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(options.embed_dim() / options.num_heads()));
  const bool literal = policy_.literal();
  auto project = [&](torch::nn::LinearImpl& linear, size_t slot, const torch::Tensor& in) {
    return literal ? linear.forward(in) : detail::linear_tokens(linear, in, packed_[slot].get());
  };
  // One GEMM for q, k and v where oneDNN runs the layers; q, k, v are then channel slices of its
  // output, which the MaSA kernels and lepe read in place.
  const auto qkv =
      literal ? std::nullopt
              : detail::stacked_linear_tokens(*q_proj, *k_proj, *v_proj, x, packed_qkv_.get());
  const int64_t dim = options.embed_dim();
  // (stacked_linear_tokens packs only where no gradient is recorded.)
  auto q = qkv ? channel_slice(*qkv, 0, dim) : project(*q_proj, 0, x);
  auto k = qkv ? channel_slice(*qkv, dim, dim) : project(*k_proj, 1, x);
  auto v = qkv ? channel_slice(*qkv, 2 * dim, dim) : project(*v_proj, 2, x);
  torch::Tensor out;
  if (policy_.fused_attention(x.device().type())) {
    out = options.decomposed() ? ops::masa_decomposed(q, k, v, sin, cos, decay, scale)
                               : ops::masa_full(q, k, v, sin, cos, decay, scale);
  } else {
    out = options.decomposed() ? ops::reference::masa_decomposed(q, k, v, sin, cos, decay, scale)
                               : ops::reference::masa_full(q, k, v, sin, cos, decay, scale);
  }
  return lepe->forward_add(v, out);  // out + lepe(v)
}

torch::Tensor MaSAImpl::forward(const torch::Tensor& x, const torch::Tensor& sin,
                                const torch::Tensor& cos, const torch::Tensor& decay) {
  const auto m = mixed(x, sin, cos, decay);
  return policy_.literal() ? out_proj->forward(m)
                           : detail::linear_tokens(*out_proj, m, packed_[3].get());
}

void MaSAImpl::forward_add_(const torch::Tensor& x, const torch::Tensor& sin,
                            const torch::Tensor& cos, const torch::Tensor& decay,
                            torch::Tensor& into, const torch::Tensor& scale) {
  const auto layer = policy_.literal() ? std::nullopt
                                      : scaled_out_->layer_for(*out_proj, packed_[3].get(), scale);
  if (layer) {
    detail::linear_tokens_add_(layer->first, mixed(x, sin, cos, decay), into, layer->second);
    return;
  }
  const auto out = forward(x, sin, cos, decay);
  into.add_(scale.defined() ? out * scale : out);
}

Size2d MaSAImpl::count_cost(CostCounter& counter, const std::string& name, Size2d in) const {
  counter.count_children(name, *this, in);
  const auto [h, w] = in;
  const int64_t b = counter.batch();
  const int64_t c = options.embed_dim();  // heads x head_dim, for q, k and v alike
  // Decomposed: rows (H x W x W), then columns (W x H x H); full: every pair of the H x W tokens.
  const int64_t per_matmul =
      options.decomposed() ? b * (h * w * w + w * h * h) * c : b * (h * w) * (h * w) * c;
  counter.add({CostCounter::join(name, "attention"), CostKind::Attention, 2 * per_matmul, 0, h, w});
  return in;
}

void MaSAImpl::set_backend(Backend backend) {
  WithBackend::set_backend(backend);
  lepe->set_backend(backend);
}

}  // namespace rmt::nn

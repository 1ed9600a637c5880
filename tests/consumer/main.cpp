// Builds RMT-T from the installed rmt, runs one 64x64 image through it and prints the output shape;
// calls an installed operator header's entry point too. Includes every installed header (rmt.h):
// they need nothing but LibTorch (fmt, for one, stays inside the library).
#include <iostream>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <rmt/rmt.h>

int main() {
  try {
    auto model = rmt::Model::from_preset("rmt_t");
    model.eval();
    c10::InferenceMode inference;
    const auto logits = model.forward(at::randn({1, 3, 64, 64})).front();
    std::cout << "rmt " << rmt::version() << " (headers " << RMT_VERSION_STRING << ")\n";
    std::cout << "rmt_t output shape: " << logits.sizes() << "\n";
    if (rmt::version() != RMT_VERSION_STRING) {
      std::cerr << "rmt_consumer: error: library version " << rmt::version()
                << " does not match the headers' " << RMT_VERSION_STRING << "\n";
      return 1;
    }
    if (logits.dim() != 2 || logits.size(0) != 1 || logits.size(1) != 1000) {
      std::cerr << "rmt_consumer: error: expected logits of shape [1, 1000], found "
                << logits.sizes() << "\n";
      return 1;
    }
    if (rmt::pretrained_config("rmt_t").preprocess().resize_size() != 256) {
      std::cerr << "rmt_consumer: error: RMT-T's pretrained config does not resize to 256\n";
      return 1;
    }
    const auto y = rmt::ops::depthwise_conv2d_nhwc(at::ones({1, 4, 4, 8}), at::ones({8, 1, 3, 3}),
                                                   at::zeros({8}), 1, 1);
    if (y.sizes() != at::IntArrayRef({1, 4, 4, 8}) || y[0][1][1][0].item<float>() != 9.0f) {
      std::cerr << "rmt_consumer: error: rmt::depthwise_conv2d_nhwc gave a wrong result\n";
      return 1;
    }
  } catch (const std::exception& e) {
    std::cerr << "rmt_consumer: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

#pragma once
// Parameter count and multiply-accumulates (MACs) of a model at a given input size, counted from
// the model's own layers.
//
// Convention (the one fvcore's FlopCountAnalysis uses, which the authors quote as "FLOPs"):
//   conv              output elements x (in_channels / groups) x kh x kw
//   linear            tokens x in_features x out_features
//   attention (MaSA)  the two matmuls, QK^T and attention x V:
//                       decomposed: B x (H x W x W + W x H x H) x C each (rows, then columns)
//                       full:       B x (H x W)^2 x C each
// Norms, activations, softmax, biases, additions, the theta shift and pooling count nothing.
// At 224x224 RMT-T is 14,334,216 parameters and 2.64 GMACs (0.473 dense convs + 0.064 depthwise
// convs + 1.825 linear + 0.275 attention); RMT-S 4.78, RMT-B 10.37, RMT-L 19.49 GMACs.

#include <cstdint>
#include <string>
#include <vector>

#include "rmt/nn/cost.h"

namespace rmt {

class Model;

struct ModelSummary {
  int64_t batch = 1, height = 0, width = 0;  // the input size counted at
  int64_t parameters = 0;                    // all parameters of the module (not buffers)
  int64_t conv_macs = 0;            // dense convolutions (stem, downsampling)
  int64_t depthwise_conv_macs = 0;  // depthwise convolutions (CPE, LCE, FFN)
  int64_t linear_macs = 0;          // q/k/v/out projections, FFN, proj, heads
  int64_t attention_macs = 0;       // QK^T and attention x V of every MaSA
  std::vector<LayerCost> layers;    // in execution order

  int64_t total_macs() const {
    return conv_macs + depthwise_conv_macs + linear_macs + attention_macs;
  }
};

// Counts a VisRetNet, a DenseBackbone, or any module built from rmt's layers (convs, linears,
// MaSA, containers of those), for a (batch, C, height, width) input: the modules give their own
// costs (nn::CostCounter, rmt/nn/cost.h). Throws std::invalid_argument for a non-positive size.
ModelSummary summarize(const torch::nn::Module& module, int64_t height, int64_t width,
                       int64_t batch = 1);
ModelSummary summarize(const Model& model, int64_t height = 224, int64_t width = 224,
                       int64_t batch = 1);

// Text for people: parameters and GMACs by kind, then a table by top-level module (patch_embed,
// layers.0, ..., head). With per_layer, every counted layer too.
std::string format_summary(const ModelSummary& summary, const std::string& title = "",
                           bool per_layer = false);

}  // namespace rmt

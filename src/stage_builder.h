#pragma once
// The stages shared by the classifier and the dense backbone, built as the authors' constructor does.

#include <torch/nn/modules/container/modulelist.h>

#include "rmt/config.h"
#include "rmt/nn/masa.h"

namespace rmt::detail {

// BasicLayers with the stochastic depth rates of linspace(0, drop_path_rate, sum(depths)).
torch::nn::ModuleList build_stages(const Config& config);

void set_backend(torch::nn::ModuleList& stages, nn::Backend backend);

}  // namespace rmt::detail

#pragma once
// The stages shared by the classifier and the dense backbone, built as the authors' constructor does.

#include <torch/nn/modules/container/modulelist.h>

#include "rmt/models/config.h"

namespace rmt::detail {

// BasicLayers with the stochastic depth rates of linspace(0, drop_path_rate, sum(depths)), and
// activation checkpointing as the kind's constructor takes it (use_checkpoints per stage for the
// classifiers, use_checkpoint for every stage of the dense backbone). config.validate(kind) first.
torch::nn::ModuleList build_stages(const Config& config, ModelKind kind);

}  // namespace rmt::detail

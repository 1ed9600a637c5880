#pragma once
// What each output of a dense backbone is (timm's `feature_info`): what a detection or
// segmentation neck needs to be built before any image is seen.

#include <cstdint>
#include <string>

namespace rmt {

struct FeatureInfo {
  int64_t stage = 0;      // the stage whose features these are (before its downsampling)
  int64_t channels = 0;   // C of the (B, C, H', W') map: embed_dims[stage]
  int64_t reduction = 0;  // the input's stride in this map, 4 * 2^stage: H' = ceil(H / reduction)
                          // (every stride-2 conv, 3x3 with padding 1, rounds an odd side up)
  std::string module;     // the module that makes it: "extra_norms.<stage>"
};

}  // namespace rmt

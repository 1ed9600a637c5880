#pragma once
// The authors' ImageNet-1k weights of each classifier preset and how they evaluated them (timm's
// `pretrained_cfg`): what rmt-classify reads, and what an application needs to feed a preset the
// images its weights expect.

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "rmt/data/preprocess.h"

namespace rmt {

struct PretrainedConfig {
  std::string preset;      // "rmt_s"
  std::string checkpoint;  // the authors' name of the weights in their README: "RMT-S"
  std::string url;         // where they publish the file (Baidu Netdisk)
  std::string url_code;    // its extraction code
  std::string weights_key = "model";  // the checkpoint's entry holding the weights
  double top1 = 0;                    // their ImageNet-1k validation accuracy, percent

  // Their evaluation transform (see rmt/preprocess.h): resize the shorter side to
  // floor(input_size / crop_pct), bicubic, center crop input_size, normalize.
  int64_t input_size = 224;
  double crop_pct = 0.875;
  std::string interpolation = "bicubic";
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};  // timm's IMAGENET_DEFAULT_MEAN
  std::array<float, 3> stddev{0.229f, 0.224f, 0.225f};
  int64_t num_classes = 1000;

  // The transform as PreprocessOptions (PIL >= 13's resize pass order).
  PreprocessOptions preprocess() const;
};

// The presets with the authors' ImageNet weights: rmt_t, rmt_s, rmt_b, rmt_l, rmt_s_tl, rmt_b_tl,
// rmt_l_tl (not the dense backbones).
std::vector<std::string> pretrained_presets();
bool has_pretrained_config(const std::string& preset);
// Throws std::invalid_argument for a name that is not one of pretrained_presets(), naming them.
PretrainedConfig pretrained_config(const std::string& preset);

}  // namespace rmt

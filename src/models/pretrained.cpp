#include "rmt/models/pretrained.h"

#include <stdexcept>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace rmt {
namespace {

// From the authors' repository (github.com/qhfan/RMT): the README's table (names, links, codes,
// top-1) and their evaluation transforms:
// - classfication_release/datasets.py, build_transform: Resize(int(256 / 224 * input_size),
//   interpolation=3 (bicubic)), CenterCrop(input_size), IMAGENET_DEFAULT_MEAN/STD; at 224 that is
//   resize 256, crop_pct 224 / 256 = 0.875.
// - classification_token_label_release/main.py: timm's create_loader(..., interpolation='bicubic',
//   crop_pct=0.96): resize floor(224 / 0.96) = 233.
// Their main.py --eval loads checkpoint['model']; the published top-1 of RMT-S/B/L (and the
// token-labeling models) is the best EMA accuracy of their logs (RMT_log/*.txt, test_ema_acc1:
// 84.10, 85.03, 85.53), RMT-T's the model's (82.41): `--weights-key model_ema` picks the EMA
// weights where the file holds them.
struct Entry {
  const char* preset;
  const char* checkpoint;
  const char* url;
  const char* code;
  double top1;
  bool token_label;
};

constexpr Entry kEntries[] = {
    {"rmt_t", "RMT-T", "https://pan.baidu.com/s/1uTSCuPqYRNmT4Zb4Je9BOw?pwd=vsyv", "vsyv", 82.4,
     false},
    {"rmt_s", "RMT-S", "https://pan.baidu.com/s/1aQeErkmy191-zshlW2bT0g?pwd=3ay4", "3ay4", 84.1,
     false},
    {"rmt_b", "RMT-B", "https://pan.baidu.com/s/1ZDNl_broia_fvvlEoTaFhA?pwd=yzge", "yzge", 85.0,
     false},
    {"rmt_l", "RMT-L", "https://pan.baidu.com/s/1v7QWgAh0TulWOTg4d94KHw?pwd=uewu", "uewu", 85.5,
     false},
    {"rmt_s_tl", "RMT-S*", "https://pan.baidu.com/s/1Xjgko9_-rokfvP39uiwTqQ?pwd=q37r", "q37r", 84.8,
     true},
    {"rmt_b_tl", "RMT-B*", "https://pan.baidu.com/s/1fqCzZ8Pfw39QA4LQ3dSiCg?pwd=2rdt", "2rdt", 85.6,
     true},
    {"rmt_l_tl", "RMT-L*", "https://pan.baidu.com/s/1KvV8IMJC6xG5Eh6w6uFbpw?pwd=z1k2", "z1k2", 86.1,
     true},
};

}  // namespace

PreprocessOptions PretrainedConfig::preprocess() const {
  PreprocessOptions options;
  options.input_size = input_size;
  options.crop_pct = crop_pct;
  options.mean = mean;
  options.stddev = stddev;
  return options;
}

std::vector<std::string> pretrained_presets() {
  std::vector<std::string> names;
  for (const auto& e : kEntries) names.emplace_back(e.preset);
  return names;
}

bool has_pretrained_config(const std::string& preset) {
  for (const auto& e : kEntries) {
    if (preset == e.preset) return true;
  }
  return false;
}

PretrainedConfig pretrained_config(const std::string& preset) {
  for (const auto& e : kEntries) {
    if (preset != e.preset) continue;
    PretrainedConfig c;
    c.preset = e.preset;
    c.checkpoint = e.checkpoint;
    c.url = e.url;
    c.url_code = e.code;
    c.top1 = e.top1;
    c.crop_pct = e.token_label ? 0.96 : 0.875;
    return c;
  }
  throw std::invalid_argument(
      fmt::format("pretrained_config: no pretrained weights for '{}' (the authors publish "
                  "ImageNet weights for {})",
                  preset.substr(0, 100), fmt::join(pretrained_presets(), ", ")));
}

}  // namespace rmt

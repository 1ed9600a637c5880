#pragma once
// Reading the authors' checkpoints (torch.save zip and legacy files, safetensors) without Python and
// without ever executing anything from the file, and writing safetensors.

#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/ordered_dict.h>

#include "rmt/io/pickle.h"

namespace rmt {

// Tensors by name, in file order.
using StateDict = torch::OrderedDict<std::string, at::Tensor>;

// Which entry of a checkpoint holds the weights, and how their names are cleaned.
struct WeightsSelection {
  // "auto" tries the entries of automatic_weights_keys() (`model`, `state_dict`, `model_ema`,
  // `state_dict_ema`), then a bare state_dict (a dict whose values are all tensors). Any other
  // value names the entry to use; "" means the top-level dict itself. A safetensors file is a bare
  // state_dict.
  std::string weights_key = "auto";
  // When set (e.g. "backbone."), only keys that start with it are kept, with it removed.
  std::string key_prefix;
  // DistributedDataParallel's `module.` in front of every key is removed.
  bool strip_module_prefix = true;
};

// The entries weights_key "auto" tries, in order.
const std::vector<std::string>& automatic_weights_keys();

// Reads the weights of a checkpoint: the format is detected from the content (torch.save zip,
// legacy torch.save, safetensors). Tensors keep the dtype stored in the file. Throws
// std::runtime_error naming the file and what was wrong with it.
StateDict read_state_dict(const std::string& path, const WeightsSelection& selection = {});

// Writes tensors (contiguous copies, CPU) to a safetensors file with string metadata
// (e.g. {"arch": "rmt_t", "config": "{...}"}).
void save_safetensors(const std::string& path, const StateDict& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Reads weights from a checkpoint held in memory; `name` stands for the file in error messages.
StateDict read_state_dict_from_memory(const void* data, size_t size, const std::string& name,
                                      const WeightsSelection& selection = {});

// Everything in a checkpoint, for inspection: the whole object tree (tensors with their data,
// metadata such as `epoch` or the `args` Namespace as inert values, see rmt/io/pickle.h).
struct CheckpointContents {
  std::string path;
  std::string format;  // "torch.save zip", "torch.save legacy" or "safetensors"
  std::shared_ptr<const pickle::Tree> tree;
  const pickle::Value* root = nullptr;         // owned by tree
  std::map<std::string, std::string> metadata;  // safetensors' __metadata__
};

CheckpointContents read_checkpoint(const std::string& path);
CheckpointContents read_checkpoint_from_memory(const void* data, size_t size,
                                               const std::string& name);

// The weights that read_state_dict would return, taken from contents already read.
StateDict select_state_dict(const CheckpointContents& contents,
                            const WeightsSelection& selection = {});

// The same weights, with the entry they were taken from.
struct SelectedWeights {
  StateDict weights;
  std::string entry;       // the entry's key, or "" for the top-level dict
  bool automatic = false;  // chosen by weights_key "auto"
};
SelectedWeights select_weights(const CheckpointContents& contents,
                               const WeightsSelection& selection = {});

// Text for people: the format, one line per top-level entry (state_dicts summarised as tensor
// counts, numbers and strings as values, an argparse.Namespace one field per line, ...).
std::string describe_checkpoint(const CheckpointContents& contents);

}  // namespace rmt

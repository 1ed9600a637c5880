#pragma once
// The constructor arguments of the authors' models, plus named presets.
//
// Three constructors, one per ModelKind: VisRetNet of classfication_release (Classifier), VisRetNet
// of classification_token_label_release (TokenLabel) and RMT of the detection/segmentation code
// (Dense). Config holds the union of their arguments; each kind reads the ones its constructor has
// and validate(kind) checks them as that constructor would use them. What the authors' code accepts
// and computes finite outputs for is accepted and computes the same numbers; what it refuses, or
// accepts but computes NaN or input-independent garbage for, is refused with a message naming the
// field (README.md, "Configurations", lists the rules).

#include <cstdint>
#include <string>
#include <vector>

namespace rmt {

// What a model returns: class logits, token-labeling logits, or dense feature maps.
enum class ModelKind { Classifier, TokenLabel, Dense };

std::string to_string(ModelKind kind);
// Accepts "classifier", "token_label", "dense"; throws on anything else.
ModelKind model_kind_from_string(const std::string& name);

// The authors' keyword arguments, with their defaults. Per-stage lists are read as Python indexes
// them: entry i for stage i (i < number of stages = depths.size()); a list may be longer (the extra
// entries are unused, as in the authors' code), never shorter.
struct Config {
  // Every kind.
  std::vector<int64_t> embed_dims{96, 192, 384, 768};
  std::vector<int64_t> depths{2, 2, 6, 2};
  std::vector<int64_t> num_heads{3, 6, 12, 24};
  std::vector<double> init_values{1, 1, 1, 1};
  std::vector<double> heads_ranges{3, 3, 3, 3};
  std::vector<double> mlp_ratios{3, 3, 3, 3};
  // true: stage uses decomposed (row then column) MaSA; false: full MaSA over all tokens.
  std::vector<bool> chunkwise_recurrents{true, true, false, false};
  std::vector<bool> layerscales{false, false, false, false};
  double layer_init_values = 1e-6;
  int64_t projection = 1024;  // classifiers: width of `proj`; dense: accepted and unused (as theirs)
  double drop_path_rate = 0.1;
  int64_t in_chans = 3;
  bool patch_norm = true;  // accepted; no effect (the authors' PatchEmbed ignores its norm_layer)

  // Classifier and token-label (VisRetNet).
  int64_t num_classes = 1000;  // <= 0: no head (identity): the output is the pooled features
  // Activation checkpointing per stage: while autograd records, each block of the stage keeps only
  // its input and recomputes its forward in backward (same gradients, less memory).
  std::vector<bool> use_checkpoints{false, false, false, false};

  // Dense (RMT).
  // The stages whose feature maps are returned, in stage order, each once (as the authors'
  // `i in out_indices`). The default (0, 1, 2, 3) selects every stage there is, up to four; any other
  // list must name stages that exist and have an extra_norm (0 to min(stages, 4) - 1).
  std::vector<int64_t> out_indices{0, 1, 2, 3};
  bool use_checkpoint = false;  // activation checkpointing in every stage (see use_checkpoints)
  // Accepted; the authors' default. Their train() puts nn.BatchNorm2d layers in eval mode, but their
  // backbone's norms are nn.SyncBatchNorm, which that test misses: BatchNorm trains either way, and
  // so it does here (DenseBackboneImpl::freeze_batchnorm freezes it on request).
  bool norm_eval = true;

  int64_t num_stages() const { return static_cast<int64_t>(depths.size()); }
  // The stages out_indices selects, in stage order, each once (Dense; validate(Dense) first).
  std::vector<int64_t> selected_stages() const;

  // Throws std::invalid_argument naming the field, the expected and the found value.
  // validate(): what every kind requires; validate(kind): that and what the kind's constructor needs.
  void validate() const;
  void validate(ModelKind kind) const;
  // Every field (config_from_json(text) reads it back), or only the arguments of `kind`'s
  // constructor (config_from_json(text, kind) reads it back).
  std::string to_json() const;
  std::string to_json(ModelKind kind) const;
};

// Parses a JSON object of the authors' constructor arguments for a model of `kind`: exactly the
// argument names of that kind's constructor (another kind's argument, or a typo, is an error that
// names it), JSON types as Python would accept them (integers where the authors need integers; flags
// as true/false or integers, 0 being false), missing keys keeping the defaults above. Then
// validate(kind).
Config config_from_json(const std::string& json_text, ModelKind kind);
Config config_from_json_file(const std::string& path, ModelKind kind);
// The same for a kind not known yet: the argument names of every kind are accepted, and validate()
// checks what every kind requires (rmt::Model checks the rest when it is built).
Config config_from_json(const std::string& json_text);
Config config_from_json_file(const std::string& path);

// Presets by name: rmt_t, rmt_s, rmt_b, rmt_l (classifiers), rmt_s_tl, rmt_b_tl, rmt_l_tl
// (token labeling), rmt_t_dense ... rmt_l_dense (detection/segmentation backbone).
struct Preset {
  std::string name;
  ModelKind kind;
  Config config;
};
Preset preset(const std::string& name);
std::vector<std::string> preset_names();

}  // namespace rmt

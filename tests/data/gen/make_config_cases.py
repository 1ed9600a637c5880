#!/usr/bin/env python3
"""Reference cases for configurations beyond the presets, computed by the authors' own code.

Runs the three constructors of the authors' implementation (github.com/qhfan/RMT) from a clone you
provide: VisRetNet of classfication_release/RMT.py (kind `classifier`), VisRetNet of
classification_token_label_release/RMT.py (`token_label`) and RMT of
segmentation/mmseg/models/backbones/RMT.py (`dense`). Nothing of their code is copied here; it is
imported from the clone, with the imports it needs and we do not (mmseg's registry and logger,
mmcv_custom) stubbed. Needs torch, timm, einops, fvcore and numpy. From the repository root:

    git clone https://github.com/qhfan/RMT /tmp/rmt_official   # or any copy of it
    python3 tests/data/gen/make_config_cases.py --official-repo /tmp/rmt_official \\
        --out tests/data/configs

It writes, for every case that the authors' code accepts and computes finite outputs for, a
checkpoint (the model's float32 state_dict, torch.save), a float64 input and the float64 outputs
(the float32 weights upcast, as ../shared/reference was made), and lists every case in
manifest.json. Cases the authors' code refuses, computes NaN for, or that rmt refuses by choice
are listed with what the authors' code did and the field rmt's message must name
(tests/test_configs.cpp checks both).

Weights are random and far from their initial values (as ../shared/reference/README.md describes):
norm weights near 1, random biases, BatchNorm running statistics that are not 0/1, layer-scale
gammas between 0.1 and 1, other weights N(0, 1/fan_in).
"""
import argparse
import contextlib
import importlib.util
import io
import json
import math
import os
import platform
import random
import subprocess
import sys
import types
import warnings

import numpy as np
import torch

MODEL_FILES = {
    "classifier": "classfication_release/RMT.py",
    "token_label": "classification_token_label_release/RMT.py",
    "dense": "segmentation/mmseg/models/backbones/RMT.py",
}


# --- the authors' code, imported from the clone -----------------------------------------------

def _stub(name, **attrs):
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


class _Registry:
    def register_module(self, *args, **kwargs):
        return args[0] if args else (lambda cls: cls)


def _load(path, name, package=None):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    if package:
        module.__package__ = package
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_constructors(repo):
    _stub("mmseg")
    _stub("mmseg.models")
    _stub("mmseg.models.backbones")
    _stub("mmseg.models.builder", BACKBONES=_Registry())
    _stub("mmseg.utils", get_root_logger=lambda: None)
    _stub("mmcv_custom", load_checkpoint=lambda *a, **k: None)
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        cls = _load(os.path.join(repo, MODEL_FILES["classifier"]), "official_rmt_classifier")
        tl = _load(os.path.join(repo, MODEL_FILES["token_label"]), "official_rmt_token_label")
        seg = _load(os.path.join(repo, MODEL_FILES["dense"]), "mmseg.models.backbones.RMT",
                    "mmseg.models.backbones")
    return {"classifier": cls.VisRetNet, "token_label": tl.VisRetNet, "dense": seg.RMT}


# --- weights ----------------------------------------------------------------------------------

NORMS = (torch.nn.LayerNorm, torch.nn.modules.batchnorm._BatchNorm)


@torch.no_grad()
def perturb(model, generator):
    def randn(shape):
        return torch.randn(shape, generator=generator)

    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if name in ("gamma_1", "gamma_2"):
                p.copy_(torch.rand(p.shape, generator=generator) * 0.9 + 0.1)
            elif isinstance(module, NORMS):
                p.copy_((1 + 0.2 * randn(p.shape)) if name == "weight" else 0.2 * randn(p.shape))
            elif name == "bias":
                p.copy_(0.2 * randn(p.shape))
            else:
                fan_in = max(1, p[0].numel()) if p.dim() > 1 else max(1, p.numel())
                p.copy_(randn(p.shape) / math.sqrt(fan_in))
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(0.2 * randn(module.running_mean.shape))
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
            module.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=generator)))


def build(constructors, kind, config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return constructors[kind](**config)


def set_mode(model, mode):
    model.train(mode == "train")  # the dense RMT's train() returns None: no chaining


def run(model, x):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model(x)
    return list(out) if isinstance(out, tuple) else [out]


# --- cases ------------------------------------------------------------------------------------

def case(name, kind, config, what, size=(1, 23, 19), mode="eval", **extra):
    return dict(name=name, kind=kind, config=config, what=what, size=list(size), mode=mode, **extra)


def refusal(name, kind, config, what, field, size=(1, 32, 32), choice=None):
    """A config rmt refuses, naming `field`; `choice` says why when the authors' code accepts it."""
    entry = dict(name=name, kind=kind, config=config, what=what, refuse_naming=field, size=list(size))
    if choice:
        entry["rmt_choice"] = choice
    return entry


# Tiny dims keep the files small (the whole folder well under 2 MB).
D4 = dict(embed_dims=[4, 8, 8, 12], depths=[1, 1, 1, 1], num_heads=[2, 2, 2, 2],
          init_values=[2, 2, 2, 2], heads_ranges=[4, 4, 6, 6], mlp_ratios=[3, 2.5, 2, 2])
C3 = dict(embed_dims=[8, 8, 12], depths=[1, 1, 1], num_heads=[2, 2, 2], projection=10,
          num_classes=5)


def named_cases():
    cases = [
        case("cls_3stage", "classifier",
             dict(embed_dims=[8, 12, 16], depths=[1, 2, 1], num_heads=[2, 2, 4],
                  init_values=[2, 1.5, 2], projection=10, num_classes=6,
                  use_checkpoints=[True, False, True]),
             "3 stages; heads_ranges, mlp_ratios, chunkwise_recurrents and layerscales left at "
             "their 4-entry defaults (the authors read the first 3); use_checkpoints given",
             size=(2, 29, 23)),
        case("cls_5stage", "classifier",
             dict(embed_dims=[4, 8, 8, 12, 12], depths=[1, 1, 2, 1, 1], num_heads=[2, 2, 2, 2, 2],
                  init_values=[2, 2, 1, 2, 3], heads_ranges=[4, 4, 6, 3, 6],
                  mlp_ratios=[3, 2, 2.5, 2, 1.5],
                  chunkwise_recurrents=[True, True, False, True, False],
                  layerscales=[False, False, True, False, True], layer_init_values=1e-5,
                  use_checkpoints=[False, True, False, True, False], projection=8, num_classes=4),
             "5 stages (the authors need use_checkpoints with 5 entries), 40x36 input down to 1x1",
             size=(1, 40, 36)),
        case("cls_1stage", "classifier",
             dict(embed_dims=[8], depths=[2], num_heads=[2], projection=6, num_classes=3),
             "1 stage, no downsampling; every other list at its 4-entry default"),
        case("cls_0stage", "classifier",
             dict(embed_dims=[6], depths=[], num_heads=[], projection=5, num_classes=4),
             "no stage at all: stem, proj, norm, pooling, head"),
        case("cls_flags01", "classifier",
             dict(D4, chunkwise_recurrents=[1, 0, 1, 0], layerscales=[0, 1, 0, 2],
                  use_checkpoints=[1, 1, 0, 0], patch_norm=0, projection=8, num_classes=5),
             "flags written as integers, as Python configs often are (2 is true, as in Python)"),
        case("cls_depth0", "classifier",
             dict(embed_dims=[4, 8, 8, 12], depths=[1, 0, 1, 1], num_heads=[2, 3, 2, 2],
                  init_values=[2, 0, 2, 2], heads_ranges=[4, 4, 6, 6], projection=8,
                  num_classes=5),
             "a stage without blocks: its odd head dimension and its init_value 0 (decay -inf) "
             "are never used; the stage only downsamples"),
        case("cls_negrange_identity", "classifier",
             dict(D4, heads_ranges=[-1, -0.5, 2, -1], init_values=[2, 2, 2, 2.5], num_classes=-1,
                  projection=8, drop_path_rate=1.5),
             "negative heads_ranges with a finite decay for every head; num_classes -1 (no head: "
             "the pooled features); drop_path_rate 1.5 (unused in evaluation)"),
        case("cls_longlists", "classifier",
             dict(embed_dims=[4, 8, 12, 12, 12], depths=[1, 1, 1], num_heads=[2, 2, 2, 2, 2],
                  init_values=[2, 2, 2, 9, 9], heads_ranges=[4, 4, 6, 9, 9],
                  mlp_ratios=[3, 2, 2, 9, 9], chunkwise_recurrents=[True, False, True, True, True],
                  layerscales=[False, True, False, True, True], use_checkpoints=[0] * 5,
                  projection=8, num_classes=5),
             "3 stages with 5-entry lists: the extra entries are unused (embed_dims[-1] equals the "
             "last stage's width, as the authors' proj needs)"),
        case("cls_train", "classifier",
             dict(D4, layerscales=[0, 1, 0, 2], projection=8, num_classes=5, drop_path_rate=0.0),
             "training mode: BatchNorm with batch statistics (no stochastic depth)", mode="train",
             size=(2, 23, 19), weights_of="cls_flags01"),
        case("tl_3stage", "token_label",
             dict(C3, num_classes=6, use_checkpoints=[True, True, False]),
             "token labeling with 3 stages", size=(2, 27, 13)),
        case("tl_nc0", "token_label", dict(C3, num_classes=0, projection=12),
             "token labeling without heads (num_classes 0): pooled features + 0.5 * max over tokens "
             "of the last stage's features (projection = embed_dims[-1])"),
        case("tl_nc0_projection1", "token_label", dict(C3, num_classes=0, projection=1),
             "token labeling without heads, projection 1: (B, 1) + (B, C) broadcasts to (B, C)"),
        case("dense_out30", "dense", dict(D4, out_indices=[3, 0]),
             "out_indices [3, 0]: the authors return stages 0 and 3, in stage order",
             size=(1, 37, 28)),
        case("dense_duplicates", "dense", dict(D4, out_indices=[2, 1, 2, 1], norm_eval=False),
             "out_indices with duplicates: each stage once, in stage order",
             weights_of="dense_out30"),
        case("dense_3stage", "dense", dict(D4, depths=[1, 2, 1]),
             "3 stages, default out_indices (0, 1, 2, 3): every stage there is; 4 extra_norms from "
             "embed_dims[0..3] (the authors build four whatever the stage count)"),
        case("dense_5stage", "dense",
             dict(embed_dims=[4, 8, 8, 12, 12], depths=[1, 1, 1, 1, 1],
                  num_heads=[2, 2, 2, 2, 2], init_values=[2] * 5, heads_ranges=[4, 4, 6, 6, 6],
                  mlp_ratios=[2] * 5, chunkwise_recurrents=[1, 1, 0, 1, 0], layerscales=[0] * 5),
             "5 stages, default out_indices: stages 0 to 3 (extra_norms exist for 4 only)",
             size=(1, 40, 36)),
        case("dense_none", "dense", dict(D4, out_indices=[]), "out_indices []: no output",
             weights_of="dense_out30"),
        case("dense_use_checkpoint", "dense", dict(D4, use_checkpoint=True),
             "use_checkpoint true: the authors' BasicLayer passes keyword arguments to a reentrant "
             "torch.utils.checkpoint, which refuses them (in any mode); rmt accepts it. Outputs "
             "computed with use_checkpoint false (checkpointing changes no value)",
             authors_use_checkpoint_false=True, weights_of="dense_out30"),
        case("dense_train", "dense", dict(D4, drop_path_rate=0.0),
             "training mode with norm_eval true (the default): the authors' train() misses their "
             "SyncBatchNorm layers, so BatchNorm uses batch statistics", mode="train",
             size=(2, 40, 36), weights_of="dense_out30"),
    ]
    refusals = [
        refusal("cls_5stage_no_use_checkpoints", "classifier",
                dict(embed_dims=[4] * 5, depths=[1] * 5, num_heads=[2] * 5, init_values=[2] * 5,
                     heads_ranges=[4] * 5, mlp_ratios=[2] * 5, chunkwise_recurrents=[1] * 5,
                     layerscales=[0] * 5, projection=8, num_classes=3),
                "5 stages, use_checkpoints left at its 4-entry default", "use_checkpoints"),
        refusal("cls_short_num_heads", "classifier", dict(C3, num_heads=[2, 2]),
                "num_heads shorter than depths", "num_heads"),
        refusal("cls_init0", "classifier", dict(C3, init_values=[2, 2, 0]),
                "init_values 0: decay log(1 - 2^0) = -inf, masks -inf * 0 = NaN", "init_values"),
        refusal("cls_init_tiny", "classifier", dict(C3, init_values=[1e-9, 2, 2]),
                "init_values 1e-9: 2^-1e-9 rounds to 1 in float32, decay -inf", "init_values"),
        refusal("cls_range_too_negative", "classifier",
                dict(C3, init_values=[1, 1, 1], heads_ranges=[4, 4, -4]),
                "a negative heads_range that takes a head's exponent below 0: NaN", "heads_ranges"),
        refusal("cls_indivisible", "classifier", dict(C3, num_heads=[2, 3, 2]),
                "embed_dims[1] 8 not divisible by num_heads[1] 3", "num_heads"),
        refusal("cls_odd_head_dim", "classifier", dict(C3, embed_dims=[8, 6, 12]),
                "head dimension 3: the theta shift needs pairs", "num_heads"),
        refusal("cls_mlp_zero_width", "classifier", dict(C3, mlp_ratios=[0.1, 3, 3]),
                "int(0.1 * 8) = 0: an FFN of width 0", "mlp_ratios"),
        refusal("cls_float_dims", "classifier", dict(C3, embed_dims=[8.0, 8, 12]),
                "embed_dims written as floats", "embed_dims"),
        refusal("cls_longer_embed_dims", "classifier", dict(C3, embed_dims=[8, 8, 12, 16]),
                "embed_dims longer than depths with embed_dims[-1] != the last stage's width",
                "embed_dims"),
        refusal("cls_projection0", "classifier", dict(C3, projection=0), "projection 0",
                "projection"),
        refusal("cls_in_chans0", "classifier", dict(C3, in_chans=0), "in_chans 0", "in_chans",
                size=(1, 32, 32)),
        refusal("cls_stem_width1", "classifier",
                dict(C3, embed_dims=[1, 8, 12], depths=[0, 1, 1], num_heads=[1, 2, 2]),
                "embed_dims[0] 1: the stem's first convs get 0 channels", "embed_dims"),
        refusal("cls_negative_depth", "classifier", dict(C3, depths=[2, -1, 1]),
                "a negative depth", "depths",
                choice="the authors build no block for a negative depth (range(-1) is empty) and "
                       "shift the stochastic depth rates of the later stages: rmt refuses it"),
        refusal("cls_flag_string", "classifier",
                dict(C3, chunkwise_recurrents=["false", "false", "false"]),
                "flags as strings", "chunkwise_recurrents",
                choice="Python's truthiness makes the string \"false\" true: rmt refuses strings"),
        refusal("cls_out_indices", "classifier", dict(C3, out_indices=[0]),
                "out_indices given to a classifier", "out_indices"),
        refusal("cls_use_checkpoint", "classifier", dict(C3, use_checkpoint=True),
                "the dense backbone's use_checkpoint given to a classifier", "use_checkpoint"),
        refusal("tl_nc0_projection_mismatch", "token_label", dict(C3, num_classes=0),
                "token labeling without heads, projection 10 != embed_dims[-1] 12: the sum does "
                "not broadcast", "projection"),
        refusal("tl_token_label_false", "token_label", dict(C3, token_label=False),
                "token_label false under the kind token_label", "token_label",
                choice="token_label false builds the plain classifier: rmt asks for the kind "
                       "classifier instead"),
        refusal("dense_3stage_3dims", "dense", dict(D4, embed_dims=[4, 8, 8], depths=[1, 1, 1]),
                "3 stages with 3 embed_dims: the authors build 4 extra_norms from embed_dims[0..3]",
                "embed_dims"),
        refusal("dense_5stage_out4", "dense",
                dict(embed_dims=[4] * 5, depths=[1] * 5, num_heads=[2] * 5, init_values=[2] * 5,
                     heads_ranges=[4] * 5, mlp_ratios=[2] * 5, chunkwise_recurrents=[1] * 5,
                     layerscales=[0] * 5, out_indices=[4]),
                "5 stages, out_indices [4]: there is no extra_norms[4]", "out_indices"),
        refusal("dense_out_of_range", "dense", dict(D4, out_indices=[0, 4]),
                "out_indices [0, 4] with 4 stages", "out_indices",
                choice="the authors' `i in out_indices` silently ignores 4: rmt refuses it"),
        refusal("dense_negative_index", "dense", dict(D4, out_indices=[-1]),
                "out_indices [-1]", "out_indices",
                choice="the authors' `i in out_indices` never matches -1 (no output): rmt refuses it"),
        refusal("dense_num_classes", "dense", dict(D4, num_classes=3),
                "num_classes given to the dense backbone", "num_classes"),
        refusal("dense_use_checkpoints", "dense", dict(D4, use_checkpoints=[True] * 4),
                "the classifiers' use_checkpoints given to the dense backbone", "use_checkpoints"),
    ]
    return cases, refusals


def random_cases(count, seed):
    """Seeded random configurations the authors' code accepts, of every kind."""
    rng = random.Random(seed)
    cases = []
    while len(cases) < count:
        index = len(cases)
        # With the named cases, every kind with every stage count from 1 to 5.
        kind = ["classifier", "token_label", "dense"][index % 3]
        stages = [2, 1, 1, 4, 2, 2, 5, 4, 4, 3, 5, 3][index % 12]
        heads = [rng.choice([1, 2, 3]) for _ in range(stages)]
        dims = [h * rng.choice([2, 2, 4]) for h in heads]
        depths = [rng.choice([0, 1, 1, 1, 2]) if i else rng.choice([1, 1, 2]) for i in range(stages)]
        while sum(depths) > 5:
            depths[depths.index(max(depths))] -= 1
        dims[0] = max(dims[0], 2)
        init = [round(rng.uniform(0.5, 3), 2) for _ in range(stages)]
        ranges = []
        for i in range(stages):
            while True:
                r = round(rng.uniform(-2, 7), 2)
                n = heads[i]
                if init[i] + r * (n - 1) / n > 0.2:
                    ranges.append(r)
                    break
        mlp = []
        for d in dims:
            while True:
                m = rng.choice([0.5, 1, 1.5, 2, 2.5, 3, 4, round(rng.uniform(0.2, 4), 2)])
                if int(m * d) >= 1:
                    mlp.append(m)
                    break

        def flag():
            return rng.choice([True, False, 0, 1]) if rng.random() < 0.3 else rng.random() < 0.5

        config = dict(depths=depths, num_heads=heads, init_values=init, heads_ranges=ranges,
                      mlp_ratios=mlp, chunkwise_recurrents=[flag() for _ in range(stages)],
                      layerscales=[flag() for _ in range(stages)],
                      layer_init_values=rng.choice([1e-6, 1e-5, 0.1]),
                      drop_path_rate=round(rng.uniform(0, 0.5), 2),
                      in_chans=rng.choice([1, 2, 3, 3, 3, 4]))
        extra = rng.choice([0, 0, 1, 2])  # lists longer than depths: extra entries unused
        for key in ("num_heads", "init_values", "heads_ranges", "mlp_ratios"):
            config[key] = config[key] + [config[key][-1]] * extra
        if kind == "dense":
            dims = dims + [rng.choice([2, 4, 6, 8]) for _ in range(max(0, 4 - stages))]
            choice = rng.random()
            if choice < 0.5:
                available = list(range(min(stages, 4)))
                picked = [rng.choice(available) for _ in range(rng.randint(1, 4))]
                config["out_indices"] = picked
            config["norm_eval"] = rng.random() < 0.5
        else:
            dims = dims + [dims[-1]] * extra
            config["num_classes"] = rng.choice([-1, 0, 1, 3, 5, 7])
            config["projection"] = rng.choice([4, 8, 12, 20])
            if kind == "token_label" and config["num_classes"] <= 0:
                config["projection"] = rng.choice([dims[-1], dims[-1], 1])
            if stages > 4 or rng.random() < 0.5:
                config["use_checkpoints"] = [flag() for _ in range(max(stages, 4) + extra)]
        config["embed_dims"] = dims
        size = (rng.choice([1, 1, 2]), rng.randint(5, 27), rng.randint(5, 27))
        cases.append(case("random_%02d" % index, kind, config,
                          "seeded random configuration %d (seed %d)" % (index, seed), size=size))
    return cases


# --- writing ----------------------------------------------------------------------------------

def outcome_of(constructors, entry, generator):
    """What the authors' code does with a refused config: its error, or what it computes."""
    try:
        model = build(constructors, entry["kind"], entry["config"])
        set_mode(model, "eval")
        b, h, w = entry["size"]
        channels = entry["config"].get("in_chans", 3)
        x = torch.randn(b, channels, h, w, generator=generator)
        outputs = run(model, x)
        again = run(model, torch.randn(b, channels, h, w, generator=generator))
    except Exception as e:  # noqa: BLE001 - any failure of their code is the recorded outcome
        return "error: %s: %s" % (type(e).__name__, str(e).splitlines()[0][:160])
    if not all(torch.isfinite(o).all() for o in outputs):
        return "accepted; non-finite output"
    if outputs and all(torch.equal(a, b) for a, b in zip(outputs, again)):
        return "accepted; the output does not depend on the input"
    return "accepted; %d finite output(s)" % len(outputs)


def write_case(constructors, entry, out_dir, seed):
    generator = torch.Generator().manual_seed(seed)
    config = dict(entry["config"])
    kind = entry["kind"]
    if entry.pop("authors_use_checkpoint_false", False):
        entry["authors"] = outcome_of(constructors, dict(entry, size=[1, 32, 32]), generator)
        config["use_checkpoint"] = False
    model = build(constructors, kind, config)
    name = entry["name"]
    source = entry.pop("weights_of", None)
    if source:  # the same architecture as an earlier case: its checkpoint serves both
        model.load_state_dict(torch.load(os.path.join(out_dir, source + ".pth")))
        entry["checkpoint"] = source + ".pth"
    else:
        perturb(model, generator)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        torch.save(state, os.path.join(out_dir, name + ".pth"))
        entry["checkpoint"] = name + ".pth"
    b, h, w = entry.pop("size")
    x = torch.randn(b, config.get("in_chans", 3), h, w, generator=generator, dtype=torch.float64)
    set_mode(model, entry["mode"])
    outputs32 = run(model, x.float())  # float32 first: train mode updates the running statistics
    model.double()
    outputs = run(model, x)
    for o in outputs:
        if not torch.isfinite(o).all():
            raise RuntimeError("%s: the authors' output is not finite" % name)
    # The authors' own float32 error bounds what any float32 run can reach on this case.
    error = max([float((a.double() - b).norm() / b.norm()) for a, b in zip(outputs32, outputs)],
                default=0.0)
    if error > 5e-6:
        raise RuntimeError("%s: ill-conditioned (the authors' float32 error is %.2g)" % (name, error))
    entry["authors_float32_error"] = float("%.3g" % error)
    np.save(os.path.join(out_dir, name + ".input.npy"), x.numpy())
    entry["input"] = name + ".input.npy"
    if kind == "dense":
        # Which stage each output holds: the authors' loop order, stages `i in out_indices`.
        out_indices = config.get("out_indices", (0, 1, 2, 3))
        stages = [i for i in range(len(config["depths"])) if i in out_indices]
        assert len(stages) == len(outputs), name
        entry["stages"] = stages
        entry["outputs"] = ["%s.stage%d.npy" % (name, s) for s in stages]
    else:
        entry["outputs"] = [name + ".output.npy"]
    for file, o in zip(entry["outputs"], outputs):
        np.save(os.path.join(out_dir, file), o.numpy())
    return entry


def versions(repo, commit):
    if commit is None:
        try:
            commit = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], check=True,
                                    capture_output=True, text=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            commit = "unknown (not a git clone; pass --official-commit)"
    import timm  # noqa: E402 - the authors' code needs it; imported here for its version only
    return {"official_repo_commit": commit, "torch": torch.__version__, "timm": timm.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official-repo", required=True, help="a clone of github.com/qhfan/RMT")
    parser.add_argument("--official-commit", help="its commit, when the folder is not a git clone")
    parser.add_argument("--out", required=True, help="output folder (tests/data/configs)")
    parser.add_argument("--random", type=int, default=12, help="number of random configurations")
    parser.add_argument("--seed", type=int, default=20240610)
    args = parser.parse_args()
    for kind, file in MODEL_FILES.items():
        if not os.path.isfile(os.path.join(args.official_repo, file)):
            parser.error("%s has no %s (the %s model)" % (args.official_repo, file, kind))
    torch.set_num_threads(1)
    constructors = load_constructors(args.official_repo)
    os.makedirs(args.out, exist_ok=True)
    cases, refusals = named_cases()
    cases += random_cases(args.random, args.seed)
    written = []
    for i, entry in enumerate(cases):
        written.append(write_case(constructors, entry, args.out, args.seed + 1000 + i))
        print("%-28s %s" % (entry["name"], entry["outputs"]))
    generator = torch.Generator().manual_seed(args.seed)
    for entry in refusals:
        entry["authors"] = outcome_of(constructors, entry, generator)
        del entry["size"]
        print("%-28s refused (%s); the authors: %s" % (entry["name"], entry["refuse_naming"],
                                                      entry["authors"]))
        if entry["authors"].endswith("finite output(s)") and "rmt_choice" not in entry:
            raise RuntimeError(entry["name"] + ": the authors accept it; say why rmt refuses")
    manifest = {
        "generated_by": "tests/data/gen/make_config_cases.py: the authors' constructors "
                        "(%s), outputs in float64 from float32 weights" % ", ".join(MODEL_FILES.values()),
        "versions": versions(args.official_repo, args.official_commit),
        "seed": args.seed,
        "cases": written,
        "refused": refusals,
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()

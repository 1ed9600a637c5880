#!/usr/bin/env python3
"""Writes the small hand-made seeds of the fuzz corpus (fuzz/corpus/<target>/seed-*).

Small seeds keep the fuzzers fast (the reference checkpoints in tests/data are hundreds of KB
each; these are a few KB) while reaching the same code: torch.save zip archives under several
archive names, the legacy format, every dtype the readers accept, views sharing a storage,
parameters, training checkpoints with an argparse.Namespace, NumPy scalars, safetensors files,
and plain pickles of protocols 0 to 5.

    python3 fuzz/make_seeds.py [OUT_DIR]      (default: fuzz/corpus; needs torch and numpy)

The output is deterministic for one torch version, except for the zip timestamps torch writes
(none: torch.save writes 1980-00-00).
"""
import argparse
import collections
import io
import json
import os
import pickle
import struct
import sys
import zipfile

import numpy as np
import torch


def tensors():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    return {
        "stem.weight": torch.randn(2, 3, 1, 1, generator=g),
        "stem.bias": torch.zeros(2),
        "view.rows": base[1:3],          # a view: shares the storage of base with an offset
        "view.t": base.t(),              # non-contiguous strides
        "base": base,
        "scalar": torch.tensor(3.5),     # 0-dim
        "empty": torch.zeros(0, 3),
        "half": torch.randn(3, generator=g).half(),
        "bf16": torch.randn(3, generator=g).bfloat16(),
        "f64": torch.randn(2, generator=g).double(),
        "i64": torch.arange(3),
        "i32": torch.arange(3, dtype=torch.int32),
        "i16": torch.arange(3, dtype=torch.int16),
        "i8": torch.arange(-1, 2, dtype=torch.int8),
        "u8": torch.arange(3, dtype=torch.uint8),
        "bool": torch.tensor([True, False]),
        "bn.num_batches_tracked": torch.tensor(7),
    }


def state_dict(prefix=""):
    g = torch.Generator().manual_seed(1)
    return collections.OrderedDict(
        (prefix + k, v) for k, v in [
            ("patch_embed.proj.0.weight", torch.randn(4, 3, 3, 3, generator=g)),
            ("patch_embed.proj.0.bias", torch.randn(4, generator=g)),
            ("head.weight", torch.randn(2, 4, generator=g)),
            ("head.bias", torch.zeros(2)),
        ])


def training_checkpoint():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    args = argparse.Namespace(model="RMT_T", batch_size=128, lr=1e-3, epochs=300,
                              drop_path=0.1, data_path="/data/imagenet", dist_eval=True,
                              betas=None, crop=(224, 224))
    return {
        "model": state_dict(),
        "model_ema": state_dict(),
        "optimizer": opt.state_dict(),
        "lr_scheduler": {"last_epoch": 299, "base_lrs": [0.001]},
        "epoch": 299,
        "max_accuracy": np.float64(82.4),
        "step": np.int64(12),
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0},
        "args": args,
        "big": 2 ** 80,
        "blob": b"\x00\x01binary",
        "tags": {"a", "b"},
        "frozen": frozenset([1]),
        "params": torch.nn.Parameter(torch.ones(2)),
    }


def save(obj, **kw):
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    return buf.getvalue()


def rename_archive(data, name):
    """The same zip with its records under NAME/ (torch.save names them after the file)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            rest = info.filename.split("/", 1)[1]
            dst.writestr(name + "/" + rest, src.read(info))
    return out.getvalue()


def safetensors(named, metadata=None):
    codes = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32",
             torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
             torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for k, t in named.items():
        t = t.contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[k] = {"dtype": codes[t.dtype], "shape": list(t.shape),
                     "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")
    files = {}

    ts = files.setdefault("torch_save", {})
    ts["seed-state_dict.pth"] = save(state_dict())
    ts["seed-module_prefix.pth"] = rename_archive(save(state_dict("module.")), "checkpoint")
    ts["seed-dtypes.pth"] = rename_archive(save(tensors()), "weights-v2.1")
    ts["seed-training.pth"] = save(training_checkpoint())
    ts["seed-dense.pth"] = save({"meta": {"epoch": 1}, "state_dict": state_dict("backbone.")})
    ts["seed-timm.pth"] = save({"state_dict": state_dict(), "arch": "rmt_t", "epoch": 3})
    ts["seed-bare_tensor.pth"] = save(torch.ones(2, 2))
    ts["seed-legacy.pth"] = save(state_dict(), _use_new_zipfile_serialization=False)
    ts["seed-legacy_dtypes.pth"] = save(tensors(), _use_new_zipfile_serialization=False)
    ts["seed-legacy_training.pth"] = save(training_checkpoint(),
                                          _use_new_zipfile_serialization=False)
    ts["seed-legacy_proto4.pth"] = save(state_dict(), pickle_protocol=4,
                                        _use_new_zipfile_serialization=False)
    ts["seed-safetensors.safetensors"] = safetensors(state_dict(), {"format": "pt"})

    st = files.setdefault("safetensors", {})
    st["seed-state_dict.safetensors"] = safetensors(state_dict(), {"format": "pt", "arch": "x"})
    dt = {k: v for k, v in tensors().items()}
    st["seed-dtypes.safetensors"] = safetensors(dt)
    st["seed-empty.safetensors"] = safetensors({})

    pk = files.setdefault("pickle", {})
    for name in ["state_dict", "training", "dtypes"]:
        z = zipfile.ZipFile(io.BytesIO(ts["seed-%s.pth" % name]))
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
        pk["seed-%s.pkl" % name] = z.read(pkl)
    plain = {
        "none": None, "t": True, "f": False, "int": -5, "big": -(2 ** 70), "huge": 2 ** 300,
        "float": 1.5, "inf": float("inf"), "str": "h\u00e9llo \u2603 \U0001f600", "bytes": b"\x00\xff",
        "bytearray": bytearray(b"ab"), "list": [1, [2, [3]]], "tuple": (1,), "pair": (1, 2),
        "triple": (1, 2, 3), "long_tuple": (1, 2, 3, 4), "set": {1, 2}, "frozenset": frozenset({3}),
        "od": collections.OrderedDict(a=1), "dd": collections.defaultdict(list, {"k": [1]}),
        "ns": argparse.Namespace(x=1, y="z"), "np": np.float32(2.5), "np_i": np.int16(-3),
        "complex": 1 + 2j, "slice": slice(1, 5, 2), "range": range(3), 1: "int key",
        (1, 2): "tuple key",
    }
    shared = [1, 2]
    plain["shared"] = [shared, shared]
    rec = []
    rec.append(rec)
    plain["recursive"] = rec
    for proto in range(0, 6):
        pk["seed-plain_p%d.pkl" % proto] = pickle.dumps(plain, protocol=proto)

    for target, named in files.items():
        d = os.path.join(out, target)
        os.makedirs(d, exist_ok=True)
        for name, data in named.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
            print("%-60s %7d bytes" % (os.path.join(d, name), len(data)))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the hostile seeds of the fuzz corpus (fuzz/corpus/<target>/seed-hostile-*): one small
file (under 64 KiB, the fuzzers' MAX_LEN) per class of attack that tests/test_checkpoint_bounds.cpp
checks at full size, so the fuzzers start from each class and mutate it.

    python3 fuzz/make_hostile_seeds.py [OUT_DIR]      (default: fuzz/corpus; plain Python)

Classes: dict keys set again and again, a shared object referenced many times, quadratic text
integers, repeated conversions, a bytes object passed to bytes() many times, zip entries whose
bytes overlap, a long size list, a long JSON token, control bytes in names, a bool tensor over an
untyped storage, lists filled after they were nested, totals past 2^63, and safetensors files that
break the reference rules (duplicate names or fields, gaps, overlaps, trailing bytes).
"""
import argparse
import json
import os
import struct
import zlib


def le32(v):
    return struct.pack("<I", v)


def le64(v):
    return struct.pack("<Q", v)


class Pickle:
    def __init__(self, protocol=2):
        self.b = bytearray(b"\x80" + bytes([protocol]))

    def raw(self, data):
        self.b += data
        return self

    def str(self, s):
        data = s.encode("utf-8", "surrogateescape") if isinstance(s, str) else s
        self.b += b"X" + le32(len(data)) + data
        return self

    def int(self, v):
        if 0 <= v < 256:
            self.b += b"K" + bytes([v])
        else:
            self.b += b"\x8a\x08" + struct.pack("<q", v)
        return self

    def glob(self, module, name):
        self.b += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
        return self

    def ints(self, values):
        self.b += b"("
        for v in values:
            self.int(v)
        self.b += b"t"
        return self

    def tensor(self, storage_type, key, numel, offset, size, stride, v3_dtype=None):
        self.glob("torch._utils", "_rebuild_tensor_v3" if v3_dtype else "_rebuild_tensor_v2")
        self.raw(b"((").str("storage").glob("torch", storage_type).str(key).str("cpu").int(numel)
        self.raw(b"tQ").int(offset).ints(size).ints(stride).raw(b"\x89")
        self.glob("collections", "OrderedDict").raw(b")R")
        if v3_dtype:
            self.glob("torch", v3_dtype)
        return self.raw(b"tR")

    def done(self):
        return bytes(self.b + b".")


def put(i):
    return b"r" + le32(i)


def get(i):
    return b"j" + le32(i)


def zip_entries(entries):
    """A stored zip archive of (name, data) pairs, as torch.save writes them."""
    out, central = bytearray(), bytearray()
    for name, data in entries:
        n = name.encode()
        crc = zlib.crc32(data)
        offset = len(out)
        out += le32(0x04034b50) + struct.pack("<HHHHHIIIHH", 20, 0, 0, 0, 0, crc,
                                              len(data), len(data), len(n), 0) + n + data
        central += le32(0x02014b50) + struct.pack("<HHHHHHIIIHHHHHII", 20, 20, 0, 0, 0, 0, crc,
                                                  len(data), len(data), len(n), 0, 0, 0, 0, 0,
                                                  offset) + n
    cd = len(out)
    out += central
    out += le32(0x06054b50) + struct.pack("<HHHHIIH", 0, 0, len(entries), len(entries),
                                          len(central), cd, 0)
    return bytes(out)


def torch_zip(pkl, storages=()):
    entries = [("archive/data.pkl", pkl), ("archive/byteorder", b"little")]
    entries += [("archive/data/" + k, v) for k, v in storages]
    entries.append(("archive/version", b"3\n"))
    return zip_entries(entries)


def overlapping_zip(count, span):
    """count records of span bytes whose ranges overlap: each local header lies in the data of
    the one before."""
    p = Pickle().raw(b"}(")
    for k in range(count):
        p.str("w%d" % k).tensor("ByteStorage", str(k), span, 0, [span], [1])
    pkl = p.raw(b"u").done()
    out = bytearray()
    name = b"a/data.pkl"
    out += le32(0x04034b50) + struct.pack("<HHHHHIIIHH", 20, 0, 0, 0, 0, zlib.crc32(pkl),
                                          len(pkl), len(pkl), len(name), 0) + name + pkl
    first = len(out)
    names = [("a/data/%d" % k).encode() for k in range(count)]
    offsets, at = [], 0
    for n in names:
        offsets.append(at)
        at += 30 + len(n)
    region = bytearray(b"z" * (at + span))
    crcs = [0] * count
    for k in reversed(range(count)):
        data_at = offsets[k] + 30 + len(names[k])
        crcs[k] = zlib.crc32(bytes(region[data_at:data_at + span]))
        header = le32(0x04034b50) + struct.pack("<HHHHHIIIHH", 20, 0, 0, 0, 0, crcs[k], span,
                                                span, len(names[k]), 0) + names[k]
        region[offsets[k]:offsets[k] + len(header)] = header
    out += region
    central = bytearray()

    def entry(n, crc, size, offset):
        return le32(0x02014b50) + struct.pack("<HHHHHHIIIHHHHHII", 20, 20, 0, 0, 0, 0, crc, size,
                                              size, len(n), 0, 0, 0, 0, 0, offset) + n

    central += entry(name, zlib.crc32(pkl), len(pkl), 0)
    for k in range(count):
        central += entry(names[k], crcs[k], span, first + offsets[k])
    cd = len(out)
    out += central
    out += le32(0x06054b50) + struct.pack("<HHHHIIH", 0, 0, count + 1, count + 1, len(central),
                                          cd, 0)
    return bytes(out)


def safetensors(header, data=b""):
    h = header.encode("utf-8", "surrogateescape") if isinstance(header, str) else header
    return le64(len(h)) + h + data


def pickles():
    seeds = {}
    # dict keys set again and again through the memo
    p = Pickle().raw(b"}" + put(0)).str("k" * 10000).raw(put(1) + b"N" + put(2) + b"00")
    seeds["dict-key-again"] = p.raw(b"h\x01h\x02s" * 3000).done()
    # a shared Namespace referenced by many dicts
    p = Pickle().raw(b"}(").glob("argparse", "Namespace").raw(b")\x81" + put(0) + b"}(")
    for i in range(40):
        p.str("f%d" % i).str("x" * 80)
    p.raw(b"ub0")
    for e in range(40):
        p.str("entry%d" % e).raw(b"}(")
        for k in range(10):
            p.str("k%d" % k).raw(get(0))
        p.raw(b"u")
    seeds["shared-namespace"] = p.raw(b"u").done()
    # quadratic text integers
    seeds["text-ints"] = b"(l" + (b"L" + b"7" * 4300 + b"L\na") * 10 + b"."
    # bytes(list) scanned again and again
    p = Pickle().glob("builtins", "bytes").raw(put(0) + b"0")
    p.raw(b"](K\x01" + put(1) + get(1) * 2000 + b"Ne" + put(2) + b"0")
    seeds["bytes-of-list"] = p.raw((get(0) + get(2) + b"\x85R0") * 500 + b"N").done()
    # one bytes object passed to bytes() many times; a str encoded many times
    p = Pickle().glob("builtins", "bytes").raw(put(0) + b"0")
    p.raw(b"B" + le32(4096) + b"b" * 4096 + put(1) + b"0]" + put(2) + b"0")
    seeds["bytes-copies"] = p.raw((get(2) + get(0) + get(1) + b"\x85Ra") * 1000 + get(2)).done()
    p = Pickle().glob("_codecs", "encode").raw(put(0) + b"0").str("e" * 4096).raw(put(1) + b"0")
    p.str("latin1").raw(put(2) + b"0]" + put(3) + b"0")
    seeds["encode-copies"] = p.raw((get(3) + get(0) + get(1) + get(2) + b"\x86Ra") * 1000 +
                                   get(3)).done()
    # lists filled after they were nested (depth seen at insertion stays 1)
    p = bytearray(b"\x80\x02]" + put(0))
    for i in range(1, 4000):
        p += get(i - 1) + b"]" + put(i) + b"a0"
    seeds["nested-after"] = bytes(p + get(0) + b".")
    # control bytes and a long name as keys
    p = Pickle().raw(b"}(").str("x\r\x1b[2Kall weights loaded\n").int(1).str("n" * 20000).int(2)
    seeds["control-keys"] = p.raw(b"u").done()
    return seeds


def torch_saves():
    seeds = {}
    # a tensor with a long size list
    p = Pickle().raw(b"}(").str("w").glob("torch._utils", "_rebuild_tensor_v2").raw(b"((")
    p.str("storage").glob("torch", "FloatStorage").str("0").str("cpu").int(1).raw(b"tQ")
    p.int(0).int(1).raw(put(0) + b"0(" + get(0) * 5000 + b"t").ints([1]).raw(b"\x89")
    p.glob("collections", "OrderedDict").raw(b")RtRu")
    seeds["size-list"] = torch_zip(p.done(), [("0", struct.pack("<f", 1))])
    # bool over an untyped storage, with a byte that is not 0 or 1
    p = Pickle().raw(b"}(").str("b").tensor("UntypedStorage", "0", 3, 0, [3], [1], v3_dtype="bool")
    seeds["v3-bool"] = torch_zip(p.raw(b"u").done(), [("0", b"\x01\x02\x00")])
    # sixteen names for a stride-0 view of 2^60 elements
    p = Pickle().raw(b"}(").str("t0").tensor("FloatStorage", "0", 1, 0, [1 << 60], [0])
    p.raw(put(0))
    for i in range(1, 16):
        p.str("t%d" % i).raw(get(0))
    seeds["huge-view"] = torch_zip(p.raw(b"u").done(), [("0", struct.pack("<f", 1))])
    # zip entries whose bytes overlap
    seeds["zip-overlap"] = overlapping_zip(20, 2048)
    # a shared Namespace in a checkpoint (describe)
    seeds["shared-namespace"] = torch_zip(pickles()["shared-namespace"])
    seeds["control-keys"] = torch_zip(pickles()["control-keys"])
    return seeds


def safetensors_seeds():
    a = '"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}'
    eight = struct.pack("<ff", 1, 2)
    return {
        "st-duplicate-name": safetensors("{" + a + "," + a + "}", eight),
        "st-gap": safetensors("{" + a + ',"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}',
                              eight * 2 + b"pad!"),
        "st-not-at-zero": safetensors('{"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}',
                                      eight * 2),
        "st-trailing": safetensors("{" + a + "}", eight + b"trailing"),
        "st-overlap": safetensors("{" + a + ',"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}',
                                  eight + eight[:4]),
        "st-duplicate-field": safetensors(
            '{"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}', eight),
        "st-duplicate-metadata": safetensors('{"__metadata__":{"k":"1","k":"2"},' + a + "}", eight),
        "st-long-token": safetensors('{"' + "a" * 8000),
        "st-stride-overflow": safetensors(
            '{"z":{"dtype":"F32","shape":[0,1099511627776,1099511627776],"data_offsets":[0,0]}}'),
        "st-control-name": safetensors(
            json.dumps({"\r\x1b[2Kall weights loaded\n": {"dtype": "F32", "shape": [2],
                                                          "data_offsets": [0, 8]}}), eight),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?",
                        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus"))
    args = parser.parse_args()
    groups = {"pickle": pickles(), "torch_save": torch_saves(), "safetensors": safetensors_seeds()}
    groups["torch_save"].update(safetensors_seeds())
    for target, seeds in groups.items():
        folder = os.path.join(args.out, target)
        os.makedirs(folder, exist_ok=True)
        for name, data in seeds.items():
            assert len(data) <= 65536, (target, name, len(data))
            with open(os.path.join(folder, "seed-hostile-" + name), "wb") as f:
                f.write(data)
    print("wrote", sum(len(s) for s in groups.values()), "seeds to", args.out)


if __name__ == "__main__":
    main()

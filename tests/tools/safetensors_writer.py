#!/usr/bin/env python3
"""Writes safetensors files, valid and deliberately broken, with the standard library only.

Used by tests/unit/test_weights.c (which runs `safetensors_writer.py cases DIR`) and to
regenerate the fuzz seeds (`safetensors_writer.py corpus DIR`). No numpy or torch, so the
bytes on disk are exactly what this file says they are, independent of any other writer.

Layout (model/FORMAT.md): 8-byte little-endian header length N, N bytes of JSON, data.

As a library:
    from safetensors_writer import Tensor, build
    blob = build([Tensor("blur.fc.bias", "F32", [1], [0.5])], {"format": "gastroscreen-bundle"})
"""

import json
import math
import os
import struct
import sys
from dataclasses import dataclass, field

DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2}


def encode(dtype, values):
    """Little-endian bytes of `values` in `dtype`; refuses values the dtype cannot hold exactly,
    so a test never compares against a silently rounded number."""
    out = bytearray()
    for v in values:
        if dtype == "F32":
            b = struct.pack("<f", v)
            back = struct.unpack("<f", b)[0]
        elif dtype == "F16":
            b = struct.pack("<e", v)
            back = struct.unpack("<e", b)[0]
        elif dtype == "BF16":
            full = struct.pack("<f", v)
            b = full[2:4]  # bfloat16 is the high half of a little-endian binary32
            back = struct.unpack("<f", b"\0\0" + b)[0]
        else:
            raise ValueError("no encoder for dtype %s" % dtype)
        same = (math.isnan(v) and math.isnan(back)) or (
            back == v and math.copysign(1, back) == math.copysign(1, v))
        if dtype != "F32" and not same:
            raise ValueError("%r is not exact in %s" % (v, dtype))
        out += b
    return bytes(out)


@dataclass
class Tensor:
    name: str
    dtype: str
    shape: list
    values: list = field(default_factory=list)
    raw: bytes = None  # bytes to store instead of encoding `values`


def build(tensors, metadata=None, pad_to=8, sort_header=True, extra_header_spaces=0):
    """A valid safetensors blob. Data is laid out in list order; the header lists tensors
    sorted by name (as the reference writer does) unless sort_header is False, so header order
    and file order differ. The header is padded with spaces to a multiple of `pad_to`
    (1 = no padding), then `extra_header_spaces` more, to move the data off alignment."""
    header = {}
    data = bytearray()
    entries = {}
    for t in tensors:
        blob = t.raw if t.raw is not None else encode(t.dtype, t.values)
        entries[t.name] = {"dtype": t.dtype, "shape": list(t.shape),
                           "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    for name in (sorted(entries) if sort_header else entries):
        header[name] = entries[name]
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad_to > 1:
        text += b" " * (-len(text) % pad_to)
    text += b" " * extra_header_spaces
    return struct.pack("<Q", len(text)) + text + bytes(data)


def raw(header_text, data=b"", header_len=None):
    """A blob with a header written by hand (for broken JSON, duplicate keys...) and an
    optional lie about the header length."""
    if isinstance(header_text, str):
        header_text = header_text.encode()
    n = len(header_text) if header_len is None else header_len
    return struct.pack("<Q", n) + header_text + data


def entry_json(dtype="F32", shape=(1,), offsets=(0, 4)):
    return json.dumps({"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)})


def one(entry_text, data=b"\0" * 4, name="t"):
    """A single-tensor file with a hand-written entry."""
    return raw('{"%s":%s}' % (name, entry_text), data)


# The metadata contract of model/FORMAT.md, as the exporter writes it.
BUNDLE_METADATA = {
    "format": "gastroscreen-bundle",
    "format_version": "1",
    "input_colour": "RGB",
    "input_mean": "0.485,0.456,0.406",
    "input_std": "0.229,0.224,0.225",
    "target_mpp": "0.5",
    "tile_size": "512",
    "topk": "64",
    "threshold.screen": "0.74",
    "threshold.blur": "0.5",
    "threshold.foreground": "0.5",
    "activation": "relu",
    "bn_eps": "1e-5",
    "provenance.multitask": "untrained",
    "provenance.foreground": "untrained",
    "provenance.blur": "untrained",
    "provenance.screener": "untrained",
    "created": "2024-01-01T00:00:00Z",
    "creator": "safetensors_writer.py (tests)",
}

# Values exact in each dtype, including each one's extremes. test_weights.c holds the same
# numbers as C literals/bit patterns and compares bit for bit.
F32_VALUES = [1.5, -2.25, 2.0 ** -149, 3.4028234663852886e38, -0.0, math.inf,
              struct.unpack("<f", struct.pack("<f", 0.1))[0]]
F16_VALUES = [1.0, -2.5, 65504.0, 2.0 ** -24, 2.0 ** -14, 1023 * 2.0 ** -24, -0.0, math.inf,
              -math.inf, math.nan]
BF16_VALUES = [1.0, -3.140625, 2.0 ** -133, (2 - 2.0 ** -7) * 2.0 ** 127, -0.0, math.inf,
               2.0 ** -126]


def valid_cases():
    mixed = [
        # Data order (file order) deliberately not alphabetical.
        Tensor("multitask.cls.fc.weight", "F32", [1, 7], F32_VALUES),
        Tensor("blur.fc.bias", "F32", [], [0.25]),
        Tensor("foreground.logit.weight", "F16", [2, 5], F16_VALUES),
        Tensor("foreground.empty", "F32", [0, 3], []),
        Tensor("screener.fc.weight", "BF16", [7], BF16_VALUES),
    ]
    return {
        "valid_mixed.safetensors": build(mixed, BUNDLE_METADATA),
        # Header length 8k+1: every tensor starts at an odd address.
        "valid_unaligned.safetensors": build(mixed, BUNDLE_METADATA, pad_to=8,
                                             extra_header_spaces=1),
        "valid_no_metadata.safetensors": build([Tensor("blur.fc.weight", "F32", [1, 2],
                                                       [1.0, 2.0])]),
        "valid_empty.safetensors": raw("{}"),
        "valid_other_version.safetensors": build(
            [Tensor("blur.fc.bias", "F32", [1], [0.0])],
            dict(BUNDLE_METADATA, format_version="2")),
    }


def malformed_cases():
    """name -> blob. test_weights.c pairs each name with the message it must produce."""
    good = build([Tensor("a", "F32", [2], [1.0, 2.0]), Tensor("b", "F32", [1], [3.0])])
    hlen = struct.unpack("<Q", good[:8])[0]
    f4 = b"\0" * 4
    return {
        "bad_empty.safetensors": b"",
        "bad_short.safetensors": b"\x10\0\0\0\0",
        "bad_header_zero.safetensors": struct.pack("<Q", 0) + b"{}",
        "bad_header_huge.safetensors": struct.pack("<Q", 1 << 40) + b"{}",
        "bad_header_beyond.safetensors": raw("{}", header_len=1000),
        "bad_truncated_header.safetensors": good[:8 + hlen // 2],
        "bad_truncated_data.safetensors": good[:-2],
        "bad_json.safetensors": raw('{"a": {"dtype": "F32",'),
        "bad_trailing_json.safetensors": raw('{} {}'),
        "bad_duplicate_key.safetensors": raw('{"a":%s,"a":%s}' % (entry_json(), entry_json()),
                                             f4),
        "bad_not_object.safetensors": raw("[1,2]"),
        "bad_entry_not_object.safetensors": raw('{"a":5}'),
        "bad_missing_dtype.safetensors": one('{"shape":[1],"data_offsets":[0,4]}'),
        "bad_missing_shape.safetensors": one('{"dtype":"F32","data_offsets":[0,4]}'),
        "bad_missing_offsets.safetensors": one('{"dtype":"F32","shape":[1]}'),
        "bad_dtype_i64.safetensors": one(entry_json("I64", (1,), (0, 8)), b"\0" * 8),
        "bad_dtype_u8.safetensors": one(entry_json("U8", (4,), (0, 4))),
        "bad_dtype_not_string.safetensors": one('{"dtype":4,"shape":[1],"data_offsets":[0,4]}'),
        "bad_shape_not_array.safetensors": one('{"dtype":"F32","shape":4,"data_offsets":[0,4]}'),
        "bad_shape_9_dims.safetensors": one(entry_json(shape=(1,) * 9)),
        "bad_shape_negative.safetensors": one(entry_json(shape=(1, -1))),
        "bad_shape_float.safetensors": one(entry_json(shape=(1.0,))),
        "bad_shape_overflow.safetensors": one(entry_json(shape=(1 << 31, 1 << 31, 1 << 2))),
        "bad_shape_huge_int.safetensors": one(
            '{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,4]}'),
        "bad_offsets_not_pair.safetensors": one('{"dtype":"F32","shape":[1],"data_offsets":[0]}'),
        "bad_offsets_not_int.safetensors": one(
            '{"dtype":"F32","shape":[1],"data_offsets":[0,"4"]}'),
        "bad_offsets_negative.safetensors": one(entry_json(offsets=(-4, 0))),
        "bad_begin_gt_end.safetensors": one(entry_json(shape=(0,), offsets=(4, 0))),
        "bad_offset_out_of_range.safetensors": one(entry_json(offsets=(4, 8))),
        "bad_size_mismatch.safetensors": one(entry_json(shape=(2,), offsets=(0, 4))),
        "bad_overlap.safetensors": raw('{"a":%s,"b":%s}' % (entry_json(shape=(2,), offsets=(0, 8)),
                                                            entry_json(offsets=(4, 8))), b"\0" * 8),
        "bad_gap_between.safetensors": raw('{"a":%s,"b":%s}' % (entry_json(offsets=(0, 4)),
                                                                entry_json(offsets=(8, 12))),
                                           b"\0" * 12),
        "bad_gap_start.safetensors": one(entry_json(offsets=(4, 8)), b"\0" * 8),
        "bad_trailing_data.safetensors": one(entry_json(), b"\0" * 6),
        "bad_data_no_tensors.safetensors": raw("{}", b"\0" * 4),
        "bad_metadata_not_object.safetensors": raw('{"__metadata__":"x"}'),
        "bad_metadata_nonstring.safetensors": raw('{"__metadata__":{"tile_size":512}}'),
        "bad_empty_name.safetensors": one(entry_json(), name=""),
    }


def corpus_cases():
    """Small seeds for the fuzzer: every valid case and a spread of broken ones."""
    seeds = dict(valid_cases())
    bad = malformed_cases()
    for name in ("bad_duplicate_key.safetensors", "bad_overlap.safetensors",
                 "bad_gap_between.safetensors", "bad_shape_overflow.safetensors",
                 "bad_metadata_nonstring.safetensors", "bad_truncated_data.safetensors",
                 "bad_size_mismatch.safetensors", "bad_dtype_i64.safetensors"):
        seeds[name] = bad[name]
    return seeds


def write_all(cases, outdir):
    os.makedirs(outdir, exist_ok=True)
    for name, blob in cases.items():
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(blob)


def main(argv):
    if len(argv) != 3 or argv[1] not in ("cases", "corpus"):
        sys.stderr.write("usage: %s cases|corpus OUTDIR\n" % argv[0])
        return 2
    if argv[1] == "cases":
        write_all(dict(valid_cases(), **malformed_cases()), argv[2])
    else:
        write_all(corpus_cases(), argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

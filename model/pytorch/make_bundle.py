#!/usr/bin/python3
"""Seeded generator of test bundles: random but numerically sane weights, or broken files.

    /usr/bin/python3 model/pytorch/make_bundle.py --seed N --out F
        [--nets multitask,foreground,blur,screener] [--broken KIND]
        [--created ISO8601] [--dtype f32|f16|bf16] [--activation relu|leaky:<slope>]
        [--calib-size 256] [--trained model/trained/blur.safetensors ...]

Weights (provenance "untrained") are drawn from a torch.Generator seeded per network from
--seed, so choosing fewer --nets does not change the others. They are built to give
activations that neither explode nor vanish through the 30+ layers, and to exercise every
path of a runtime:
- convs He-normal, biases small and non-zero, BN gammas in [0.7, 1.3], betas ~ N(0, 0.1);
- BN running statistics are measured: one pass in train mode (momentum None, i.e. the
  plain batch statistics) over smooth random tile-like images (--calib-size square,
  batch 2), then rounded to 10 mantissa bits and var clamped to >= 1e-2 so the bytes do
  not hinge on the last bits of a float sum;
- each DCN's conv_offset_mask is scaled during that pass, from the measured second moment
  of its input, so offsets have a standard deviation of 1 to 3 pixels (4.5 pixels on
  dla_up.ida_0.proj_1, whose 16x16 input makes many samples fall beyond the map), offset
  biases are ~ N(0, 0.5) and mask logits have a standard deviation of about 1.5;
- the depthwise transposed convs are bilinear times (1 +- 0.2) noise, so a runtime that
  hard-codes bilinear upsampling fails parity.
The calibration runs single-threaded so the same seed gives the same bytes on one machine
(only the "created" metadata changes unless --created is given).

--broken KIND writes a file a loader must reject (the first line printed names what was
broken). KINDS lists them: structural ones (truncated, header-overflow, duplicate-key,
offsets-gap, bad-dtype, metadata-non-string) break the safetensors layout; the others
(missing-tensor, unexpected-tensor, wrong-shape, nan-values, inf-values, missing-metadata,
bad-format-version) are valid safetensors that violate the bundle contract.
"""

import argparse
import json
import math
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import bundle  # noqa: E402
import networks  # noqa: E402

KINDS = (
    "missing-tensor",
    "unexpected-tensor",
    "wrong-shape",
    "bad-dtype",
    "nan-values",
    "inf-values",
    "truncated",
    "header-overflow",
    "duplicate-key",
    "offsets-gap",
    "metadata-non-string",
    "missing-metadata",
    "bad-format-version",
)

DTYPE_ARGS = {"f32": "F32", "f16": "F16", "bf16": "BF16"}
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def net_generator(seed, net):
    """Returns a torch.Generator for network ``net`` derived from ``seed``."""
    return torch.Generator().manual_seed(seed * 8 + networks.NETWORK_NAMES.index(net) + 1)


def tile_like_images(gen, n, size):
    """Returns [n,3,size,size] normalised smooth random images (like H&E tiles, roughly)."""
    coarse = torch.rand(n, 3, max(size // 16, 2), max(size // 16, 2), generator=gen)
    img = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    img = 0.8 * img + 0.2 * torch.rand(n, 3, size, size, generator=gen)
    img = (img * 255.0).round() / 255.0
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (img - mean) / std


def round_mantissa(t, bits=10):
    """Returns t with each value rounded to ``bits`` mantissa bits (exact in float32)."""
    m, e = torch.frexp(t)
    scale = float(1 << bits)
    return torch.ldexp(torch.round(m * scale) / scale, e.to(t.dtype))


def _init_params(net, gen):
    # Every draw goes through ``gen`` in module order, so the result depends on the seed only.
    with torch.no_grad():
        for name, mod in net.named_modules():
            if isinstance(mod, networks.ModulatedDeformConv3x3):
                fan_in = mod.weight.shape[1] * 9
                mod.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=gen)
                mod.bias.normal_(0.0, 0.1, generator=gen)
                # Unit-variance draw; the calibration hook scales it to pixels.
                mod.conv_offset_mask.weight.normal_(0.0, 1.0, generator=gen)
                b = mod.conv_offset_mask.bias
                b[:18].normal_(0.0, 0.5, generator=gen)
                b[18:].normal_(0.0, 1.0, generator=gen)
                target = 4.5 if name.endswith("dla_up.ida_0.proj_1.conv") else (
                    1.0 + 2.0 * float(torch.rand((), generator=gen)))
                mod.gs_offset_std = target
            elif isinstance(mod, nn.ConvTranspose2d):
                noise = torch.empty_like(mod.weight).uniform_(-0.2, 0.2, generator=gen)
                mod.weight.mul_(1.0 + noise)
            elif isinstance(mod, (nn.Conv2d, nn.Conv1d)):
                if name.endswith("conv_offset_mask"):
                    continue
                fan_in = mod.weight[0].numel()
                mod.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=gen)
                if mod.bias is not None:
                    mod.bias.normal_(0.0, 0.1, generator=gen)
            elif isinstance(mod, nn.Linear):
                mod.weight.normal_(0.0, 2.0 / math.sqrt(mod.in_features), generator=gen)
                mod.bias.normal_(0.0, 0.3, generator=gen)
            elif isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.7, 1.3, generator=gen)
                mod.bias.normal_(0.0, 0.1, generator=gen)


def _dcn_calibration_hook(mod, inputs):
    # Runs on the first forward only: the input's scale is known only once upstream layers
    # (and their batch statistics) are in place, which hooks firing in order guarantee.
    if getattr(mod, "gs_calibrated", False):
        return
    x = inputs[0]
    rms = math.sqrt(float((x * x).mean()) * x.shape[1] * 9) or 1.0
    with torch.no_grad():
        w = mod.conv_offset_mask.weight
        w[:18].mul_(mod.gs_offset_std / rms)
        w[18:].mul_(1.5 / rms)
    mod.gs_calibrated = True


def _calibrate(net, net_name, gen, calib_size):
    """Sets BN running stats from one train-mode pass; scales DCN offset convs on the way."""
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: after one batch, exactly the batch stats
    hooks = [m.register_forward_pre_hook(_dcn_calibration_hook)
             for m in net.modules() if isinstance(m, networks.ModulatedDeformConv3x3)]
    size = {"multitask": calib_size, "foreground": 512, "blur": 256}[net_name]
    x = tile_like_images(gen, 2, size)
    net.train()
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    with torch.no_grad():
        for bn in bns:
            bn.momentum = 0.1
            bn.running_mean.copy_(round_mantissa(bn.running_mean))
            bn.running_var.copy_(round_mantissa(bn.running_var.clamp_min(1e-2)))
            bn.num_batches_tracked.zero_()
    net.eval()


def make_state_dicts(seed, nets, activation="relu", calib_size=256):
    """Returns {net: exported state_dict} of seeded sane random weights for ``nets``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {}
        for net_name in networks.NETWORK_NAMES:
            if net_name not in nets:
                continue
            gen = net_generator(seed, net_name)
            net = networks.build(net_name, activation)
            _init_params(net, gen)
            if net_name != "screener":
                _calibrate(net, net_name, gen, calib_size)
            out[net_name] = networks.exported_state(net)
        return out
    finally:
        torch.set_num_threads(threads)


def _entries(tensors, dtype):
    return [(n, dtype, list(t.shape), bundle.tensor_bytes(t, dtype)) for n, t in tensors.items()]


def _pick(entries, pred):
    for i, e in enumerate(entries):
        if pred(e):
            return i
    raise SystemExit("make_bundle.py: error: no tensor suitable for this --broken kind")


def break_bundle(kind, entries, meta):
    """Returns (file bytes, description) for broken ``kind`` built from valid entries/meta."""
    entries = list(entries)
    meta = dict(meta)
    if kind == "missing-tensor":
        i = len(entries) - 1
        name = entries.pop(i)[0]
        return bundle.encode(entries, meta), "removed tensor %s" % name
    if kind == "unexpected-tensor":
        net = entries[0][0].split(".", 1)[0]
        name = net + ".extra.weight"
        entries.append((name, "F32", [4], struct.pack("<4f", 1, 2, 3, 4)))
        return bundle.encode(entries, meta), "added tensor %s" % name
    if kind == "wrong-shape":
        i = _pick(entries, lambda e: len(e[2]) >= 2 and e[2][0] != e[2][1])
        n, d, s, raw = entries[i]
        s2 = [s[1], s[0]] + s[2:]
        entries[i] = (n, d, s2, raw)
        return bundle.encode(entries, meta), "tensor %s shape %s -> %s" % (n, s, s2)
    if kind == "bad-dtype":
        i = _pick(entries, lambda e: e[0].endswith("weight"))
        n, d, s, raw = entries[i]
        t = torch.frombuffer(bytearray(raw), dtype=bundle.DTYPES[d]).float()
        entries[i] = (n, "I64", s, bundle.ctypes.string_at(
            t.to(torch.int64).data_ptr(), t.numel() * 8) if t.numel() else b"")
        return bundle.encode(entries, meta), "tensor %s dtype %s -> I64" % (n, d)
    if kind in ("nan-values", "inf-values"):
        i = _pick(entries, lambda e: e[0].endswith("weight") and len(e[3]) > 0)
        n, d, s, raw = entries[i]
        t = torch.frombuffer(bytearray(raw), dtype=bundle.DTYPES[d]).clone()
        t[t.numel() // 2] = float("nan") if kind == "nan-values" else float("inf")
        entries[i] = (n, d, s, bundle.tensor_bytes(t, d))
        return bundle.encode(entries, meta), "tensor %s element %d set to %s" % (
            n, t.numel() // 2, "NaN" if kind == "nan-values" else "Inf")
    if kind == "truncated":
        data = bundle.encode(entries, meta)
        cut = max(1, min(len(entries[-1][3]) // 2, 4096))
        return data[:-cut], "last %d bytes cut off" % cut
    if kind == "header-overflow":
        data = bundle.encode(entries, meta)
        return struct.pack("<Q", len(data) + 1) + data[8:], "header length beyond the file"
    if kind == "duplicate-key":
        data = bundle.encode(entries, meta)
        (hlen,) = struct.unpack("<Q", data[:8])
        header, body = data[8:8 + hlen], data[8 + hlen:]
        a, b = entries[0][0], entries[1][0]
        header = header.replace(json.dumps(b).encode() + b":", json.dumps(a).encode() + b":", 1)
        header = header.rstrip(b" ")
        header += b" " * (-len(header) % 8)
        return struct.pack("<Q", len(header)) + header + body, "tensor %s renamed %s" % (b, a)
    if kind == "offsets-gap":
        i = len(entries) // 2
        n, d, s, raw = entries[i]
        # 4 zero bytes as an extra entry, then drop that entry from the header: a hole.
        hole = ("gs.hole", "F32", [1], b"\0\0\0\0")
        data = bundle.encode(entries[:i] + [hole] + entries[i:], meta)
        (hlen,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + hlen])
        del header["gs.hole"]
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        text += b" " * (-len(text) % 8)
        return struct.pack("<Q", len(text)) + text + data[8 + hlen:], "4-byte gap before %s" % n
    if kind == "metadata-non-string":
        meta["topk"] = 64
        return bundle.encode(entries, meta), "metadata topk is a number"
    if kind == "missing-metadata":
        del meta["activation"]
        return bundle.encode(entries, meta), "metadata key activation removed"
    if kind == "bad-format-version":
        meta["format_version"] = "999"
        return bundle.encode(entries, meta), "format_version 999"
    raise SystemExit("make_bundle.py: error: unknown --broken kind %r (one of %s)"
                     % (kind, ", ".join(KINDS)))


def merge_trained(tensors, meta, path, seeded):
    """Adds the trained network of the partial bundle ``path`` to ``tensors``/``meta``.

    A partial bundle holds exactly one network's tensors; its provenance.<net> must not be
    "untrained". The network must not also be seeded (``seeded``), so a bundle never holds two
    versions of one network. Its threshold.* values and training.<net> record replace the
    defaults. Raises BundleError naming the file.
    """
    ptensors, pmeta = bundle.read_bundle(path)
    nets = sorted({name.split(".", 1)[0] for name in ptensors})
    if len(nets) != 1:
        raise bundle.BundleError("%s: a partial bundle holds one network, found %s"
                                 % (path, nets or "none"))
    net = nets[0]
    if net in seeded:
        raise bundle.BundleError("%s: network %s is also in --nets (seeded)" % (path, net))
    text = pmeta.get("provenance." + net, bundle.UNTRAINED)
    if text == bundle.UNTRAINED:
        raise bundle.BundleError("%s: provenance.%s is untrained" % (path, net))
    tensors.update(ptensors)
    meta["provenance." + net] = text
    for key, value in pmeta.items():
        # threshold.blur and threshold.blur_slide, threshold.foreground: the network's own
        # decision values; the partial bundle's other thresholds are only defaults.
        # pool.blur: the pool the weights were trained with (FORMAT.md).
        if key in ("threshold." + net, "training." + net, "pool." + net) or key.startswith(
                "threshold." + net + "_"):
            meta[key] = value


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--nets", default=",".join(networks.NETWORK_NAMES),
                   help="comma-separated subset of %s" % ",".join(networks.NETWORK_NAMES))
    p.add_argument("--broken", choices=KINDS, default=None)
    p.add_argument("--created", default=None, help="ISO 8601 UTC time (default: now)")
    p.add_argument("--dtype", default="f32", choices=sorted(DTYPE_ARGS))
    p.add_argument("--activation", default="relu")
    p.add_argument("--calib-size", type=int, default=256,
                   help="multitask calibration image size (multiple of 32)")
    p.add_argument("--trained", action="append", default=[], metavar="PARTIAL",
                   help="a trained network's partial bundle (model/trained/<net>.safetensors, "
                        "written by train.py): its tensors, provenance.<net>, threshold.* and "
                        "training.<net> go into the bundle; repeatable")
    args = p.parse_args(argv)
    nets = [n for n in args.nets.split(",") if n]
    bad = [n for n in nets if n not in networks.NETWORK_NAMES]
    if bad or not nets or args.seed < 0 or args.calib_size <= 0 or args.calib_size % 32:
        p.error("bad --nets %r, --seed or --calib-size" % args.nets)
    try:
        networks.parse_activation(args.activation)
    except ValueError as e:
        p.error(str(e))
    sds = make_state_dicts(args.seed, nets, args.activation, args.calib_size)
    prov = {n: bundle.UNTRAINED for n in nets}
    meta = bundle.default_metadata(prov, args.activation, args.created,
                                   "gastroscreen make_bundle.py %s seed %d"
                                   % (bundle.TOOL_VERSION, args.seed))
    tensors = bundle.flatten_networks(sds)
    try:
        for path in args.trained:
            merge_trained(tensors, meta, path, nets)
    except (bundle.BundleError, OSError) as e:
        raise SystemExit("make_bundle.py: error: %s" % e)
    if args.broken is None:
        bundle.write_bundle(args.out, tensors, meta, DTYPE_ARGS[args.dtype])
        print("wrote %s (%d tensors)" % (args.out, len(tensors)))
        return 0
    data, what = break_bundle(args.broken, _entries(tensors, DTYPE_ARGS[args.dtype]), meta)
    with open(args.out, "wb") as f:
        f.write(data)
    print("broken: %s: %s" % (args.broken, what))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Export a PyTorch checkpoint of the gastroscreen networks to a bundle (safetensors).

    /usr/bin/python3 model/pytorch/export.py --checkpoint CKPT.pt --out BUNDLE.safetensors
        [--allow-missing] [--provenance NET=TEXT ...] [--dtype f32|f16|bf16]
        [--activation relu|leaky:<slope>] [--created ISO8601]

CKPT.pt is a torch.save'd dict keyed by network name (multitask, foreground, blur,
screener), each value a state_dict of the module in networks.py. Checkpoint hygiene
(reference section 8.7): a value wrapped as {'state_dict': ...} (CenterNet style, with
'epoch'/'optimizer' beside it) is unwrapped, a leading "module." (DataParallel) is stripped
from every key, num_batches_tracked and the multitask's unused ImageNet head base.fc.* are
dropped. A screener conv weight saved from a Conv2d variant ([512,512,1,1]) is reshaped to
the Conv1d form [512,512,1]. Every remaining key and shape is then checked against the
module; every problem (unexpected key, missing key, wrong shape, non-float or non-finite
values) is reported by name and the exit status is 1. A network absent from the checkpoint
is an error unless --allow-missing, in which case its tensors are absent from the bundle
and its provenance is "untrained".

Provenance: --provenance NET=TEXT says what NET was trained on (repeatable). A present
network without --provenance gets a factual default naming the checkpoint file and its
SHA-256 and saying the training data was not stated. The checkpoint cannot tell ReLU from
leaky ReLU, so --activation records the one used in training (default relu).

The checkpoint is loaded with torch.load(weights_only=True): plain tensors, dicts, lists,
numbers and strings only; arbitrary pickled objects are refused.
"""

import argparse
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import bundle  # noqa: E402
import networks  # noqa: E402

DTYPE_ARGS = {"f32": "F32", "f16": "F16", "bf16": "BF16"}


class ExportError(Exception):
    """Bad input to the exporter; the message names the problem."""


def _unwrap(value, net):
    if isinstance(value, dict) and "state_dict" in value and isinstance(value["state_dict"], dict):
        value = value["state_dict"]
    if not isinstance(value, dict):
        raise ExportError("%s: expected a state_dict (dict of tensors), got %s"
                          % (net, type(value).__name__))
    return value


def clean_state_dict(net, raw):
    """Returns the state_dict of network ``net`` after checkpoint hygiene (see module doc)."""
    sd = {}
    for k, v in _unwrap(raw, net).items():
        if not isinstance(k, str):
            raise ExportError("%s: non-string key %r" % (net, k))
        if k.startswith("module."):
            k = k[len("module."):]
        if k.endswith("num_batches_tracked"):
            continue
        if net == "multitask" and k.startswith("base.fc."):
            continue
        if not torch.is_tensor(v):
            raise ExportError("%s: key %s is a %s, not a tensor" % (net, k, type(v).__name__))
        if k in sd:
            raise ExportError("%s: key %s appears twice (with and without 'module.')" % (net, k))
        sd[k] = v
    w = sd.get("conv.weight")
    if net == "screener" and w is not None and w.dim() == 4 and tuple(w.shape[2:]) == (1, 1):
        sd["conv.weight"] = w.reshape(w.shape[0], w.shape[1], 1)
    return sd


def validate(net, sd, activation):
    """Returns sd ordered like the module's state_dict, as float32; ExportError lists problems."""
    module = networks.build(net, activation)
    want = networks.exported_state(module)
    problems = []
    for k in sd:
        if k not in want:
            problems.append("%s: unexpected key %s %s" % (net, k, list(sd[k].shape)))
    for k, ref in want.items():
        if k not in sd:
            problems.append("%s: missing key %s (expected shape %s)" % (net, k, list(ref.shape)))
            continue
        v = sd[k]
        if list(v.shape) != list(ref.shape):
            problems.append("%s: key %s has shape %s, expected %s"
                            % (net, k, list(v.shape), list(ref.shape)))
        elif not v.is_floating_point():
            problems.append("%s: key %s has dtype %s, expected a floating type"
                            % (net, k, str(v.dtype).replace("torch.", "")))
        elif not bool(torch.isfinite(v.float()).all()):
            problems.append("%s: key %s contains NaN or Inf" % (net, k))
    if problems:
        raise ExportError("\n".join(problems))
    return {k: sd[k].detach().float().cpu() for k in want}


def parse_provenance(items):
    """Returns {net: text} from NET=TEXT strings; ExportError on a bad item."""
    out = {}
    for item in items or []:
        net, sep, text = item.partition("=")
        if not sep or net not in networks.NETWORK_NAMES:
            raise ExportError("--provenance %r: expected NET=TEXT with NET one of %s"
                              % (item, ", ".join(networks.NETWORK_NAMES)))
        if not text.strip():
            raise ExportError("--provenance %s: empty text" % net)
        if net in out:
            raise ExportError("--provenance %s given twice" % net)
        out[net] = text
    return out


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export(checkpoint, out, allow_missing=False, provenance=None, dtype="f32",
           activation="relu", created=None):
    """Exports ``checkpoint`` to the bundle ``out``. Returns the metadata written.

    Raises ExportError (bad checkpoint or arguments), bundle.BundleError or OSError.
    """
    if dtype not in DTYPE_ARGS:
        raise ExportError("--dtype %r: expected one of %s" % (dtype, ", ".join(DTYPE_ARGS)))
    try:
        networks.parse_activation(activation)
    except ValueError as e:
        raise ExportError("--activation: %s" % e) from None
    prov = parse_provenance(provenance)
    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ExportError("%s: no such file" % checkpoint) from None
    except Exception as e:  # torch raises many types for corrupt or unsafe pickles
        raise ExportError("%s: cannot load checkpoint: %s" % (checkpoint, str(e).splitlines()[0]))
    if not isinstance(ckpt, dict):
        raise ExportError("%s: expected a dict keyed by network name, got %s"
                          % (checkpoint, type(ckpt).__name__))
    unknown = [k for k in ckpt if k not in networks.NETWORK_NAMES]
    if unknown:
        raise ExportError("%s: unknown network key(s) %s (expected %s)"
                          % (checkpoint, ", ".join(map(repr, unknown)),
                             ", ".join(networks.NETWORK_NAMES)))
    missing = [n for n in networks.NETWORK_NAMES if n not in ckpt]
    if missing and not allow_missing:
        raise ExportError("%s: missing network(s) %s (pass --allow-missing to export them "
                          "as untrained, i.e. absent)" % (checkpoint, ", ".join(missing)))
    for net in missing:
        if net in prov and prov[net] != bundle.UNTRAINED:
            raise ExportError("--provenance %s: network is not in the checkpoint" % net)
    digest = None
    state_dicts = {}
    problems = []
    for net in networks.NETWORK_NAMES:
        if net not in ckpt:
            continue
        try:
            state_dicts[net] = validate(net, clean_state_dict(net, ckpt[net]), activation)
        except ExportError as e:
            problems.append(str(e))
            continue
        if net not in prov:
            if digest is None:
                digest = sha256_file(checkpoint)
            prov[net] = ("exported from checkpoint %s (sha256 %s); training data not stated"
                         % (os.path.basename(checkpoint), digest))
    if problems:
        raise ExportError("%s:\n%s" % (checkpoint, "\n".join(problems)))
    for net in missing:
        prov[net] = bundle.UNTRAINED
    meta = bundle.default_metadata(prov, activation=activation, created=created,
                                   creator="gastroscreen export.py " + bundle.TOOL_VERSION)
    bundle.write_bundle(out, bundle.flatten_networks(state_dicts), meta, DTYPE_ARGS[dtype])
    return meta


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="torch.save'd dict of state_dicts")
    p.add_argument("--out", required=True, help="bundle file to write (.safetensors)")
    p.add_argument("--allow-missing", action="store_true",
                   help="export absent networks as untrained (their tensors absent)")
    p.add_argument("--provenance", action="append", metavar="NET=TEXT",
                   help="what NET was trained on (repeatable)")
    p.add_argument("--dtype", default="f32", choices=sorted(DTYPE_ARGS))
    p.add_argument("--activation", default="relu", help="relu (default) or leaky:<slope>")
    p.add_argument("--created", default=None, help="ISO 8601 UTC time (default: now)")
    args = p.parse_args(argv)
    try:
        meta = export(args.checkpoint, args.out, args.allow_missing, args.provenance,
                      args.dtype, args.activation, args.created)
    except (ExportError, bundle.BundleError, OSError) as e:
        print("export.py: error: %s" % e, file=sys.stderr)
        return 1
    for net in networks.NETWORK_NAMES:
        print("%s: %s" % (net, meta["provenance." + net]))
    print("wrote %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

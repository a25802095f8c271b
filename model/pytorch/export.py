#!/usr/bin/python3
"""Export a PyTorch checkpoint of the gastroscreen networks to a bundle (safetensors).

    /usr/bin/python3 model/pytorch/export.py --checkpoint CKPT.pt --out BUNDLE.safetensors
        [--allow-missing] [--provenance NET=TEXT ...] [--dtype f32|f16|bf16]
        [--activation relu|leaky:<slope>] [--created ISO8601] [--training NET=FILE ...]
        [--inplace-abn [--abn-eps E]]

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

Training record: --training NET=FILE (repeatable) stores FILE's JSON (the training.json
train.py writes), re-serialised compactly, as the bundle metadata key training.<net>, so a
report can say what the weights were trained on.

Checkpoints from elsewhere (reference section 8):
- InPlace-ABN (--inplace-abn; mapillary/inplace_abn): the multi-task network's BN layers are
  InPlaceABN, whose affine weight acts as |gamma| + eps (eps --abn-eps, default 1e-5, the
  library's) in training and eval alike, with leaky ReLU 0.01 (its default). Every multitask
  BN weight gamma is written as |gamma| + eps, so ordinary BN with the written weight is the
  same function, and the activation is recorded as leaky:0.01 unless --activation gives
  another leaky slope (relu is refused: InPlaceABN has no plain ReLU). The small networks
  are ordinary BatchNorm and are not converted.
- DCNv1 (detected by key): a deformable conv saved with X.conv_offset.weight [18,C,3,3] and
  X.conv_offset.bias [18] and no X.conv_offset_mask.* is converted to the DCNv2 layout the
  runtime reads: X.conv_offset_mask.weight [27,C,3,3] whose channels 0..17 are the 18 offset
  channels unchanged (DCNv1 and DCNv2 both interleave (dy, dx) per tap k = 3i + j, the
  layout torchvision's deform_conv2d takes; reference section 4.2) and 18..26 have zero
  weight and bias DCNV1_MASK_BIAS, whose sigmoid is exactly 1.0 in float32: DCNv1 is DCNv2
  with every mask 1. A DCNv1 main conv saved without X.bias gets a zero bias.
- A classification head of another shape than cls.fc.weight [1,512] (a 2- or 4-way head,
  or concatenated pooling) is refused, naming the tensor and both shapes: the runtime
  reads one logit.

The checkpoint is loaded with torch.load(weights_only=True): plain tensors, dicts, lists,
numbers and strings only; arbitrary pickled objects are refused.
"""

import argparse
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import bundle  # noqa: E402
import networks  # noqa: E402

DTYPE_ARGS = {"f32": "F32", "f16": "F16", "bf16": "BF16"}

# InPlaceABN's eps and default leaky slope (mapillary/inplace_abn, every version since 2018).
ABN_EPS = 1e-5
ABN_ACTIVATION = "leaky:0.01"
# Mask logit of a converted DCNv1 layer: 1 / (1 + e^-64) rounds to exactly 1.0f (e^-64 is
# 1.6e-28, far below half an ulp of 1.0f, 6e-8), and e^64 (6.2e27) is still finite in float32,
# so a sigmoid written as e^x / (1 + e^x) gives 1.0 as well; 64 is exact in f16 and bf16.
DCNV1_MASK_BIAS = 64.0
CLS_KEY = "cls.fc.weight"


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


def convert_dcnv1(net, sd):
    """Rewrites DCNv1 offset convs (X.conv_offset.*) of ``sd`` to the DCNv2 layout
    (X.conv_offset_mask.*, module doc); returns the number of layers converted."""
    n = 0
    for k in [k for k in sd if k.endswith(".conv_offset.weight")]:
        prefix = k[: -len("conv_offset.weight")]
        w, b = sd[k], sd.get(prefix + "conv_offset.bias")
        if prefix + "conv_offset_mask.weight" in sd or prefix + "conv_offset_mask.bias" in sd:
            raise ExportError("%s: %s has both conv_offset (DCNv1) and conv_offset_mask (DCNv2)"
                              % (net, prefix[:-1]))
        if w.dim() != 4 or w.shape[0] != 18 or tuple(w.shape[2:]) != (3, 3):
            raise ExportError("%s: DCNv1 offset %s has shape %s, expected [18, C, 3, 3]"
                              % (net, k, list(w.shape)))
        if b is None or list(b.shape) != [18]:
            raise ExportError("%s: DCNv1 offset %sconv_offset.bias is %s, expected shape [18]"
                              % (net, prefix, "missing" if b is None else list(b.shape)))
        wm = torch.zeros(27, *w.shape[1:], dtype=torch.float32)
        wm[:18] = w.float()
        bm = torch.full((27,), DCNV1_MASK_BIAS, dtype=torch.float32)
        bm[:18] = b.float()
        del sd[k], sd[prefix + "conv_offset.bias"]
        sd[prefix + "conv_offset_mask.weight"] = wm
        sd[prefix + "conv_offset_mask.bias"] = bm
        main = sd.get(prefix + "weight")
        if prefix + "bias" not in sd and main is not None and main.dim() == 4:
            sd[prefix + "bias"] = torch.zeros(main.shape[0], dtype=torch.float32)
        n += 1
    return n


def convert_inplace_abn(net, sd, eps):
    """Replaces every BN weight gamma of the multitask ``sd`` by |gamma| + eps (module doc);
    returns the number of BN layers converted."""
    module = networks.build(net)
    n = 0
    for name, mod in module.named_modules():
        if isinstance(mod, torch.nn.BatchNorm2d) and name + ".weight" in sd:
            w = sd[name + ".weight"]
            sd[name + ".weight"] = w.float().abs() + eps
            n += 1
    return n


def validate(net, sd, activation):
    """Returns sd ordered like the module's state_dict, as float32; ExportError lists problems."""
    module = networks.build(net, activation)
    want = networks.exported_state(module)
    problems = []
    cls = sd.get(CLS_KEY) if net == "multitask" else None
    if cls is not None and list(cls.shape) != list(want[CLS_KEY].shape):
        raise ExportError("%s: classification head %s has shape %s, expected %s: the runtime "
                          "reads a single logit (Linear 512->1); a head of another shape is "
                          "not supported" % (net, CLS_KEY, list(cls.shape),
                                             list(want[CLS_KEY].shape)))
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


def parse_training(items, present):
    """Returns {net: compact JSON text} from NET=FILE strings; ExportError on a bad item."""
    out = {}
    for item in items or []:
        net, sep, path = item.partition("=")
        if not sep or net not in networks.NETWORK_NAMES or not path:
            raise ExportError("--training %r: expected NET=FILE with NET one of %s"
                              % (item, ", ".join(networks.NETWORK_NAMES)))
        if net in out:
            raise ExportError("--training %s given twice" % net)
        if net not in present:
            raise ExportError("--training %s: network is not in the checkpoint" % net)
        try:
            with open(path) as f:
                obj = json.load(f)
        except OSError as e:
            raise ExportError("--training %s: %s" % (net, e)) from None
        except ValueError as e:
            raise ExportError("--training %s: %s is not JSON: %s" % (net, path, e)) from None
        out[net] = json.dumps(obj, separators=(",", ":"), sort_keys=False)
    return out


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export(checkpoint, out, allow_missing=False, provenance=None, dtype="f32",
           activation=None, created=None, training=None, inplace_abn=False, abn_eps=ABN_EPS):
    """Exports ``checkpoint`` to the bundle ``out``. Returns the metadata written.

    ``activation`` None means relu, or leaky:0.01 with ``inplace_abn``.

    Raises ExportError (bad checkpoint or arguments), bundle.BundleError or OSError.
    """
    if dtype not in DTYPE_ARGS:
        raise ExportError("--dtype %r: expected one of %s" % (dtype, ", ".join(DTYPE_ARGS)))
    if activation is None:
        activation = ABN_ACTIVATION if inplace_abn else "relu"
    try:
        kind, _ = networks.parse_activation(activation)
    except ValueError as e:
        raise ExportError("--activation: %s" % e) from None
    if inplace_abn and kind != "leaky":
        raise ExportError("--inplace-abn with --activation %s: InPlaceABN runs leaky ReLU "
                          "(default slope 0.01), not plain ReLU" % activation)
    if not (abn_eps > 0.0 and abn_eps < 1.0):
        raise ExportError("--abn-eps %g: expected a small positive number" % abn_eps)
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
    train_meta = parse_training(training, [n for n in networks.NETWORK_NAMES if n in ckpt])
    if inplace_abn and "multitask" not in ckpt:
        raise ExportError("--inplace-abn: the checkpoint has no multitask network")
    digest = None
    state_dicts = {}
    problems = []
    for net in networks.NETWORK_NAMES:
        if net not in ckpt:
            continue
        try:
            sd = clean_state_dict(net, ckpt[net])
            convert_dcnv1(net, sd)
            if inplace_abn and net == "multitask":
                convert_inplace_abn(net, sd, abn_eps)
            state_dicts[net] = validate(net, sd, activation)
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
    for net, text in train_meta.items():
        meta["training." + net] = text
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
    p.add_argument("--activation", default=None,
                   help="relu (default) or leaky:<slope> (default leaky:0.01 with --inplace-abn)")
    p.add_argument("--created", default=None, help="ISO 8601 UTC time (default: now)")
    p.add_argument("--training", action="append", metavar="NET=FILE",
                   help="training.json of NET, stored as metadata training.<net> (repeatable)")
    p.add_argument("--inplace-abn", action="store_true",
                   help="multitask BN layers are InPlaceABN: gamma -> |gamma| + eps")
    p.add_argument("--abn-eps", type=float, default=ABN_EPS, help="InPlaceABN eps (1e-5)")
    args = p.parse_args(argv)
    try:
        meta = export(args.checkpoint, args.out, args.allow_missing, args.provenance,
                      args.dtype, args.activation, args.created, args.training,
                      args.inplace_abn, args.abn_eps)
    except (ExportError, bundle.BundleError, OSError) as e:
        print("export.py: error: %s" % e, file=sys.stderr)
        return 1
    for net in networks.NETWORK_NAMES:
        print("%s: %s" % (net, meta["provenance." + net]))
    print("wrote %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

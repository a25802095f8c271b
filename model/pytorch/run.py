#!/usr/bin/python3
"""Run the PyTorch mirror of a bundle on inputs and write every raw output as .npy.

    /usr/bin/python3 model/pytorch/run.py --bundle B.safetensors --out DIR
        [--multitask IMG ...] [--foreground IMG ...] [--blur IMG ...]
        [--screener FEATURES.npy ...] [--save-inputs] [--threads N]

This is the reference side of the parity tests: the C runtime (``gastroscreen infer
--out DIR``) writes the same file names, and a checker compares them.

Inputs. IMG is a uint8 RGB image: a PNG (read with torchvision.io.read_image, converted to
RGB) or a .npy of dtype uint8 shaped [H,W,3] or [N,H,W,3]. Several IMGs of one network are
stacked into a batch (they must share a size). Pixels are normalised as the bundle's
metadata says: x = (pixel / 255 - input_mean[c]) / input_std[c], in float32 (input_colour
must be RGB). What each network expects (the caller prepares it; this script does no
resizing or cropping): multitask a 512x512 tile (any multiple of 32 works), foreground the
slide thumbnail resized to 512x512, blur the central 256x256 crop of a tile. FEATURES.npy is
float32 [k,512] or [N,k,512]: the feature rows of the top-k tiles (not normalised).

Outputs, all C-order little-endian float32 .npy in DIR, N = batch:

    multitask_logit.npy          [N,1]          classification logit (score = sigmoid)
    multitask_feature.npy        [N,512]        GAP(L5), the screener's input row
    multitask_seg.npy            [N,1,H/4,W/4]  segmentation logits (heatmap = sigmoid)
    foreground_logit.npy         [N,1,H,W]      tissue logit after bilinear x8
    foreground_logit_lowres.npy  [N,1,H/8,W/8]  tissue logit before upsampling
    blur_logit.npy               [N,1]          blur logit (P(blurred) = sigmoid)
    screener_logit.npy           [N,1]          slide logit (score = sigmoid)

With --save-inputs, also <network>_input.npy: the normalised float32 input tensor
([N,3,H,W]; for the screener the [N,k,512] features as read).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import bundle  # noqa: E402
import networks  # noqa: E402
import npy  # noqa: E402


class RunError(Exception):
    """Bad input to run.py; the message names the file and the problem."""


def read_image_u8(path):
    """Returns uint8 [N,3,H,W] RGB from a PNG or a uint8 .npy ([H,W,3] or [N,H,W,3])."""
    if path.lower().endswith(".npy"):
        try:
            a = npy.read_npy(path)
        except (OSError, ValueError) as e:
            raise RunError(str(e)) from None
        if a.dtype != torch.uint8:
            raise RunError("%s: expected uint8 pixels, got %s" % (path, a.dtype))
        if a.dim() == 3:
            a = a.unsqueeze(0)
        if a.dim() != 4 or a.shape[3] != 3:
            raise RunError("%s: expected [H,W,3] or [N,H,W,3], got %s" % (path, list(a.shape)))
        return a.permute(0, 3, 1, 2).contiguous()
    from torchvision.io import ImageReadMode, read_image

    try:
        return read_image(path, mode=ImageReadMode.RGB).unsqueeze(0)
    except (RuntimeError, OSError) as e:
        raise RunError("%s: cannot read image: %s" % (path, e)) from None


def _floats(meta, key):
    try:
        vals = [float(v) for v in meta[key].split(",")]
    except (KeyError, ValueError):
        raise RunError("bundle metadata %s missing or not 3 numbers" % key) from None
    if len(vals) != 3 or (key == "input_std" and min(vals) <= 0):
        raise RunError("bundle metadata %s = %r is not 3 valid numbers" % (key, meta[key]))
    return vals


def normalise(u8, meta):
    """Returns float32 [N,3,H,W] normalised per the bundle metadata from uint8 [N,3,H,W]."""
    if meta.get("input_colour") != "RGB":
        raise RunError("bundle metadata input_colour = %r, only RGB is supported"
                       % meta.get("input_colour"))
    mean = torch.tensor(_floats(meta, "input_mean"), dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(_floats(meta, "input_std"), dtype=torch.float32).view(1, 3, 1, 1)
    return (u8.to(torch.float32) / 255.0 - mean) / std


def load_features(path):
    """Returns float32 [N,k,512] from a .npy of [k,512] or [N,k,512]."""
    try:
        f = npy.read_npy(path)
    except (OSError, ValueError) as e:
        raise RunError(str(e)) from None
    if f.dtype == torch.uint8:
        raise RunError("%s: features must be float, got uint8" % path)
    f = f.to(torch.float32)
    if f.dim() == 2:
        f = f.unsqueeze(0)
    if f.dim() != 3 or f.shape[2] != 512 or f.shape[1] < 1:
        raise RunError("%s: expected [k,512] or [N,k,512], got %s" % (path, list(f.shape)))
    return f


def _stack(parts, net):
    if any(p.shape[1:] != parts[0].shape[1:] for p in parts):
        raise RunError("%s inputs differ in shape: %s" % (net, [list(p.shape) for p in parts]))
    return torch.cat(parts, 0)


def run(nets, meta, inputs):
    """Returns {output file stem: float32 tensor} for {network: list of input paths}."""
    outputs = {}
    with torch.no_grad():
        for net in networks.NETWORK_NAMES:
            paths = inputs.get(net)
            if not paths:
                continue
            if net == "screener":
                x = _stack([load_features(p) for p in paths], net)
            else:
                x = normalise(_stack([read_image_u8(p) for p in paths], net), meta)
            outputs[net + "_input"] = x
            try:
                result = nets[net](x)
            except ValueError as e:
                raise RunError(str(e)) from None
            for k, v in result.items():
                outputs["%s_%s" % (net, k)] = v
    return outputs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--out", required=True, help="directory for the .npy outputs")
    for net in networks.NETWORK_NAMES:
        p.add_argument("--" + net, nargs="+", default=[], metavar="FEATURES.npy"
                       if net == "screener" else "IMG")
    p.add_argument("--save-inputs", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    inputs = {n: getattr(args, n) for n in networks.NETWORK_NAMES if getattr(args, n)}
    if not inputs:
        p.error("no inputs: give at least one of --multitask, --foreground, --blur, --screener")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        nets, meta = bundle.load_networks(args.bundle, list(inputs))
        outputs = run(nets, meta, inputs)
        os.makedirs(args.out, exist_ok=True)
        for stem, t in outputs.items():
            if stem.endswith("_input") and not args.save_inputs:
                continue
            npy.write_npy(os.path.join(args.out, stem + ".npy"), t)
            print("%s.npy %s" % (stem, list(t.shape)))
    except (RunError, bundle.BundleError, OSError) as e:
        print("run.py: error: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

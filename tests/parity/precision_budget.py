#!/usr/bin/python3
"""The bf16 accuracy budget of the multi-task network, on real tiles, against fp32.

    precision_budget.py --gastroscreen BIN --work DIR

For each input, `gastroscreen infer --precision fp32` and `--precision bf16` on the same
bundle and the same tiles (the C side reads slide tiles itself, at the bundle's resolution),
then for every tile the budget of model/network.h:

    patch score   |sigmoid(logit_bf16) - sigmoid(logit_fp32)|   <= 0.01
    feature       cosine(feature_bf16, feature_fp32)             >= 0.999
    segmentation  max |sigmoid(seg_bf16) - sigmoid(seg_fp32)|    <= 0.02

Whether a bundle meets it depends on its weights, not only on our kernels: the PyTorch
mirror with its weights and every conv output rounded to bf16 ("emulated bf16", the least
any bf16 implementation rounds) is run on the same tiles. Asserted, per input and metric:
ours within the budget OR within twice the emulated gap (a wrong kernel is off by far
more); the worst tile of an input is compared with the worst emulated tile, since both are
single draws of the same rounding noise. Printed: whether the budget itself holds on every tile; it does not on the seeded
bundles (the segmentation of their random decoders moves by tenths), which is why
gs_precision_default stays fp32.

Inputs: three tiles of the CMU-1 small region (tests/data), a tile of the TCGA slide and the
first Kather 2016 patch of each of the eight tissue classes (centre 128 x 128 crops, one batch),
the last two from the shared data when present (else said and skipped). The bundle is
runtime_parity.py's conditioned seeded bundle: make_bundle.py's raw random DCN offset convs
make offsets of many pixels, and the decoder then turns any rounding, even fp32 against
float64 in PyTorch, into a different segmentation map (runtime_parity.py measures it), which
no trained network does; the raw bundle's score and feature are checked too, its
segmentation gap is printed only.

On a CPU without native bf16 `infer --precision bf16` falls back to fp32 (and says so); the
test then exits 77 with that message, which ctest reports as skipped.
"""

import argparse
import glob
import math
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import runtime_parity as rp  # noqa: E402  (its bundle conditioning and npy reader)
import torch  # noqa: E402

SCORE_TOL = 0.01
COSINE_MIN = 0.999
SEG_TOL = 0.02
SKIP = 77


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def infer(args, bundle, precision, inputs, out, slide_xy=None):
    cmd = [args.gastroscreen, "infer", "--model", bundle, "--precision", precision] + inputs
    cmd += ["--out", out]
    if slide_xy:
        cmd += ["--x", str(slide_xy[0]), "--y", str(slide_xy[1])]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        sys.stdout.write(r.stdout + r.stderr)
        raise SystemExit("FAILED (exit %d): %s" % (r.returncode, " ".join(cmd)))
    if "precision: %s" % precision not in r.stdout:
        if precision == "bf16" and "no native bf16" in r.stderr:
            print("SKIP: %s" % r.stderr.strip())
            sys.exit(SKIP)
        raise SystemExit("infer did not run %s:\n%s%s" % (precision, r.stdout, r.stderr))
    return {k: rp.npy.read_npy(os.path.join(out, "multitask_%s.npy" % k))
            for k in ("logit", "feature", "seg")}


def metrics(a, b, i):
    """(|d score|, 1 - feature cosine, seg max |d sigmoid|) of tile i, a the reference."""
    ds = abs(sigmoid(float(a["logit"][i].reshape(-1)[0])) -
             sigmoid(float(b["logit"][i].reshape(-1)[0])))
    fa, fb = a["feature"][i].double(), b["feature"][i].double()
    cos = float((fa * fb).sum() / (fa.norm() * fb.norm()))
    dseg = float((a["seg"][i].sigmoid() - b["seg"][i].sigmoid()).abs().max())
    return ds, 1.0 - cos, dseg


def emulated_bf16(bundle_path, tiles_u8):
    """PyTorch mirror outputs in float32 and with weights and every conv output rounded to
    bf16, on uint8 tiles [N,H,W,3]."""
    sys.path.insert(0, os.path.join(rp.SRC, "model", "pytorch"))
    import bundle as bdl
    import run as mirror

    nets, meta = bdl.load_networks(bundle_path, ["multitask"])
    net = nets["multitask"].eval()
    x = mirror.normalise(torch.as_tensor(tiles_u8).permute(0, 3, 1, 2), meta)
    out = {}
    with torch.no_grad():
        out["fp32"] = net(x)
        for v in net.state_dict().values():
            if v.dtype == torch.float32:
                v.copy_(v.to(torch.bfloat16).float())

        def round_output(module, inputs, output):
            return output.to(torch.bfloat16).float()

        hooks = [m.register_forward_hook(round_output) for m in net.modules()
                 if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
        out["bf16"] = net(x.to(torch.bfloat16).float())
        for h in hooks:
            h.remove()
    return out


def compare(name, a, b, emu, check_seg=True):
    """Prints the tiles' figures; returns (failures, tiles meeting the budget, tiles)."""
    failures = []
    met = 0
    n = a["logit"].shape[0]
    budget = (SCORE_TOL, 1.0 - COSINE_MIN, SEG_TOL)
    labels = ("patch score moved", "feature 1 - cosine", "segmentation moved")
    worst, worst_ref = [0.0] * 3, [0.0] * 3
    for i in range(n):
        ours = metrics(a, b, i)
        ref = metrics(emu["fp32"], emu["bf16"], i)
        print("  %-22s tile %d: |d score| %.2e (emulated %.2e)  1-cos %.2e (%.2e)  "
              "seg max |d| %.2e (%.2e)%s" % (name, i, ours[0], ref[0], ours[1], ref[1], ours[2],
                                             ref[2], "" if check_seg else " (not asserted)"))
        met += all(o <= t for o, t in zip(ours, budget))
        worst = [max(w, o) for w, o in zip(worst, ours)]
        worst_ref = [max(w, r) for w, r in zip(worst_ref, ref)]
    for k in range(3 if check_seg else 2):
        if not worst[k] <= max(budget[k], 2.0 * worst_ref[k]):
            failures.append("%s: worst %s %.3g, above both the budget %g and twice the emulated "
                            "bf16 gap %.3g" % (name, labels[k], worst[k], budget[k], worst_ref[k]))
    return failures, met, n


def case(args, name, bundle, inputs, slide_xy=None, check_seg=True):
    outs = []
    for precision in ("fp32", "bf16"):
        outs.append(infer(args, bundle, precision, inputs,
                          os.path.join(args.work, "%s.%s" % (name, precision)), slide_xy))
    tiles = rp.npy.read_npy(os.path.join(args.work, "%s.fp32" % name, "tiles_u8.npy"))
    return compare(name, outs[0], outs[1], emulated_bf16(bundle, tiles), check_seg)


def kather_batch(work, shared):
    """Centre 128x128 crops of the first patch of each class as PNGs; [] when absent."""
    from PIL import Image

    paths = []
    for d in sorted(glob.glob(os.path.join(shared, "patches", "kather2016-samples", "*"))):
        files = sorted(glob.glob(os.path.join(d, "*.tif")))
        if not files:
            continue
        im = Image.open(files[0]).convert("RGB")
        w, h = im.size
        x0, y0 = (w - 128) // 2, (h - 128) // 2
        out = os.path.join(work, "kather_%s.png" % os.path.basename(d))
        im.crop((x0, y0, x0 + 128, y0 + 128)).save(out)
        paths.append(out)
    return paths


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gastroscreen", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    test_data = os.environ.get("GS_TEST_DATA", os.path.join(rp.SRC, "tests", "data"))
    shared = os.environ.get("GS_SHARED_DATA", "")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    cond = rp.make_bundle(args.work, 1, "relu", 512, True)
    failures, met, tiles = [], 0, 0

    def add(result):
        nonlocal failures, met, tiles
        failures += result[0]
        met += result[1]
        tiles += result[2]

    cmu = os.path.join(test_data, "CMU-1-Small-Region.svs")
    for xy in ((700, 900), (200, 300), (1200, 500)):
        add(case(args, "cmu_%d_%d" % xy, cond, [cmu], slide_xy=xy))
    tcga = os.path.join(shared, "wsi", "histolab", "tcga-cr-7395-01a-01-ts1.svs")
    if shared and os.path.exists(tcga):
        add(case(args, "tcga_1600_1400", cond, [tcga], slide_xy=(1600, 1400)))
    else:
        print("SKIP tcga tile: %s not found (GS_SHARED_DATA absent)" % tcga)
    kather = kather_batch(args.work, shared) if shared else []
    if kather:
        cond128 = rp.make_bundle(args.work, 1, "relu", 128, True)
        add(case(args, "kather_8_classes", cond128, kather))
    else:
        print("SKIP Kather patches: none under GS_SHARED_DATA")
    raw = rp.make_bundle(args.work, 1, "relu", 512, False)
    # The raw bundle's segmentation is chaotic even in fp32 (runtime_parity.py): not asserted.
    raw_failures, _, _ = case(args, "cmu_700_900_raw_bundle", raw, [cmu], slide_xy=(700, 900),
                              check_seg=False)
    failures += raw_failures
    print("budget (|d score| <= %g, cosine >= %g, seg <= %g) met on %d of %d tiles of the "
          "conditioned bundle%s" % (SCORE_TOL, COSINE_MIN, SEG_TOL, met, tiles,
                                   "" if met == tiles else ": bf16 stays opt-in"))
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("PASS: every tile within the budget or within twice the emulated bf16 gap")
    return 0


if __name__ == "__main__":
    sys.exit(main())

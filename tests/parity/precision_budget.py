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
bundles (the segmentation of their random decoders moves by tenths), which is why they run fp32
by default (gs_precision_default picks a reduced precision only for a bundle that records its
budget as met; `gastroscreen calibrate` measures and records it).

Inputs: three tiles of the CMU-1 small region (tests/data), a tile of the TCGA slide and the
first Kather 2016 patch of each of the eight tissue classes (centre 128 x 128 crops, one batch),
the last two from the shared data when present (else said and skipped). The bundle is
runtime_parity.py's conditioned seeded bundle: make_bundle.py's raw random DCN offset convs
make offsets of many pixels, and the decoder then turns any rounding, even fp32 against
float64 in PyTorch, into a different segmentation map (runtime_parity.py measures it), which
no trained network does; the raw bundle's score and feature are checked too, its
segmentation gap is printed only.

int8 likewise, on the same inputs, from the same bundles calibrated by `gastroscreen calibrate`
on other tiles (three other CMU-1 tiles; the second Kather patch of each class), against the
issue's int8 budget:

    patch score   |sigmoid(logit_int8) - sigmoid(logit_fp32)|   <= 0.03
    feature       cosine(feature_int8, feature_fp32)             >= 0.99
    segmentation  Dice of (sigmoid(seg) > 0.5), int8 vs fp32     >= 0.95

against a PyTorch fake-quant emulation with the same scales: the bf16 emulation above, with
each quantised conv's source rounded to round(x * s) / s (u8, s = 255 / the bundle's amax of
that conv; Root's parts each with their own) and its weights to per-output-channel symmetric
int8 (per Root part, as the C runtime splits them). Asserted as for bf16: ours within the
budget or within twice the emulated gap (1 - Dice for the segmentation); printed: whether
the budget itself holds.

On a CPU without native bf16 `infer --precision bf16` falls back to fp32 (and says so); the
test then exits 77 with that message, which ctest reports as skipped. Without VNNI the int8
part is skipped (said).
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
INT8_SCORE_TOL = 0.03
INT8_COSINE_MIN = 0.99
INT8_DICE_MIN = 0.95
SKIP = 77


class NoVnni(Exception):
    pass


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
        if precision == "int8" and "no VNNI" in r.stderr:
            raise NoVnni(r.stderr.strip())
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


def metrics_int8(a, b, i):
    """(|d score|, 1 - feature cosine, 1 - Dice of seg > 0.5) of tile i, a the reference."""
    ds, dcos, _ = metrics(a, b, i)
    ma, mb = a["seg"][i] > 0, b["seg"][i] > 0  # sigmoid > 0.5
    inter, total = float((ma & mb).sum()), float(ma.sum() + mb.sum())
    dice = 1.0 if total == 0 else 2.0 * inter / total
    return ds, dcos, 1.0 - dice


def read_meta(path):
    import json
    import struct

    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)).get("__metadata__", {})


def emulated_int8(bundle_path, tiles_u8):
    """PyTorch mirror outputs in float32 and as the int8 runtime computes them: emulated bf16
    everywhere, except that each conv the bundle calibrates reads a fake-quantised source
    (u8, the bundle's scale) and fake-quantised per-output-channel int8 weights made from the
    float32 weights (per-channel symmetric quantisation commutes with folding a BN scale)."""
    sys.path.insert(0, os.path.join(rp.SRC, "model", "pytorch"))
    import bundle as bdl
    import run as mirror

    prefix = "int8.amax.multitask."
    amax = {k[len(prefix):]: float(v) for k, v in read_meta(bundle_path).items()
            if k.startswith(prefix)}
    nets, meta = bdl.load_networks(bundle_path, ["multitask"])
    net = nets["multitask"].eval()
    x = mirror.normalise(torch.as_tensor(tiles_u8).permute(0, 3, 1, 2), meta)
    modules = dict(net.named_modules())

    def fq_act(t, a):
        sc = 255.0 / a
        return torch.clamp(torch.round(t * sc), 0, 255) / sc

    def fq_w(w):
        m = w.abs().amax(dim=(1, 2, 3), keepdim=True)
        ws = torch.where(m > 0, 127.0 / m, torch.ones_like(m))
        return torch.clamp(torch.round(w * ws), -127, 127) / ws

    out = {}
    with torch.no_grad():
        out["fp32"] = net(x)
        orig = {k: v.clone() for k, v in net.state_dict().items()}
        for v in net.state_dict().values():
            if v.dtype == torch.float32:
                v.copy_(v.to(torch.bfloat16).float())
        hooks = []
        roots = {k[:-len(".conv[0]")] for k in amax if k.endswith(".conv[0]")}
        for name in roots:
            root = modules[name]
            parts = [amax[k] for k in sorted((k for k in amax if k.startswith(name + ".conv[")),
                                             key=lambda k: int(k[len(name) + 6:-1]))]
            state = {"done": False}

            def root_hook(module, children, parts=parts, state=state, name=name):
                assert len(children) == len(parts), name
                if not state["done"]:
                    w = orig[name + ".conv.weight"]
                    q, off = [], 0
                    for c in children:
                        q.append(fq_w(w[:, off:off + c.shape[1]]))
                        off += c.shape[1]
                    module.conv.weight.copy_(torch.cat(q, 1))
                    state["done"] = True
                return tuple(fq_act(c, a) for c, a in zip(children, parts))

            hooks.append(root.register_forward_pre_hook(root_hook))
        for name, a in amax.items():
            if name.endswith("]"):
                continue
            conv = modules[name]
            conv.weight.copy_(fq_w(orig[name + ".weight"]))
            hooks.append(conv.register_forward_pre_hook(
                lambda module, inp, a=a: (fq_act(inp[0], a),)))

        def round_output(module, inputs, output):
            return output.to(torch.bfloat16).float()

        hooks += [m.register_forward_hook(round_output) for m in net.modules()
                  if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
        out["int8"] = net(x.to(torch.bfloat16).float())
        for h in hooks:
            h.remove()
    return out


def compare_int8(name, a, b, emu):
    """As compare, with the int8 budget; returns (failures, tiles meeting it, tiles)."""
    failures = []
    met = 0
    n = a["logit"].shape[0]
    budget = (INT8_SCORE_TOL, 1.0 - INT8_COSINE_MIN, 1.0 - INT8_DICE_MIN)
    labels = ("patch score moved", "feature 1 - cosine", "segmentation 1 - Dice")
    worst, worst_ref = [0.0] * 3, [0.0] * 3
    for i in range(n):
        ours = metrics_int8(a, b, i)
        ref = metrics_int8(emu["fp32"], emu["int8"], i)
        print("  %-22s tile %d: |d score| %.2e (emulated %.2e)  1-cos %.2e (%.2e)  "
              "1-Dice %.2e (%.2e)" % (name, i, ours[0], ref[0], ours[1], ref[1], ours[2], ref[2]))
        met += all(o <= t for o, t in zip(ours, budget))
        worst = [max(w, o) for w, o in zip(worst, ours)]
        worst_ref = [max(w, r) for w, r in zip(worst_ref, ref)]
    for k in range(3):
        if not worst[k] <= max(budget[k], 2.0 * worst_ref[k]):
            failures.append("%s int8: worst %s %.3g, above both the budget %g and twice the "
                            "emulated int8 gap %.3g" % (name, labels[k], worst[k], budget[k],
                                                        worst_ref[k]))
    return failures, met, n


def case_int8(args, name, bundle8, inputs, slide_xy=None):
    outs = []
    for precision in ("fp32", "int8"):
        outs.append(infer(args, bundle8, precision, inputs,
                          os.path.join(args.work, "%s.i8.%s" % (name, precision)), slide_xy))
    tiles = rp.npy.read_npy(os.path.join(args.work, "%s.i8.fp32" % name, "tiles_u8.npy"))
    return compare_int8(name, outs[0], outs[1], emulated_int8(bundle8, tiles))


def calibrate(args, bundle, pngs, name):
    """bundle calibrated on the PNG tiles pngs (copied into a folder of their own)."""
    import shutil

    d = os.path.join(args.work, "calib_" + name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for p in pngs:
        shutil.copy(p, d)
    out = os.path.join(args.work, name + ".int8.safetensors")
    rp.run([args.gastroscreen, "calibrate", "--model", bundle, "--tiles", d, "--out", out])
    return out


def cmu_calibration_tiles(work, slide):
    """Three 512 x 512 CMU-1 tiles other than the tested ones, as PNGs."""
    import openslide

    s = openslide.OpenSlide(slide)
    paths = []
    for x, y in ((400, 1500), (1000, 1200), (1500, 200)):
        p = os.path.join(work, "cmu_calib_%d_%d.png" % (x, y))
        s.read_region((x, y), 0, (512, 512)).convert("RGB").save(p)
        paths.append(p)
    return paths


def case(args, name, bundle, inputs, slide_xy=None, check_seg=True):
    outs = []
    for precision in ("fp32", "bf16"):
        outs.append(infer(args, bundle, precision, inputs,
                          os.path.join(args.work, "%s.%s" % (name, precision)), slide_xy))
    tiles = rp.npy.read_npy(os.path.join(args.work, "%s.fp32" % name, "tiles_u8.npy"))
    return compare(name, outs[0], outs[1], emulated_bf16(bundle, tiles), check_seg)


def kather_batch(work, shared, which=0):
    """Centre 128x128 crops of patch `which` of each class as PNGs; [] when absent."""
    from PIL import Image

    paths = []
    for d in sorted(glob.glob(os.path.join(shared, "patches", "kather2016-samples", "*"))):
        files = sorted(glob.glob(os.path.join(d, "*.tif")))
        if len(files) <= which:
            continue
        im = Image.open(files[which]).convert("RGB")
        w, h = im.size
        x0, y0 = (w - 128) // 2, (h - 128) // 2
        out = os.path.join(work, "kather%s_%s.png" % ("" if which == 0 else which,
                                                       os.path.basename(d)))
        im.crop((x0, y0, x0 + 128, y0 + 128)).save(out)
        paths.append(out)
    return paths


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gastroscreen", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--quick", action="store_true",
                    help="one CMU-1 tile and the Kather batch only, no raw bundle (the "
                         "sanitizer build: the same code paths, a fraction of the time)")
    args = ap.parse_args()
    cmu_xys = ((700, 900),) if args.quick else ((700, 900), (200, 300), (1200, 500))
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
    for xy in cmu_xys:
        add(case(args, "cmu_%d_%d" % xy, cond, [cmu], slide_xy=xy))
    tcga = os.path.join(shared, "wsi", "histolab", "tcga-cr-7395-01a-01-ts1.svs")
    if args.quick:
        print("SKIP tcga tile: --quick")
    elif shared and os.path.exists(tcga):
        add(case(args, "tcga_1600_1400", cond, [tcga], slide_xy=(1600, 1400)))
    else:
        print("SKIP tcga tile: %s not found (GS_SHARED_DATA absent)" % tcga)
    kather = kather_batch(args.work, shared) if shared else []
    if kather:
        cond128 = rp.make_bundle(args.work, 1, "relu", 128, True)
        add(case(args, "kather_8_classes", cond128, kather))
    else:
        print("SKIP Kather patches: none under GS_SHARED_DATA")
    if not args.quick:
        raw = rp.make_bundle(args.work, 1, "relu", 512, False)
        # The raw bundle's segmentation is chaotic even in fp32 (runtime_parity.py): not
        # asserted.
        raw_failures, _, _ = case(args, "cmu_700_900_raw_bundle", raw, [cmu],
                                  slide_xy=(700, 900), check_seg=False)
        failures += raw_failures
    print("budget (|d score| <= %g, cosine >= %g, seg <= %g) met on %d of %d tiles of the "
          "conditioned bundle%s" % (SCORE_TOL, COSINE_MIN, SEG_TOL, met, tiles,
                                   "" if met == tiles else ": bf16 stays opt-in"))
    met8, tiles8 = 0, 0
    try:
        cond8 = calibrate(args, cond, cmu_calibration_tiles(args.work, cmu), "cond512")
        int8_cases = [("cmu_%d_%d" % xy, cond8, [cmu], xy) for xy in cmu_xys]
        if not args.quick and shared and os.path.exists(tcga):
            int8_cases.append(("tcga_1600_1400", cond8, [tcga], (1600, 1400)))
        kather2 = kather_batch(args.work, shared, 1) if kather else []
        if kather2:
            cond128_8 = calibrate(args, cond128, kather2, "cond128")
            int8_cases.append(("kather_8_classes", cond128_8, kather, None))
        for name, b8, inputs, xy in int8_cases:
            f, m, t = case_int8(args, name, b8, inputs, slide_xy=xy)
            failures += f
            met8 += m
            tiles8 += t
        print("int8 budget (|d score| <= %g, cosine >= %g, Dice >= %g) met on %d of %d tiles "
              "of the conditioned bundle%s" % (INT8_SCORE_TOL, INT8_COSINE_MIN, INT8_DICE_MIN,
                                               met8, tiles8,
                                               "" if met8 == tiles8 else ": int8 stays opt-in"))
    except NoVnni as e:
        print("SKIP int8: %s" % e)
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("PASS: every tile within the budget or within twice the emulated bf16 (and int8) gap")
    return 0


if __name__ == "__main__":
    sys.exit(main())

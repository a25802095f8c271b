#!/usr/bin/python3
"""Parity of the C runtime (`gastroscreen infer --out`) with the PyTorch mirror (run.py).

For each case: a seeded bundle from model/pytorch/make_bundle.py, inputs (real tiles read
from slides by the C side through stages/slide/reader, or seeded random uint8 tiles as PNG), then
`gastroscreen infer --model B INPUT --out C` and `run.py` on the very inputs the C side
wrote (tiles_u8.npy, blur_u8.npy, screener_input.npy). For EVERY output of every network:

    max|C - PyTorch| <= 1e-3 * max|PyTorch|

and the observed ratios are printed.

Conditioning. make_bundle.py's DCN offset convs are scaled so offsets reach several pixels
and, measured here, the decoder then amplifies float rounding chaotically: PyTorch float32
and PyTorch float64 on the same bundle and tile disagree on multitask_seg by 3% to 100%
(case "raw" prints that gap). No float32 implementation can meet 1e-3 against such a
reference, so the asserted cases use a "conditioned" variant of the bundle: every
`*.conv_offset_mask.weight` multiplied by OFFSET_WEIGHT_SCALE (biases untouched, so offsets
are still non-integer, ~0.5 px, input dependent, and the mask still varies per tap). The raw
bundle is still run and all its outputs except multitask_seg are asserted; for multitask_seg
the C ratio is printed next to PyTorch's own float32-vs-float64 gap.

    runtime_parity.py --gastroscreen BIN --work DIR [--size 512|128]

--size 128 (used by the sanitizer build) makes the bundles' tile_size 128 and all inputs
128x128, so the slow instrumented build stays affordable; the release run uses 512.
"""

import argparse
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "model", "pytorch"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision.io  # noqa: E402

import bundle  # noqa: E402
import npy  # noqa: E402

TOL = 1e-3
OFFSET_WEIGHT_SCALE = 0.003
OUTPUTS = (
    "multitask_logit",
    "multitask_feature",
    "multitask_seg",
    "foreground_logit",
    "foreground_logit_lowres",
    "blur_logit",
    "screener_logit",
)
CREATED = "2024-01-01T00:00:00Z"


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.stdout.write(r.stdout)
        sys.stderr.write(r.stderr)
        raise SystemExit("FAILED (exit %d): %s" % (r.returncode, " ".join(cmd)))
    return r.stdout


def make_bundle(work, seed, activation, size, conditioned):
    raw = os.path.join(work, "raw_s%d_%s.safetensors" % (seed, activation.replace(":", "")))
    if not os.path.exists(raw):
        run(["/usr/bin/python3", os.path.join(SRC, "model/pytorch/make_bundle.py"), "--seed",
             str(seed), "--out", raw, "--created", CREATED, "--activation", activation])
    tensors, meta = bundle.read_bundle(raw)
    if not conditioned and size == 512:
        return raw
    meta = dict(meta)
    meta["tile_size"] = str(size)
    if conditioned:
        tensors = {k: (v * OFFSET_WEIGHT_SCALE if k.endswith("conv_offset_mask.weight") else v)
                   for k, v in tensors.items()}
    out = os.path.join(work, "%s_s%d_%s_%d.safetensors" % (
        "cond" if conditioned else "raw", seed, activation.replace(":", ""), size))
    bundle.write_bundle(out, tensors, meta)
    return out


def random_tiles(work, seed, n, size):
    """Writes n seeded random uint8 RGB PNGs (smooth plus noise, like tissue) and returns paths."""
    g = torch.Generator().manual_seed(seed)
    paths = []
    for i in range(n):
        coarse = torch.rand(1, 3, size // 16, size // 16, generator=g)
        img = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        img = 0.75 * img + 0.25 * torch.rand(1, 3, size, size, generator=g)
        u8 = (img[0] * 255).round().clamp(0, 255).to(torch.uint8)
        p = os.path.join(work, "random_s%d_%d_%d.png" % (seed, size, i))
        torchvision.io.write_png(u8, p)
        paths.append(p)
    return paths


def glass_tiles(work, seed, n, size):
    """Writes n seeded tiles that are mostly glass (a random tissue-like band on near-white) and
    returns their paths: the blur network's tissue pool then averages over part of the map."""
    paths = random_tiles(work, seed, n, size)
    for i, p in enumerate(paths):
        u8 = torchvision.io.read_image(p)
        band = size * 3 // 8 + i * size // 8  # a different tissue share per tile
        u8[:, :, band:] = 242
        out = os.path.join(work, "glass_s%d_%d_%d.png" % (seed, size, i))
        torchvision.io.write_png(u8, out)
        paths[i] = out
    return paths


def with_meta(src, key, value):
    """Returns a copy of bundle ``src`` with metadata ``key`` set to ``value``."""
    tensors, meta = bundle.read_bundle(src)
    meta = dict(meta, **{key: value})
    out = os.path.splitext(src)[0] + "_%s_%s.safetensors" % (key.replace(".", ""), value)
    bundle.write_bundle(out, tensors, meta)
    return out


def f64_seg_gap(bundle_path, tiles_u8):
    """PyTorch float32 vs float64 multitask_seg gap, relative to max |float64|."""
    nets, meta = bundle.load_networks(bundle_path, ["multitask"])
    net = nets["multitask"]
    u8 = npy.read_npy(tiles_u8).permute(0, 3, 1, 2)
    mean = torch.tensor([float(v) for v in meta["input_mean"].split(",")]).view(1, 3, 1, 1)
    std = torch.tensor([float(v) for v in meta["input_std"].split(",")]).view(1, 3, 1, 1)
    x = (u8.to(torch.float32) / 255.0 - mean) / std
    with torch.no_grad():
        a = net(x)["seg"].double()
        b = net.double()(x.double())["seg"]
    return float((a - b).abs().max() / b.abs().max())


def compare(name, cdir, pdir, skip=()):
    """Prints every output's ratio; returns the list of failures."""
    failures = []
    seen = 0
    for out in OUTPUTS:
        cp, pp = os.path.join(cdir, out + ".npy"), os.path.join(pdir, out + ".npy")
        if not os.path.exists(pp):
            continue
        if not os.path.exists(cp):
            failures.append("%s: %s: C wrote no %s.npy" % (name, out, out))
            continue
        c, p = npy.read_npy(cp), npy.read_npy(pp)
        seen += 1
        if list(c.shape) != list(p.shape):
            failures.append("%s: %s: shape %s vs PyTorch %s" % (name, out, list(c.shape),
                                                                 list(p.shape)))
            continue
        ref = float(p.abs().max())
        diff = float((c - p).abs().max())
        ratio = diff / ref if ref > 0 else diff
        asserted = out not in skip
        ok = ratio <= TOL and bool(torch.isfinite(c).all())
        print("  %-24s shape %-18s max|PyTorch| %-10.4g max|C-PyTorch| %-10.3g ratio %.3g%s"
              % (out, list(p.shape), ref, diff, ratio,
                 "" if asserted else "  (not asserted, see below)"))
        if asserted and not ok:
            failures.append("%s: %s: ratio %.3g > %g" % (name, out, ratio, TOL))
    if seen < len(OUTPUTS):
        failures.append("%s: only %d of %d outputs compared" % (name, seen, len(OUTPUTS)))
    return failures


def case(args, name, bundle_path, inputs, slide_xy=None, skip=()):
    cdir = os.path.join(args.work, name + ".c")
    pdir = os.path.join(args.work, name + ".torch")
    for d in (cdir, pdir):
        shutil.rmtree(d, ignore_errors=True)
    cmd = [args.gastroscreen, "infer", "--model", bundle_path] + inputs + ["--out", cdir]
    if slide_xy:
        cmd += ["--x", str(slide_xy[0]), "--y", str(slide_xy[1])]
    out = run(cmd)
    if "untrained" not in out:
        raise SystemExit("%s: infer did not state the provenance:\n%s" % (name, out))
    run(["/usr/bin/python3", os.path.join(SRC, "model/pytorch/run.py"), "--bundle", bundle_path,
         "--out", pdir, "--multitask", os.path.join(cdir, "tiles_u8.npy"),
         "--foreground", os.path.join(cdir, "tiles_u8.npy"),
         "--blur", os.path.join(cdir, "blur_u8.npy"),
         "--screener", os.path.join(cdir, "screener_input.npy")])
    n = npy.read_npy(os.path.join(cdir, "tiles_u8.npy")).shape
    print("%s: %s, input %s" % (name, os.path.basename(bundle_path), list(n)))
    return compare(name, cdir, pdir, skip), cdir


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gastroscreen", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--size", type=int, default=512, choices=(512, 128))
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    size = args.size
    failures = []
    test_data = os.environ.get("GS_TEST_DATA", os.path.join(SRC, "tests", "data"))
    shared = os.environ.get("GS_SHARED_DATA", "")

    cond1 = make_bundle(args.work, 1, "relu", size, True)
    # Real tissue (CMU-1, H&E) read through stages/slide/reader at the bundle's target resolution.
    cmu = os.path.join(test_data, "CMU-1-Small-Region.svs")
    f, _ = case(args, "cmu_tile", cond1, [cmu], slide_xy=(700, 900))
    failures += f
    # Seeded random tiles, batch 2.
    f, _ = case(args, "random_batch2", cond1, random_tiles(args.work, 11, 2, size))
    failures += f
    # Leaky activation on a second real slide when the shared data is there.
    tcga = os.path.join(shared, "wsi", "histolab", "tcga-cr-7395-01a-01-ts1.svs")
    leaky = make_bundle(args.work, 2, "leaky:0.01", size, True)
    if shared and os.path.exists(tcga):
        f, _ = case(args, "tcga_tile_leaky", leaky, [tcga], slide_xy=(1600, 1400))
    else:
        print("SKIP tcga_tile_leaky: %s not found (GS_SHARED_DATA absent); using a random tile"
              % tcga)
        f, _ = case(args, "random_leaky", leaky, random_tiles(args.work, 12, 1, size))
    failures += f
    # The blur network's tissue pool (pool.blur = tissue) on mostly-glass tiles, batch 2, and
    # the same tiles with the plain mean: both match PyTorch, and the pools really differ.
    glass = glass_tiles(args.work, 13, 2, size)
    f, cmean = case(args, "glass_blur_mean", cond1, glass)
    failures += f
    f, ctissue = case(args, "glass_blur_tissue", with_meta(cond1, "pool.blur", "tissue"), glass)
    failures += f
    lm = npy.read_npy(os.path.join(cmean, "blur_logit.npy"))
    lt = npy.read_npy(os.path.join(ctissue, "blur_logit.npy"))
    moved = float((lm - lt).abs().max()) / max(float(lm.abs().max()), 1e-6)
    print("  tissue vs mean pool: blur_logit moves by %.3g of max|mean-pool logit|" % moved)
    if not moved > 10 * TOL:
        failures.append("glass_blur_tissue: the tissue pool gave the mean pool's logits "
                        "(moved %.3g)" % moved)
    # Any other pool.blur is refused by both sides, naming the key.
    bogus = with_meta(cond1, "pool.blur", "median")
    r = subprocess.run([args.gastroscreen, "infer", "--model", bogus] + glass[:1] +
                       ["--out", os.path.join(args.work, "bogus_pool.c")],
                       capture_output=True, text=True)
    if r.returncode == 0 or "pool.blur" not in r.stdout + r.stderr:
        failures.append("pool.blur = median: infer exit %d, output %r" % (
            r.returncode, (r.stdout + r.stderr)[-300:]))
    try:
        bundle.load_networks(bogus, ["blur"])
        failures.append("pool.blur = median: load_networks accepted it")
    except bundle.BundleError as e:
        if "pool.blur" not in str(e):
            failures.append("pool.blur = median: %s" % e)
    # The raw make_bundle bundle: everything but the chaotic seg asserted; seg reported.
    raw1 = make_bundle(args.work, 1, "relu", size, False)
    f, cdir = case(args, "cmu_tile_raw_bundle", raw1, [cmu], slide_xy=(700, 900),
                   skip=("multitask_seg",))
    failures += f
    gap = f64_seg_gap(raw1, os.path.join(cdir, "tiles_u8.npy"))
    print("  raw bundle: PyTorch float32 vs float64 multitask_seg gap %.3g of max|float64| "
          "(the reference itself is not accurate to 1e-3 there)" % gap)

    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("PASS: every asserted output within %g of max|PyTorch|" % TOL)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tiny learnable data sets for the training tests (tests/pytorch/test_learn.py).

Nothing here is about cancer: the targets are synthetic but learnable from the pixels.

    make_patch_dataset(dir)   DIR/manifest.csv in `gastroscreen dataset`'s columns, patches
                              cut with openslide from the real H&E tissue of
                              tests/data/CMU-1-Small-Region.svs; mask = a tissue threshold
                              (grey < 200), label = positive when the patch's tissue fraction
                              is above the median
    make_feature_dataset(dir) DIR/features.csv + .npy in `gastroscreen features`' format:
                              seeded random [k,512] matrices; positive slides carry a shifted
                              block of feature columns in a few rows
"""

import csv
import os

import torch
import torchvision.io

from util import SOURCE_DIR

import npy

SLIDE = os.path.join(os.environ.get("GS_TEST_DATA", os.path.join(SOURCE_DIR, "tests", "data")),
                     "CMU-1-Small-Region.svs")
MANIFEST_COLUMNS = ("patch", "mask", "slide", "patient", "x", "y", "x0", "y0", "w0", "h0",
                    "label", "tissue_fraction", "lesion_fraction")


def make_patch_dataset(out, size=64, step=160, patients=8):
    """Writes OUT/manifest.csv and its PNGs; returns the number of patches."""
    import openslide
    slide = openslide.OpenSlide(SLIDE)
    w, h = slide.dimensions
    os.makedirs(os.path.join(out, "patches"), exist_ok=True)
    rows = []
    for y0 in range(0, h - size + 1, step):
        for x0 in range(0, w - size + 1, step):
            rgb = slide.read_region((x0, y0), 0, (size, size)).convert("RGB")
            t = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
            t = t.view(size, size, 3).permute(2, 0, 1).contiguous()
            grey = t.float().mean(0)
            mask = (grey < 200).to(torch.uint8) * 255
            frac = float((mask > 0).float().mean())
            if frac < 0.02:
                continue  # background: the dataset command keeps tissue patches only
            i = len(rows)
            patch, mpath = "patches/%04d.png" % i, "patches/%04d_mask.png" % i
            torchvision.io.write_png(t, os.path.join(out, patch))
            torchvision.io.write_png(mask[None], os.path.join(out, mpath))
            rows.append([patch, mpath, "cmu1", "p%d" % (i % patients), x0 // size, y0 // size,
                         x0, y0, size, size, None, "%.4f" % frac, "%.4f" % frac])
    median = sorted(float(r[11]) for r in rows)[len(rows) // 2]
    for r in rows:
        r[10] = "positive" if float(r[11]) > median else "negative"
    with open(os.path.join(out, "manifest.csv"), "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(MANIFEST_COLUMNS)
        wr.writerows(rows)
    return len(rows)


def make_feature_dataset(out, slides=192, seed=5):
    """Writes OUT/features.csv and OUT/features/<slide>.npy; returns the number of slides."""
    g = torch.Generator().manual_seed(seed)
    os.makedirs(os.path.join(out, "features"), exist_ok=True)
    rows = []
    for i in range(slides):
        k = int(torch.randint(4, 65, (1,), generator=g))
        f = torch.relu(torch.randn(k, 512, generator=g))  # GAP of ReLU maps: non-negative
        positive = i % 2 == 1
        if positive:
            f[: max(1, k // 8), :32] += 1.5  # a few "suspicious" top rows
        rel = "features/s%03d.npy" % i
        npy.write_npy(os.path.join(out, rel), f)
        rows.append([rel, "positive" if positive else "negative", "p%d" % (i % 24),
                     "s%03d" % i, k])
    with open(os.path.join(out, "features.csv"), "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(("features", "label", "patient", "slide", "k"))
        wr.writerows(rows)
    return len(rows)

#!/usr/bin/python3
"""Tile-edge artefacts of the segmentation map, with and without a context margin (not a test).

The network pads every layer with zeros at the tile's border, so the segmentation map's cells
near a tile's edge differ from what the network says of the same tissue seen from inside a
larger field. For windows of TILE x TILE pixels at several places of a slide, this compares the
map of the window run alone (context 0) and with C pixels of slide around it (the pipeline's
`[infer] context`, the window's part of the map kept) against the map of the same window cut
from a run on a frame with 256 px of context on every side (the reference), and prints the mean
|difference| of the sigmoid per band of distance from the window's edge, plus the work per tile
relative to context 0. The figures are a property of the bundle's weights and architecture (the
C runtime matches PyTorch on them: tests/parity), so this runs the PyTorch mirror.

    /usr/bin/python3 tests/bench/edge_artefacts.py --model BUNDLE --slide SLIDE \\
        [--contexts 0,16,32,64] [--places X,Y X,Y ...] [--tile 512]

Places are level-0 pixels of the window's top-left corner; the slide is read at level 0, so use
a slide near 0.5 um/px (the sample slide is 0.499).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "model", "pytorch"))

import numpy as np  # noqa: E402
import openslide  # noqa: E402
import torch  # noqa: E402

import bundle  # noqa: E402

REFERENCE = 256
BANDS = ((0, 16), (16, 64), (64, 1 << 30))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--slide", required=True)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--contexts", default="0,16,32,64")
    ap.add_argument("--places", nargs="*", default=["600,1100", "900,1800", "500,2000"])
    a = ap.parse_args()
    torch.set_num_threads(1)
    nets, meta = bundle.load_networks(a.model, ["multitask"])
    net = nets["multitask"]
    mean = torch.tensor([float(v) for v in meta["input_mean"].split(",")]).view(1, 3, 1, 1)
    std = torch.tensor([float(v) for v in meta["input_std"].split(",")]).view(1, 3, 1, 1)
    slide = openslide.OpenSlide(a.slide)
    contexts = [int(c) for c in a.contexts.split(",")]
    t, q = a.tile, a.tile // 4

    def seg(img):
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1).unsqueeze(0).float()
        with torch.no_grad():
            return torch.sigmoid(net((x / 255 - mean) / std)["seg"])[0, 0].numpy()

    yy, xx = np.meshgrid(np.arange(q), np.arange(q), indexing="ij")
    dist = np.minimum(np.minimum(yy, xx), np.minimum(q - 1 - yy, q - 1 - xx)) * 4  # px
    err = {}
    for place in a.places:
        x, y = (int(v) for v in place.split(","))
        big = np.asarray(slide.read_region((x - REFERENCE, y - REFERENCE), 0,
                                           (t + 2 * REFERENCE,) * 2).convert("RGB"))
        r = REFERENCE // 4
        ref = seg(big)[r:r + q, r:r + q]
        for c in contexts:
            o = REFERENCE - c
            m = seg(big[o:o + t + 2 * c, o:o + t + 2 * c])[c // 4:c // 4 + q, c // 4:c // 4 + q]
            for lo, hi in BANDS:
                sel = (dist >= lo) & (dist < hi)
                err.setdefault((c, lo), []).append(float(np.abs(m - ref)[sel].mean()))
    print("mean |map - reference| by distance of the cell from the window's edge "
          "(%d windows of %d px)" % (len(a.places), t))
    print("context  work   " + "  ".join("%d-%s px" % (lo, hi if hi < 1 << 30 else "")
                                         for lo, hi in BANDS))
    for c in contexts:
        work = ((t + 2 * c) / t) ** 2
        print("%5d   %5.2fx  " % (c, work) + "  ".join(
            "%9.4f" % np.mean(err[(c, lo)]) for lo, _ in BANDS))
    return 0


if __name__ == "__main__":
    sys.exit(main())

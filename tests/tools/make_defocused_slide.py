#!/usr/bin/python3
"""Writes a slide made from a real one with part of it defocused, for tests.

    make_defocused_slide.py SRC DST [--from 0.75] [--sigma 8]

The pixels of SRC's level 0 with every row from --from (a fraction of the height) down blurred
by a Gaussian of --sigma px per channel, written to DST as a tiled (256 px), zlib-compressed
RGB TIFF at 0.5 um/px (20000 px/cm), which OpenSlide reads as a generic TIFF. --from 0 blurs
the whole slide. Needs numpy, PIL, scipy and tifffile.
"""
import argparse

import numpy as np
import tifffile
from PIL import Image
from scipy.ndimage import gaussian_filter


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--from", dest="start", type=float, default=0.75)
    ap.add_argument("--sigma", type=float, default=8.0)
    a = ap.parse_args()
    rgb = np.asarray(Image.open(a.src).convert("RGB")).copy()
    cut = int(rgb.shape[0] * a.start)
    for c in range(3):
        rgb[cut:, :, c] = np.clip(gaussian_filter(rgb[cut:, :, c].astype(np.float32), a.sigma),
                                  0, 255)
    tifffile.imwrite(a.dst, rgb, tile=(256, 256), photometric="rgb", compression="zlib",
                     resolution=(20000, 20000), resolutionunit="CENTIMETER")


if __name__ == "__main__":
    main()

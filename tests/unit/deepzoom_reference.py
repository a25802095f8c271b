#!/usr/bin/python3
"""openslide-python's DeepZoomGenerator (limit_bounds=True, tile 254, overlap 1) as the
reference for tests/unit/test_deepzoom.c.

  deepzoom_reference.py slide PATH      the geometry of a slide, as text lines
  deepzoom_reference.py layout SPEC     the same for a made-up slide (JSON: width, height,
                                        downsample lists and a properties object), so bounds
                                        can be tested without a slide file that has them
  deepzoom_reference.py compare PATH DIR
                                        compares every DIR/<level>_<col>_<row>.jpeg with the
                                        generator's tile: same size, mean absolute difference
                                        within JPEG noise; exit 1 otherwise

Geometry lines: "levels N", then per level "level K W H COLS ROWS", then per chosen tile
"tile K COL ROW L0X L0Y SLIDE_LEVEL READ_W READ_H W H". The tiles chosen: every tile of a level
with at most 400, else the columns and rows 0, 1, middle, last-1, last (the C side chooses the
same ones).
"""
import io
import json
import os
import sys

import numpy as np
import openslide
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

# A tile passes when its mean |difference| per channel (0..255) from the generator's tile is
# within NOISE_FACTOR times what PIL's own JPEG q75 encoding of that tile differs from it, plus
# SLACK for the area mean against Lanczos. A tile shifted by one pixel fails (about 2x the noise
# on tissue).
NOISE_FACTOR = 1.25
SLACK = 2.0
TINY_LIMIT = 8.0  # tiles under 64 pixels


class LayoutSlide:
    """What DeepZoomGenerator reads of an OpenSlide object, from a JSON spec."""

    def __init__(self, spec):
        self.level_dimensions = tuple(zip(spec["width"], spec["height"]))
        self.dimensions = self.level_dimensions[0]
        self.level_downsamples = tuple(spec["downsample"])
        self.level_count = len(self.level_dimensions)
        self.properties = spec.get("properties", {})

    def get_best_level_for_downsample(self, d):
        # openslide_get_best_level_for_downsample() of OpenSlide 3.4
        if d < self.level_downsamples[0]:
            return 0
        for i in range(1, self.level_count):
            if d < self.level_downsamples[i]:
                return i - 1
        return self.level_count - 1


def chosen(n):
    if n <= 20:
        return list(range(n))
    return sorted({0, 1, n // 2, n - 2, n - 1})


def tiles(dz, level):
    cols, rows = dz.level_tiles[level]
    if cols * rows <= 400:
        return [(c, r) for r in range(rows) for c in range(cols)]
    return [(c, r) for r in chosen(rows) for c in chosen(cols)]


def geometry(dz):
    out = ["levels %d" % dz.level_count]
    for k in range(dz.level_count):
        w, h = dz.level_dimensions[k]
        cols, rows = dz.level_tiles[k]
        out.append("level %d %d %d %d %d" % (k, w, h, cols, rows))
    for k in range(dz.level_count):
        for c, r in tiles(dz, k):
            (l0x, l0y), sl, (rw, rh) = dz.get_tile_coordinates(k, (c, r))
            w, h = dz.get_tile_dimensions(k, (c, r))
            out.append("tile %d %d %d %d %d %d %d %d %d %d" % (k, c, r, l0x, l0y, sl, rw, rh, w, h))
    return "\n".join(out) + "\n"


def compare(path, folder):
    slide = openslide.OpenSlide(path)
    dz = DeepZoomGenerator(slide, 254, 1, limit_bounds=True)
    worst, n, bad, skipped = 0.0, 0, [], 0
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".jpeg"):
            continue
        k, c, r = (int(v) for v in name[:-5].replace("_", " ").split())
        ours = np.asarray(Image.open(os.path.join(folder, name)).convert("RGB"), dtype=np.float64)
        ref_img = dz.get_tile(k, (c, r))
        want = dz.get_tile_dimensions(k, (c, r))
        if ours.shape[1::-1] != tuple(want):
            bad.append("%s: %dx%d, want %dx%d" % (name, ours.shape[1], ours.shape[0], *want))
            continue
        lvl = dz.get_tile_coordinates(k, (c, r))[1]
        props = slide.properties
        tw = int(props.get("openslide.level[%d].tile-width" % lvl, 0))
        if tw > slide.level_dimensions[lvl][0]:
            # OpenSlide 3.4 reads such a level (boxes.tiff's 37x31 level of 64x64 tiles) as
            # transparent or not depending on what was read before: no reference there.
            skipped += 1
            continue
        tiny = want[0] * want[1] < 64
        if ref_img.size != tuple(want) or tiny:
            # PIL's thumbnail() keeps the aspect ratio rather than the size (a 2x2 level of a
            # portrait slide gets a 1x2 tile): resize the same read to the size instead. For a
            # few pixels standing for the whole slide, Lanczos weights the centre of each
            # pixel's footprint and an area mean does not (12 grey levels apart on the 2x2
            # level of the sample): the reference is then PIL's area mean (BOX).
            loc, lvl, size = dz.get_tile_coordinates(k, (c, r))
            region = slide.read_region(loc, lvl, size)
            bg = Image.new("RGB", region.size, "#ffffff")
            ref_img = Image.composite(region, bg, region).resize(
                tuple(want), Image.BOX if tiny else Image.LANCZOS)
        ref_img = ref_img.convert("RGB")
        ref = np.asarray(ref_img, dtype=np.float64)
        # The noise JPEG itself adds to this tile: PIL's own q75 encoding of the reference.
        buf = io.BytesIO()
        ref_img.save(buf, "JPEG", quality=75)
        noise = float(np.abs(np.asarray(Image.open(buf), dtype=np.float64) - ref).mean())
        d = float(np.abs(ours - ref).mean())
        limit = NOISE_FACTOR * noise + SLACK
        if tiny:  # JPEG's 16x16 chroma blocks smear a few pixels' colours together
            limit = TINY_LIMIT
        worst = max(worst, d - limit)
        n += 1
        if d > limit:
            bad.append("%s: mean |difference| %.2f > %.2f (JPEG alone: %.2f)" % (name, d, limit,
                                                                             noise))
    print("compared %d tiles (%d skipped), worst mean |difference| less its limit %.2f" %
          (n, skipped, worst))
    for b in bad:
        print(b)
    return 1 if bad or n == 0 else 0


def main():
    mode = sys.argv[1]
    if mode == "slide":
        sys.stdout.write(geometry(DeepZoomGenerator(openslide.OpenSlide(sys.argv[2]), 254, 1,
                                                    limit_bounds=True)))
        return 0
    if mode == "layout":
        with open(sys.argv[2]) as f:
            spec = json.load(f)
        sys.stdout.write(geometry(DeepZoomGenerator(LayoutSlide(spec), 254, 1, limit_bounds=True)))
        return 0
    if mode == "compare":
        return compare(sys.argv[2], sys.argv[3])
    print("unknown mode " + mode, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Writes a slide with OpenSlide bounds (a Leica SCN) made from a real one, for tests.

    make_bounds_slide.py SRC DST [--offset-x 320] [--offset-y 192] [--margin 448]

Most formats give level 0 as the whole scanned image, but Leica, MIRAX and Ventana files give
a larger canvas with the scanned area inside it, and OpenSlide then sets openslide.bounds-x/-y
(-width/-height) to that area; QuPath shows only the bounds and puts their corner at (0, 0).
This writes SRC's level 0 (read with OpenSlide) as the one brightfield main image of a Leica
SCN collection whose canvas is --margin px larger on every side, the image placed at
(--offset-x, --offset-y) level-0 pixels (within the margin), so OpenSlide reports
bounds-x/-y = the offsets and bounds-width/-height = SRC's size. Two pyramid levels (full and
half), tiled 256 px, zlib, SRC's mpp. Needs numpy, PIL, tifffile and openslide-python.

The XML is the smallest one OpenSlide 3.4's Leica reader accepts (namespace, collection size,
one image with view, device, objective, illumination and per-level dimensions, all in nm).
"""
import argparse

import numpy as np
import openslide
import tifffile
from PIL import Image

NS = "http://www.leica-microsystems.com/scn/2010/10/01"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--offset-x", type=int, default=320)
    ap.add_argument("--offset-y", type=int, default=192)
    ap.add_argument("--margin", type=int, default=448)
    a = ap.parse_args()
    if not (0 <= a.offset_x <= a.margin and 0 <= a.offset_y <= a.margin):
        ap.error("the offsets must lie within the margin")
    src = openslide.OpenSlide(a.src)
    w, h = src.dimensions
    mpp = float(src.properties.get(openslide.PROPERTY_NAME_MPP_X, "0.5"))
    rgb = np.asarray(src.read_region((0, 0), 0, (w, h)).convert("RGB"))
    half = np.asarray(Image.fromarray(rgb).resize((w // 2, h // 2), Image.BOX))
    nm = mpp * 1000.0  # nm per level-0 pixel

    def n(px):
        return int(round(px * nm))

    xml = (
        f'<?xml version="1.0" encoding="utf-8"?>'
        f'<scn xmlns="{NS}"><collection name="test" uuid="0" '
        f'sizeX="{n(w + 2 * a.margin)}" sizeY="{n(h + 2 * a.margin)}">'
        f'<barcode>gastroscreen-test</barcode>'
        f'<image name="main" uuid="1"><creationDate>2026-01-01T00:00:00.00Z</creationDate>'
        f'<device model="test" version="1"/><pixels sizeX="{w}" sizeY="{h}">'
        f'<dimension sizeX="{w}" sizeY="{h}" r="0" ifd="0"/>'
        f'<dimension sizeX="{w // 2}" sizeY="{h // 2}" r="1" ifd="1"/></pixels>'
        f'<view sizeX="{n(w)}" sizeY="{n(h)}" offsetX="{n(a.offset_x)}" '
        f'offsetY="{n(a.offset_y)}" spacingZ="0"/>'
        f'<scanSettings><objectiveSettings><objective>20</objective></objectiveSettings>'
        f'<illuminationSettings><numericalAperture>0.4</numericalAperture>'
        f'<illuminationSource>brightfield</illuminationSource></illuminationSettings>'
        f'</scanSettings></image></collection></scn>'
    )
    res = 1e4 / mpp  # px per cm
    with tifffile.TiffWriter(a.dst, bigtiff=True) as t:
        t.write(rgb, tile=(256, 256), photometric="rgb", compression="zlib",
                description=xml, resolution=(res, res), resolutionunit="CENTIMETER",
                metadata=None)
        t.write(half, tile=(256, 256), photometric="rgb", compression="zlib",
                resolution=(res / 2, res / 2), resolutionunit="CENTIMETER", metadata=None)


if __name__ == "__main__":
    main()

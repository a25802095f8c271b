#!/usr/bin/python3
"""Prints the scikit-image reference numbers pasted into tests/unit/test_ops_colour.c and
tests/unit/test_ops_otsu.c. Run with Debian's /usr/bin/python3 (python3-skimage 0.19)."""
import numpy as np
import skimage
from skimage.color import rgb2hed, colorconv
from skimage.filters import threshold_otsu

print("skimage", skimage.__version__)
print("hed_from_rgb (row = R, G, B input OD; column = H, E, D):")
for row in colorconv.hed_from_rgb:
    print("    {%.17g, %.17g, %.17g}," % tuple(row))

pixels = [
    ("white", (255, 255, 255)),
    ("black", (0, 0, 0)),
    ("haematoxylin blue", (60, 50, 140)),
    ("eosin pink", (230, 130, 190)),
    ("DAB brown", (150, 100, 50)),
    ("mid grey", (128, 128, 128)),
    ("pure red", (255, 0, 0)),
]
print("rgb2hed of single uint8 pixels:")
for name, px in pixels:
    hed = rgb2hed(np.array([[px]], dtype=np.uint8))[0, 0]
    print("    {{%d, %d, %d}, {%.9g, %.9g, %.9g}}, /* %s */" % (px + tuple(hed) + (name,)))


def otsu_f32_array(n, bimodal):
    k = (np.arange(n, dtype=np.int64) ** 2 * 31 + np.arange(n) * 17) % 1009
    v = k.astype(np.float32) / np.float32(7)
    if bimodal:
        v = np.where(k < 300, v, v + np.float32(500))
    return v.astype(np.float32)


print("threshold_otsu of the formula arrays (see otsu test):")
for n, bimodal in [(1000, 0), (1000, 1), (37, 1), (5000, 1)]:
    v = otsu_f32_array(n, bimodal)
    print("    n=%d bimodal=%d -> %.9g" % (n, bimodal, threshold_otsu(v, nbins=256)))
for n in [1000, 77]:
    k = ((np.arange(n, dtype=np.int64) ** 2 * 31 + np.arange(n) * 17) % 1009) % 251
    print("    u8 n=%d -> %d" % (n, threshold_otsu(k.astype(np.uint8))))

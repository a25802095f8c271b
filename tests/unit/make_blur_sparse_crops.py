#!/usr/bin/python3
"""Writes the inputs of test_blur_sparse: 256 x 256 crops of the held-out strip of
CMU-1-Small-Region (rows >= 2077, never trained on), sharp and defocused the way
model/pytorch/learn_blur.py tests it (Gaussian sigma 2 px over the crop with 40 px of real
context, then JPEG q=80), and the committed trained blur network without its
threshold.blur_sparse_tissue key (the same weights, the rule off) and with it out of range.

    make_blur_sparse_crops.py --data tests/data --trained model/trained/blur.safetensors --out DIR

sparse_*.png: the crop at x 384, y 2333 (6% tissue: a tissue edge, mostly glass); its sigma-2
copy is one the network alone calls sharp (P(blurred) about 0.46 < 0.54) while the classical
measure scores it about 26 (< 60). dense_*.png: the crop at x 1024, y 2077 (96% tissue)."""

import argparse
import os
import sys

import numpy as np
import openslide
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "model", "pytorch"))
import bundle  # noqa: E402
import learn_blur  # noqa: E402

CROPS = {"sparse": (384, 2333), "dense": (1024, 2077)}
CTX = 40


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True)
    p.add_argument("--trained", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    s = openslide.OpenSlide(os.path.join(a.data, "CMU-1-Small-Region.svs"))
    side = learn_blur.CROP
    for name, (x, y) in CROPS.items():
        r = s.read_region((x - CTX, y - CTX), 0, (side + 2 * CTX, side + 2 * CTX))
        region = np.asarray(r.convert("RGB"))
        sharp = np.ascontiguousarray(region[CTX:CTX + side, CTX:CTX + side])
        Image.fromarray(sharp).save(os.path.join(a.out, name + "_sharp.png"))
        f = region.astype(np.float32) / 255.0
        b = learn_blur.jpeg(learn_blur.to_u8(learn_blur.defocus(f, "gauss", 2.0)),
                            learn_blur.TEST_JPEG)
        Image.fromarray(np.ascontiguousarray(learn_blur.centre(b, side))).save(
            os.path.join(a.out, name + "_gauss2.png"))
    tensors, meta = bundle.read_bundle(a.trained)
    if learn_blur.SPARSE_KEY not in meta:
        sys.exit("%s: no %s" % (a.trained, learn_blur.SPARSE_KEY))
    del meta[learn_blur.SPARSE_KEY]
    bundle.write_bundle(os.path.join(a.out, "blur-nokey.safetensors"), tensors, meta)
    meta[learn_blur.SPARSE_KEY] = "1.5"  # outside 0..1: the loader must refuse it
    bundle.write_bundle(os.path.join(a.out, "blur-badkey.safetensors"), tensors, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())

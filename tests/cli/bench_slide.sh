#!/usr/bin/env bash
# Smoke test of `gastroscreen bench --slide FILE`, the whole-slide figure (no timing asserted:
# machines are noisy). With --quick --repeat 1 and the build's default bundle, the JSON's
# "slide" has one entry per precision the network section timed, in its order, each with
# slides_per_hour > 0, a non-negative tile count, network and outside shares in [0, 1]
# summing to 1, stage seconds and a peak-RSS figure; the table prints the section;
# --slide with --no-network is a usage error (2); a missing slide fails (1) naming it.
# usage: bench_slide.sh GASTROSCREEN
set -u
gs=${1:?}
py=/usr/bin/python3
slide="$GS_TEST_DATA/small.svs"
[ -e "$slide" ] || { echo "SKIP: $slide does not exist"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*; do echo "--- $f"; tail -n 30 "$f"; done; exit 1; }

timeout -k 10 1500 "$gs" bench --json --quick --repeat 1 --slide "$slide" \
    >"$tmp/out.json" 2>"$tmp/err.txt" || fail "bench --slide exited $?"
$py - "$tmp/out.json" "$slide" <<'PY' || fail "the slide section is not as documented"
import json, math, os, sys
r = json.load(open(sys.argv[1]))
s = r["slide"]
assert s["file"] == os.path.realpath(sys.argv[2]), s["file"]
timed = [p["precision"] for p in r["network"]["multitask"]["precisions"]]
per = s["precisions"]
assert [p["precision"] for p in per] == timed and timed[0] == "fp32", (timed, per)
for p in per:
    assert p["runs"] == 1, p
    assert p["wall_s"] > 0 and math.isclose(p["slides_per_hour"], 3600 / p["wall_s"], rel_tol=1e-4), p
    assert isinstance(p["tiles_inferred"], int) and p["tiles_inferred"] >= 0, p
    a, b = p["network_share"], p["outside_network_share"]
    assert 0 <= a <= 1 and 0 <= b <= 1 and abs(a + b - 1) < 1e-5, p
    assert p["stage_seconds"] and all(v >= 0 for v in p["stage_seconds"].values()), p
    assert p["peak_rss_mib"] > 0 and p["peak_rss_growth_mib"] >= 0, p
assert "pipeline.sh" in s["shares"] and "infer stage" in s["shares"], s["shares"]
print("slide:", ", ".join("%s %.0f slides/h, network %.0f%%" % (
    p["precision"], p["slides_per_hour"], 100 * p["network_share"]) for p in per))
PY
timeout -k 10 1500 "$gs" bench --quick --repeat 1 --precision fp32 --slide "$slide" \
    >"$tmp/table.txt" 2>>"$tmp/err.txt" || fail "bench --slide (table) exited $?"
grep -q "^whole slide .*small.svs, embedded" "$tmp/table.txt" || fail "no whole-slide table"
grep -Eq "^ +fp32 +[0-9.]+ +[0-9.]+ " "$tmp/table.txt" || fail "no fp32 row in the table"

"$gs" bench --slide "$slide" --no-network >/dev/null 2>"$tmp/usage.txt"
[ $? -eq 2 ] || fail "--slide with --no-network is not a usage error"
"$gs" bench --quick --repeat 1 --slide "$tmp/none.svs" >/dev/null 2>"$tmp/missing.txt"
[ $? -eq 1 ] && grep -q "none.svs" "$tmp/missing.txt" || fail "a missing slide is not named"
echo "ok: bench --slide"

#!/usr/bin/env bash
# gastroscreen tiles, end to end: the sample slide gives a plan and its three files.
# Usage: tiles.sh GASTROSCREEN_BINARY
set -u
bin=$1
data=${GS_TEST_DATA:?}
work=$(mktemp -d "${GS_BUILD_DIR:-/tmp}/cli-tiles.XXXXXX")
trap 'rm -rf "$work"' EXIT
failures=0
check() { # check DESCRIPTION COMMAND...
  if "${@:2}"; then echo "ok   $1"; else echo "FAIL $1"; failures=$((failures + 1)); fi
}

"$bin" --version >"$work/version" 2>&1
check "--version exits 0 and names the program" grep -q '^gastroscreen [0-9]' "$work/version"
"$bin" --help >"$work/help" 2>&1
check "--help lists the tiles command" grep -q 'tiles SLIDE' "$work/help"

"$bin" tiles "$data/CMU-1-Small-Region.svs" --out "$work/cmu" >"$work/out" 2>"$work/err"
rc=$?
cat "$work/out"
check "tiles on the sample slide exits 0" test "$rc" -eq 0
check "prints the vendor" grep -q '^vendor *aperio' "$work/out"
check "prints the resolution from the slide" grep -q 'um/px (from the slide)' "$work/out"
check "prints the plan status" grep -q '^plan *ok: ' "$work/out"
for f in mask.png plan.png; do
  check "$f is a PNG" bash -c "head -c 8 '$work/cmu/$f' | od -An -tx1 | grep -q '89 50 4e 47 0d 0a 1a 0a'"
done
check "plan.json agrees with itself and with the printout" /usr/bin/python3 - "$work/cmu/plan.json" "$work/out" <<'PY'
import json, re, sys
plan = json.load(open(sys.argv[1]))
out = open(sys.argv[2]).read()
assert plan["status"] == "ok", plan["status"]
assert plan["slide"]["vendor"] == "aperio"
assert plan["slide"]["mpp_source"] == "slide"
assert plan["tile_count"] == len(plan["tiles"]) > 0
assert plan["grid"] == {"cols": 5, "rows": 6}, plan["grid"]
m = re.search(r"plan +ok: (\d+) of (\d+) tiles", out)
assert m and int(m.group(1)) == plan["tile_count"] and int(m.group(2)) == 30, out
seen = set()
for t in plan["tiles"]:
    assert 0.25 <= t["tissue"] <= 1.0
    assert (t["col"], t["row"]) not in seen
    seen.add((t["col"], t["row"]))
    assert t["tx"] == 512 * t["col"] and t["ty"] == 512 * t["row"]
PY

# The default output folder is named after the slide, in the current folder.
(cd "$work" && "$bin" tiles "$data/small.svs" >/dev/null 2>&1)
check "default --out is ./<slide>.tiles" test -f "$work/small.tiles/plan.json"

echo "$failures failed"
test "$failures" -eq 0

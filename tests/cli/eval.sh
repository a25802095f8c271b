#!/bin/bash
# `gastroscreen eval` end to end on slides made here from the real tissue of tests/data: the
# sample slide (label negative), its copy with the bottom quarter defocused (label positive),
# the tiny 16x16 slide (no tissue: unassessable, label negative) and a missing file (label
# positive: failed). The untrained bundle's scores are whatever they are, so the screener
# threshold is set between the two tissue slides' scores from a first run, which makes both
# classes appear. Then eval.json must say what the per-slide rows say, counted by hand here:
# the confusion matrix, sensitivity and specificity, the unassessable and failed counts by
# label, the exact Clopper-Pearson intervals (against scipy's beta quantiles), the AUCs (against
# a direct count) and the curves' PNGs. A second run re-reads the reports (--reports) and must
# give the same figures; bad label files are refused naming the file and line.
# usage: eval.sh GASTROSCREEN SCRATCH
set -u
exe=$1 d=$2/cli-eval
rm -rf "$d" && mkdir -p "$d/slides" || exit 1
fail() { echo "FAIL: $*"; for f in "$d"/*.txt "$d"/out*/screen.log; do [ -f "$f" ] && { echo "--- $f"; cat "$f"; }; done; exit 1; }

cp "$GS_TEST_DATA/CMU-1-Small-Region.svs" "$d/slides/sample.svs" || exit 1
cp "$GS_TEST_DATA/small.svs" "$d/slides/tiny.svs" || exit 1
tools="$(dirname "$0")/../tools"
/usr/bin/python3 "$tools/make_defocused_slide.py" "$GS_TEST_DATA/CMU-1-Small-Region.svs" "$d/slides/soft.tiff" ||
    fail "cannot make the slide"
cat > "$d/slides/labels.csv" <<'CSV'
slide,label,patient,notes,annotation
sample.svs,negative,P1,"a note, with a comma",box.geojson
soft.tiff,positive,P2,,
tiny.svs,negative,P3,,
gone.svs,positive,P4,,
CSV
# The sample's annotation: one loose box over the whole slide (refined to its tissue).
echo '{"type":"Feature","properties":{"classification":{"name":"Tumor"}},"geometry":{"type":"Polygon","coordinates":[[[0,0],[2220,0],[2220,2967],[0,2967],[0,0]]]}}' \
    > "$d/slides/box.geojson"
# --annotations DIR: tiny.svs would take ann/tiny.geojson, but it is unassessable: no Dice.
mkdir -p "$d/ann" && cp "$d/slides/box.geojson" "$d/ann/tiny.geojson"

# First run: the bundle's threshold; read the two tissue slides' scores.
"$exe" eval "$d/slides/labels.csv" --out "$d/out0" > "$d/run0.txt" 2>&1 || fail "first eval exit $?"
t=$(/usr/bin/python3 - "$d/out0/eval.json" <<'PY'
import json, sys
rows = {r["slide"].rsplit("/", 1)[1]: r for r in json.load(open(sys.argv[1]))["slides"]}
a, b = rows["sample.svs"]["score"], rows["soft.tiff"]["score"]
assert a is not None and b is not None and a != b, (a, b)
print("%.6f" % ((a + b) / 2))
PY
) || fail "the tissue slides have no distinct scores"
printf '[screener]\nthreshold = %s\n' "$t" > "$d/lab.conf"
"$exe" eval "$d/slides/labels.csv" --out "$d/out" --config "$d/lab.conf" --bootstrap 200 --seed 7 \
    --annotations "$d/ann" > "$d/run.txt" 2>&1 || fail "eval exit $?"
# Dice by another route: refine's areas of the annotation (the tissue, T) and of the report's
# suspicious regions (P, inside the tissue): Dice = 2 |P| / (|P| + |T|) up to the grids.
sample_regions=$(dirname "$(/usr/bin/python3 -c 'import json,sys; print([r["report"] for r in json.load(open(sys.argv[1]))["slides"] if r["slide"].endswith("sample.svs")][0])' "$d/out/eval.json")")/regions.geojson
/usr/bin/python3 -c 'import json,sys; g=json.load(open(sys.argv[1])); g["features"]=[f for f in g["features"] if f["properties"]["classification"]["name"]=="Suspicious"]; json.dump(g, open(sys.argv[2],"w"))' \
    "$sample_regions" "$d/suspicious.geojson" || fail "cannot read the regions"
"$exe" refine "$d/slides/sample.svs" "$d/slides/box.geojson" --out "$d/t.geojson" > /dev/null 2>&1
"$exe" refine "$d/slides/sample.svs" "$d/suspicious.geojson" --out "$d/p.geojson" > /dev/null 2>&1
cat "$d/run.txt"
for f in eval.json roc.png pr.png dice.png screen.log; do [ -s "$d/out/$f" ] || fail "no $f"; done
"$exe" eval "$d/slides/labels.csv" --out "$d/again" --reports "$d/out/reports" --bootstrap 200 \
    --seed 7 > "$d/run2.txt" 2>&1 || fail "eval --reports exit $?"

/usr/bin/python3 - "$d/out/eval.json" "$d/again/eval.json" "$t" "$d/t.geojson" "$d/p.geojson" <<'PY' || fail "eval.json not as counted"
import json, sys
from scipy.stats import beta
e, again, t = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), float(sys.argv[3])
def area(path):
    return sum(f["properties"]["measurements"]["area_after_px2"]
               for f in json.load(open(path))["features"])
T, P = area(sys.argv[4]), area(sys.argv[5])
rows = {r["slide"].rsplit("/", 1)[1]: r for r in e["slides"]}
assert sorted(rows) == ["gone.svs", "sample.svs", "soft.tiff", "tiny.svs"], rows
assert rows["tiny.svs"]["verdict"] == "unassessable", rows["tiny.svs"]
assert rows["gone.svs"]["verdict"] == "failed" and rows["gone.svs"]["report"] is None
assert abs(e["threshold"] - t) < 1e-6, (e["threshold"], t)
# Counted by hand from the rows.
c = dict(tp=0, fn=0, tn=0, fp=0)
un = dict(positive=0, negative=0)
fa = dict(positive=0, negative=0)
scored = []
for r in e["slides"]:
    if r["verdict"] in ("negative", "positive"):
        called = r["verdict"] == "positive"
        assert called == (r["score"] > t), r
        key = ("tp" if called else "fn") if r["label"] == "positive" else ("fp" if called else "tn")
        c[key] += 1
        scored.append((r["score"], r["label"] == "positive"))
    elif r["verdict"] == "unassessable":
        un[r["label"]] += 1
    else:
        fa[r["label"]] += 1
assert e["confusion"] == c, (e["confusion"], c)
assert c == dict(tp=1, fn=0, tn=1, fp=0), c
assert (e["n_positive"], e["n_negative"]) == (2, 2)
assert e["unassessable"] == dict(total=1, **un) and e["failed"] == dict(total=1, **fa), e
assert e["sensitivity"] == c["tp"] / (c["tp"] + c["fn"])
assert e["specificity"] == c["tn"] / (c["tn"] + c["fp"])
def cp(k, n):
    lo = 0.0 if k == 0 else beta.ppf(0.025, k, n - k + 1)
    hi = 1.0 if k == n else beta.ppf(0.975, k + 1, n - k)
    return lo, hi
for got, k, n in ((e["sensitivity_ci95"], c["tp"], c["tp"] + c["fn"]),
                  (e["specificity_ci95"], c["tn"], c["tn"] + c["fp"])):
    want = cp(k, n)
    assert all(abs(g - w) < 1e-6 for g, w in zip(got, want)), (got, want)
# Referral: the failed positive still goes to a pathologist; the unassessable negative is
# not cleared.
assert e["referral"] == dict(sensitivity=1.0, specificity=0.5), e["referral"]
pos = [s for s, p in scored if p]
neg = [s for s, p in scored if not p]
auc = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))
assert abs(e["roc_auc"] - auc) < 1e-9 and e["pr_auc"] == 1.0, (e["roc_auc"], auc)
last = e["sweep"][-1]
assert abs(last["threshold"] - t) < 1e-6 and last["tp"] == 1 and last["tn"] == 1, last
want = 2 * P / (P + T)
got = rows["sample.svs"]["dice"]
assert abs(got - want) < 0.03, (got, want, P, T)
assert rows["soft.tiff"]["dice"] is None and rows["tiny.svs"]["dice"] is None
assert e["dice"]["slides"] == 1 and e["dice"]["pooled"] == got == e["dice"]["mean"], e["dice"]
print("Dice of the sample: %.4f (by refine's areas %.4f: regions %.0f, tissue %.0f px^2)"
      % (got, want, P, T))
for k in ("confusion", "sensitivity", "specificity", "sensitivity_ci95", "roc_auc", "pr_auc",
          "unassessable", "failed", "roc_auc_ci95"):
    assert again[k] == e[k], (k, again[k], e[k])
print("counted by hand: %s; sensitivity %s %s; specificity %s %s" % (
    c, e["sensitivity"], e["sensitivity_ci95"], e["specificity"], e["specificity_ci95"]))
PY

# Bad label files: refused with the file and the line.
printf 'slide,label,patient\nsample.svs,maybe,P1\n' > "$d/slides/bad.csv"
"$exe" eval "$d/slides/bad.csv" --out "$d/bad" > "$d/bad.txt" 2>&1
[ $? -eq 1 ] && grep -q 'bad.csv:2: label "maybe" is neither positive nor negative' "$d/bad.txt" ||
    fail "a bad label is not refused with file:line"
printf 'slide,patient\nsample.svs,P1\n' > "$d/slides/nolabel.csv"
"$exe" eval "$d/slides/nolabel.csv" --out "$d/bad" > "$d/bad.txt" 2>&1
[ $? -eq 1 ] && grep -q 'nolabel.csv:1: the header needs the columns slide, label and patient' "$d/bad.txt" ||
    fail "a header without label is not refused"
"$exe" eval "$d/slides/labels.csv" > "$d/bad.txt" 2>&1
[ $? -eq 2 ] || fail "eval without --out is not a usage error"
echo PASS

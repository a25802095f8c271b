#!/bin/bash
# `gastroscreen features` on slides made here from real tissue: the sample slide, a partly
# defocused copy, the tiny slide without tissue (unassessable: named, no features, exit 1).
# The matrices must be what the screener saw: the PyTorch screener of the same bundle run on
# each matrix (rows repeated to 64, as the C screener fills them) must give the score the
# slide's report.json gives, and k must be min(64, tiles inferred).
# usage: features.sh GASTROSCREEN SCRATCH BUNDLE
set -u
exe=$1 d=$2/cli-features bundle=$3
rm -rf "$d" && mkdir -p "$d/slides" || exit 1
fail() { echo "FAIL: $*"; cat "$d"/*.txt 2>/dev/null; exit 1; }
cp "$GS_TEST_DATA/CMU-1-Small-Region.svs" "$d/slides/sample.svs" || exit 1
cp "$GS_TEST_DATA/small.svs" "$d/slides/tiny.svs" || exit 1
tools="$(dirname "$0")/../tools"
/usr/bin/python3 "$tools/make_defocused_slide.py" "$GS_TEST_DATA/CMU-1-Small-Region.svs" "$d/slides/soft.tiff" ||
    fail "cannot make the slide"
printf 'slide,label,patient\nsample.svs,positive,P1\nsoft.tiff,negative,P2\ntiny.svs,negative,P3\n' \
    > "$d/slides/labels.csv"
"$exe" features "$d/slides/labels.csv" --out "$d/out" --model "$bundle" > "$d/run.txt" 2>&1
[ $? -eq 1 ] || fail "exit $?, expected 1 (the slide without tissue has no features)"
grep -q "tiny.svs: no features (unassessable: " "$d/run.txt" || fail "the unassessable slide is not named"
GS_BUNDLE=$bundle /usr/bin/python3 - "$d/out" <<'PY' || fail "features are not what the screener saw"
import csv, glob, json, os, sys
sys.path.insert(0, os.path.join(os.environ["GS_SOURCE_DIR"], "model", "pytorch"))
import numpy as np
import torch
import bundle
out = sys.argv[1]
nets, meta = bundle.load_networks(os.environ["GS_BUNDLE"], ["screener"])
rows = list(csv.DictReader(open(os.path.join(out, "features.csv"))))
assert [r["slide"].rsplit("/", 1)[1] for r in rows] == ["sample.svs", "soft.tiff"], rows
reports = {}
for p in glob.glob(os.path.join(out, "reports", "*", "report.json")):
    r = json.load(open(p))
    reports[r["slide"]["id"]] = r
for r in rows:
    m = np.load(os.path.join(out, r["features"]))
    sid = os.path.basename(r["features"])[:-4]
    rep = reports[sid]
    assert m.dtype == np.float32 and m.shape == (int(r["k"]), 512), (m.shape, r)
    assert int(r["k"]) == min(64, rep["tiles"]["inferred"]), (r["k"], rep["tiles"])
    x = torch.from_numpy(np.resize(m, (64, 512))).unsqueeze(0)  # rows repeated to 64
    with torch.no_grad():
        score = torch.sigmoid(nets["screener"](x)["logit"]).item()
    assert abs(score - rep["score"]) < 1e-4, (score, rep["score"], r)
    print("%s: k %s, PyTorch screener %.5f, report %.5f" % (r["slide"], r["k"], score, rep["score"]))
PY
echo PASS

#!/usr/bin/env bash
# gastroscreen infer --json, end to end: the JSON parses and every judgement in it is sane, on
# the build's default bundle (multitask + screener, both untrained: no blur or foreground
# network, so only the classical judgements) and on the seeded bundle with its blur and
# foreground networks marked trained (so the network judgements appear), for a slide tile and
# a batch of PNG tiles. Without --json the text output is what it was.
# Usage: infer_json.sh GASTROSCREEN_BINARY DEFAULT_BUNDLE SEEDED_BUNDLE
set -u
bin=$1
default_bundle=$2
seeded=$3
data=${GS_TEST_DATA:?}
src=${GS_SOURCE_DIR:?}
work=$(mktemp -d "${GS_BUILD_DIR:-/tmp}/cli-infer-json.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
failures=0
check() { # check DESCRIPTION COMMAND...
  if "${@:2}"; then echo "ok   $1"; else echo "FAIL $1"; failures=$((failures + 1)); fi
}
slide="$data/CMU-1-Small-Region.svs"

# The checks every tile's object must pass; argv: JSON file, then key=value expectations.
cat >"$work/check.py" <<'PY'
import json, math, sys
d = json.load(open(sys.argv[1]))
want = dict(a.split("=", 1) for a in sys.argv[2:])
tiles = d if isinstance(d, list) else [d]
assert len(tiles) == int(want.get("tiles", 1)), "tile count"
if "tiles" in want:
    assert isinstance(d, list), "a batch is an array"
for t in tiles:
    mt = t["multitask"]
    assert 0.0 < mt["patch_score"] < 1.0
    assert abs(mt["patch_score"] - 1 / (1 + math.exp(-mt["logit"]))) < 1e-6
    nets = t["networks"]
    assert set(nets) == {"multitask", "foreground", "blur", "screener"}
    for name, n in nets.items():
        assert n["trained"] == (n["present"] and n["provenance"] != "untrained"), name
    assert mt["untrained"] == (not nets["multitask"]["trained"])
    assert mt["provenance"] == nets["multitask"]["provenance"]
    assert 0.0 <= mt["heatmap_mean"] <= 1.0 and 0.0 <= mt["heatmap_fraction_over_half"] <= 1.0
    bc = t["blur"]["classical"]
    assert bc["threshold"] == 60.0
    if bc["verdict"] is not None:
        assert bc["focus"] >= 0 and 0 < bc["measured_fraction"] <= 1
        assert bc["verdict"] == ("blurry" if bc["focus"] < bc["threshold"] else "sharp")
    bn = t["blur"]["network"]
    assert (bn is not None) == nets["blur"]["trained"], "blur network iff trained"
    if bn is not None:
        assert 0.0 <= bn["p_blurred"] <= 1.0 and bn["crop_height"] == bn["crop_width"] == 256
        assert abs(bn["p_blurred"] - 1 / (1 + math.exp(-bn["logit"]))) < 1e-6
        assert bn["verdict"] == ("blurry" if bn["p_blurred"] > bn["threshold"] else "sharp")
        # the sparse-tissue rule (stages/handlers/blur.h): null without the bundle key
        assert 0.0 <= bn["crop_tissue_fraction"] <= 1.0
        sp = bn["sparse_tissue"]
        if "sparse" in want:
            assert sp is not None and sp["below"] == float(want["sparse"]), sp
        elif "trained" in want:
            assert sp is None, "no threshold.blur_sparse_tissue in the seeded bundle"
        cls_blurry = False
        if sp is not None:
            if sp["checked"]:
                assert bn["crop_tissue_fraction"] < sp["below"]
                assert sp["classical_verdict"] == (
                    "blurry" if sp["classical_focus"] < sp["classical_threshold"] else "sharp")
                cls_blurry = sp["classical_verdict"] == "blurry"
            else:
                assert sp["classical_verdict"] is None and sp["classical_focus"] is None
            assert sp["fired"] == (cls_blurry and bn["verdict"] == "sharp")
        assert bn["stage_verdict"] == (
            "blurry" if bn["verdict"] == "blurry" or cls_blurry else "sharp")
    tc = t["tissue"]["classical"]
    assert 0.0 <= tc["fraction"] <= 1.0 and tc["brightfield"] is True
    tn = t["tissue"]["network"]
    assert (tn is not None) == nets["foreground"]["trained"], "tissue network iff trained"
    if tn is not None:
        assert 0.0 <= tn["fraction"] <= 1.0 and 0.0 <= tn["threshold"] <= 1.0
    if "tissue_min" in want:
        assert tc["fraction"] >= float(want["tissue_min"]), tc
    if "tissue_max" in want:
        assert tc["fraction"] <= float(want["tissue_max"]), tc
    if "x" in want:
        assert t["slide"]["x"] == int(want["x"]) and t["slide"]["size"] == 512
        assert t["mpp"] == 0.5 and t["mpp_assumed"] is False
    if "trained" in want:
        assert nets["blur"]["trained"] and nets["foreground"]["trained"]
        assert nets["blur"]["provenance"] == want["trained"]
PY

"$bin" infer --json --model "$default_bundle" "$slide" --x 1000 --y 1000 >"$work/tissue.json" 2>"$work/err"
rc=$?
cat "$work/tissue.json" "$work/err"
check "--json on a tissue tile exits 0" test "$rc" -eq 0
check "the tissue tile's JSON is sane, mostly tissue, classical only" \
  /usr/bin/python3 "$work/check.py" "$work/tissue.json" x=1000 tissue_min=0.5 sparse=0.5
check "the heat map is still written" test -s "$work/heatmap.png"

"$bin" infer --json --model "$default_bundle" "$slide" --x 0 --y 0 >"$work/glass.json" 2>"$work/err"
check "--json on the glass corner exits 0" test "$?" -eq 0
check "the glass corner's JSON is sane and nearly no tissue" \
  /usr/bin/python3 "$work/check.py" "$work/glass.json" x=0 tissue_max=0.1 sparse=0.5

# The seeded bundle with blur and foreground marked trained; two synthetic PNG tiles.
/usr/bin/python3 - "$src/model/pytorch" "$seeded" "$work/trained.safetensors" "$work" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import bundle
import numpy as np
from PIL import Image
tensors, meta = bundle.read_bundle(sys.argv[2])
meta["provenance.blur"] = "test: marked trained"
meta["provenance.foreground"] = "test: marked trained"
bundle.write_bundle(sys.argv[3], tensors, meta)
rng = np.random.default_rng(7)
for i in range(2):
    base = np.array([230, 150, 200], np.uint8) if i == 0 else np.array([250, 248, 250], np.uint8)
    img = np.clip(base + rng.normal(0, 25, (512, 512, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(img).save("%s/tile%d.png" % (sys.argv[4], i))
PY
check "the trained variant of the seeded bundle is written" test -s "$work/trained.safetensors"
"$bin" infer --json --model "$work/trained.safetensors" "$work/tile0.png" "$work/tile1.png" \
  >"$work/batch.json" 2>"$work/err"
rc=$?
cat "$work/batch.json" "$work/err"
check "--json on a batch exits 0" test "$rc" -eq 0
check "the batch is an array of two sane objects with the network judgements" \
  /usr/bin/python3 "$work/check.py" "$work/batch.json" tiles=2 "trained=test: marked trained"

"$bin" infer --model "$default_bundle" "$slide" --x 0 --y 0 >"$work/text" 2>&1
check "without --json the text output is unchanged" \
  bash -c "head -1 '$work/text' | grep -q '^model: ' && grep -q '^tile 0 (.*): patch score ' '$work/text' && ! grep -q '{' '$work/text'"
"$bin" infer --help >"$work/help"
check "the usage names --json" grep -q -- '--json' "$work/help"

echo "$failures failure(s)"
test "$failures" -eq 0

#!/usr/bin/env bash
# gastroscreen calibrate, end to end on the build's default bundle: usage and folder errors
# (missing, empty, only tiles of unusable sizes), a calibration on three 256 x 256 tiles of
# the CMU-1 small region (plus a 50 x 50 PNG it must skip) whose bundle keeps every tensor
# byte for byte and adds one positive int8.amax key per quantised conv and one
# precision.budget key per reduced precision this CPU runs (the verdict agreeing with its
# figures and with what was printed; --check on other tiles), `infer --precision
# int8` running from it (no fallback line, features close to fp32), `infer` without
# --precision following the recorded budgets, the uncalibrated bundle
# falling back with one line naming it, and a re-calibration of the calibrated bundle. Exits
# 77 (skipped) after the calibration checks on a CPU without VNNI.
# Usage: calibrate.sh GASTROSCREEN_BINARY DEFAULT_BUNDLE
set -u
bin=$1
bundle=$2
data=${GS_TEST_DATA:?}
work=$(mktemp -d "${GS_BUILD_DIR:-/tmp}/cli-calibrate.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
failures=0
check() { # check DESCRIPTION COMMAND...
  if "${@:2}"; then echo "ok   $1"; else echo "FAIL $1"; failures=$((failures + 1)); fi
}
runs() { # runs WANT_RC STDOUT STDERR ARGS...: the exit status is WANT_RC
  local want=$1 out=$2 err=$3
  shift 3
  "$bin" "$@" >"$out" 2>"$err"
  local rc=$?
  [ "$rc" -eq "$want" ] || { echo "  exit $rc, expected $want:"; cat "$out" "$err"; return 1; }
}

/usr/bin/python3 - "$data/CMU-1-Small-Region.svs" "$work/tiles" "$work/odd" <<'PY' || exit 1
import os, sys
import openslide
from PIL import Image
slide, tiles, odd = sys.argv[1:]
os.makedirs(tiles)
os.makedirs(odd)
s = openslide.OpenSlide(slide)
for i, (x, y) in enumerate(((700, 900), (200, 300), (1200, 500))):
    s.read_region((x, y), 0, (256, 256)).convert("RGB").save(os.path.join(tiles, "t%d.png" % i))
os.makedirs(tiles + "-check")
for i, (x, y) in enumerate(((900, 1500), (1500, 2000))):
    s.read_region((x, y), 0, (256, 256)).convert("RGB").save(
        os.path.join(tiles + "-check", "c%d.png" % i))
Image.new("RGB", (50, 50), (200, 120, 180)).save(os.path.join(tiles, "z_small.png"))
Image.new("RGB", (50, 50), (200, 120, 180)).save(os.path.join(odd, "small.png"))
PY
mkdir empty
b8="$work/b8.safetensors"

check "no arguments is a usage error (2)" runs 2 o e calibrate
check "no --out is a usage error (2)" runs 2 o e calibrate --model "$bundle" --tiles tiles
check "--max 0 is a usage error (2)" runs 2 o e calibrate --model "$bundle" --tiles tiles --max 0 --out "$b8"
check "a missing folder fails (1)" runs 1 o e calibrate --model "$bundle" --tiles "$work/nope" --out "$b8"
check "  naming the folder" grep -q "$work/nope: cannot open the tiles folder" e
check "an empty folder fails (1)" runs 1 o e calibrate --model "$bundle" --tiles empty --out "$b8"
check "  saying there are no tiles" grep -q "empty: no PNG tiles" e
check "a folder of unusable sizes fails (1)" runs 1 o e calibrate --model "$bundle" --tiles odd --out "$b8"
check "  saying why" grep -q "not a multiple of 32" e
check "a missing bundle fails (1)" runs 1 o e calibrate --model "$work/none.safetensors" --tiles tiles --out "$b8"
check "  and writes nothing" test ! -e "$b8"
check "a missing --check folder fails (1)" runs 1 o e calibrate --model "$bundle" --tiles tiles --check "$work/nope" --out "$b8"
check "  naming the folder" grep -q "$work/nope: cannot open the tiles folder" e
check "  and writes nothing" test ! -e "$b8"
check "a --check folder of unusable sizes fails (1)" runs 1 o e calibrate --model "$bundle" --tiles tiles --check odd --out "$b8"
check "  saying why" grep -q "no check tile with a size that is a multiple of 32" e
check "  and leaves no bundle behind" test ! -e "$b8"

check "calibrate on three tiles" runs 0 o e calibrate --model "$bundle" --tiles tiles --out "$b8"
check "  skips the 50x50 tile" grep -q "z_small.png: 50x50 is not a multiple of 32; skipped" e
check "  reports convs and tiles" grep -Eq "^calibrated [0-9]+ convs on 3 tiles" o
check "  no temporary file left" test ! -e "$b8.tmp"

# Same tensors byte for byte, same metadata plus positive int8.amax keys, one per
# quantised layer: the encoder's convs but the first (base.*, 49) and the decoder's 16
# deformable convs (<ida>.proj_j.conv, <ida>.node_j.conv).
cat >"$work/same.py" <<'PY'
import json, struct, sys
def read(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    return h.pop("__metadata__"), {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]
                                   for k, v in h.items()}, h
ma, ta, ha = read(sys.argv[1])
mb, tb, hb = read(sys.argv[2])
assert ta == tb, "tensor bytes differ"
assert all(ha[k]["shape"] == hb[k]["shape"] and ha[k]["dtype"] == hb[k]["dtype"] for k in ha)
extra = {k: v for k, v in mb.items() if k not in ma and not k.startswith("precision.budget.")}
assert {k: v for k, v in mb.items() if k in ma} == {k: v for k, v in ma.items()
                                                     if not k.startswith(("int8.amax.",
                                                                          "precision.budget."))}
base = [k for k in extra if k.startswith("int8.amax.multitask.base.")]
dcn = [k for k in extra if k.startswith(("int8.amax.multitask.dla_up.",
                                         "int8.amax.multitask.ida_up."))
       and k.endswith(".conv") and (".proj_" in k or ".node_" in k)]
assert len(base) == 49 and len(dcn) == 16 and len(extra) == 65, sorted(extra)[:3]
assert all(float(v) > 0 for v in extra.values())
assert "int8.amax.multitask.base.base_layer.0" not in extra, "the 3-channel conv stays float"
assert "int8.amax.multitask.base.base_layer.3" in extra
print(len(extra), "int8 keys")
PY
check "  same tensors and metadata plus int8.amax keys" /usr/bin/python3 "$work/same.py" "$bundle" "$b8"

# One precision.budget key per reduced precision this CPU runs natively: its verdict is what
# its figures give against the budgets of model/network.h, and it is what was printed.
cat >"$work/budgets.py" <<'PY'
import json, re, struct, sys
path, printed, which = sys.argv[1], open(sys.argv[2]).read(), sys.argv[3]
raw = open(path, "rb").read()
meta = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])["__metadata__"]
keys = sorted(k for k in meta if k.startswith("precision.budget."))
assert set(keys) <= {"precision.budget.bf16", "precision.budget.int8"}, keys
for k in keys:
    p, v = k.rsplit(".", 1)[1], meta[k]
    m = re.fullmatch(r"(met|unmet); worst of (\d+) tiles \((.*)\) against fp32: score (\S+), "
                     r"feature cosine (\S+), segmentation (max \|sigmoid\||Dice) (\S+)", v)
    assert m, v
    score, cos, seg = float(m.group(4)), float(m.group(5)), float(m.group(7))
    assert m.group(3) == which and int(m.group(2)) > 0, v
    if p == "bf16":
        assert m.group(6) == "max |sigmoid|", v
        met = score <= 0.01 and cos >= 0.999 and seg <= 0.02
    else:
        assert m.group(6) == "Dice", v
        met = score <= 0.03 and cos >= 0.99 and seg >= 0.95
    assert m.group(1) == ("met" if met else "unmet"), v
    assert "%s budget %s\n" % (p, v) in printed, (p, v)
    print(k, "=", v)
print(len(keys), "budget keys")
PY
check "  and a precision.budget key per precision run, true to its figures" \
  /usr/bin/python3 "$work/budgets.py" "$b8" o "the calibration tiles"
check "calibrate with --check on other tiles" runs 0 o e calibrate --model "$bundle" --tiles tiles --check tiles-check --out "$work/b8c.safetensors"
check "  measures the budgets on them" /usr/bin/python3 "$work/budgets.py" "$work/b8c.safetensors" o tiles-check

t0="$work/tiles/t0.png"
check "infer --precision fp32 from the calibrated bundle" runs 0 o e infer --model "$b8" --precision fp32 --out fp32 "$t0"
check "infer --precision int8 from the calibrated bundle" runs 0 o e infer --model "$b8" --precision int8 --out int8 "$t0"
if grep -q "no VNNI" e; then
  # A CPU without VNNI never runs int8 (gs_precision_usable falls back): nothing more to see.
  cat e
  echo "SKIP: the rest needs VNNI ($failures failure(s) so far)"
  [ "$failures" -eq 0 ] && exit 77
  exit 1
fi
check "  runs int8" grep -q "^precision: int8" o
# This CPU runs int8, so the calibration must have measured and recorded its budget.
check "  whose budget the calibrated bundle records" /usr/bin/python3 -c '
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
meta = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])["__metadata__"]
assert meta.get("precision.budget.int8", "").split(";")[0] in ("met", "unmet"), meta.keys()
' "$b8"
check "  without a fallback line" bash -c '! grep -q "no int8 calibration" e'
cat >"$work/close.py" <<'PY'
import sys
import numpy as np
a = np.load("fp32/multitask_feature.npy").ravel().astype(np.float64)
b = np.load("int8/multitask_feature.npy").ravel().astype(np.float64)
cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
print("feature cosine int8 vs fp32: %.5f" % cos)
assert cos > 0.95, cos
assert not np.array_equal(a, b), "int8 gave the fp32 features bit for bit: nothing quantised"
PY
check "  features close to fp32, not identical" /usr/bin/python3 "$work/close.py"
# A bundle that records a budget as met runs, without --precision, in the fastest such
# precision this CPU has (int8 here: it has VNNI); one recording none met runs fp32.
cat >"$work/mark.py" <<'PY'
import json, struct, sys
src, dst, bf16, int8 = sys.argv[1:]
raw = open(src, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n])
head["__metadata__"]["precision.budget.bf16"] = bf16
head["__metadata__"]["precision.budget.int8"] = int8
text = json.dumps(head, separators=(",", ":")).encode()
text += b" " * (-(len(text)) % 8)
open(dst, "wb").write(struct.pack("<Q", len(text)) + text + raw[8 + n:])
PY
check "a bundle recording both budgets met" /usr/bin/python3 "$work/mark.py" "$b8" "$work/met.safetensors" "met; test" "met; test"
check "  runs int8 without --precision" runs 0 o e infer --model "$work/met.safetensors" "$t0"
check "  (says so)" grep -q "^precision: int8" o
check "a bundle recording neither met" /usr/bin/python3 "$work/mark.py" "$b8" "$work/unmet.safetensors" "unmet; test" "unmet; test"
check "  runs fp32 without --precision" runs 0 o e infer --model "$work/unmet.safetensors" "$t0"
check "  (says so)" grep -q "^precision: fp32" o

check "int8 on the uncalibrated bundle still runs" runs 0 o e infer --model "$bundle" --precision int8 "$t0"
check "  with one fallback line naming the bundle" \
  bash -c "[ \$(grep -c 'no int8 calibration' e) -eq 1 ] && grep -q '$bundle: precision int8' e"
check "  and prints what ran, not int8" bash -c '! grep -q "^precision: int8" o && grep -Eq "^precision: (bf16|fp32)" o'

# drop.py SRC DST WHAT copies a bundle without some int8.amax keys (the header rewritten in
# place, padded with spaces) and prints them: WHAT = one (the fourth key in sorted order, an
# encoder conv's) or dcn (the 16 deformable convs').
cat >"$work/drop.py" <<'PY'
import json, struct, sys
src, dst, what = sys.argv[1], sys.argv[2], sys.argv[3]
raw = open(src, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n])
meta = head["__metadata__"]
amax = sorted(k for k in meta if k.startswith("int8.amax."))
if what == "one":
    gone = [amax[3]]
else:
    gone = [k for k in amax if k.endswith(".conv") and (".proj_" in k or ".node_" in k)]
    assert len(gone) == 16, gone
for k in gone:
    del meta[k]
text = json.dumps(head, separators=(",", ":")).encode()
assert len(text) <= n
open(dst, "wb").write(raw[:8] + text + b" " * (n - len(text)) + raw[8 + n:])
print(" ".join(gone))
PY

# A calibration missing one range (an edited or truncated file) is no calibration, and the
# fallback line says which range is missing rather than that there is none.
gone=$(/usr/bin/python3 "$work/drop.py" "$b8" "$work/partial.safetensors" one)
check "a bundle missing one int8 range" test -n "$gone" -a -s "$work/partial.safetensors"
check "  still runs" runs 0 o e infer --model "$work/partial.safetensors" --precision int8 "$t0"
check "  with one line naming the missing range" \
  bash -c "[ \$(grep -c 'int8 calibration is incomplete' e) -eq 1 ] && grep -q 'no metadata $gone)' e"
check "  and prints what ran, not int8" bash -c '! grep -q "^precision: int8" o && grep -Eq "^precision: (bf16|fp32)" o'

# A bundle calibrated before the deformable convs had ranges (their 16 keys absent) still
# runs int8, the deformable convs as the rest of the decoder, and says so once.
check "a bundle without the deformable convs' ranges" /usr/bin/python3 "$work/drop.py" "$b8" "$work/nodcn.safetensors" dcn
check "  runs int8" runs 0 o e infer --model "$work/nodcn.safetensors" --precision int8 "$t0"
# Only where the rest of an int8 network runs bf16 (bf16 pays) would they have run int8.
runs 0 o2 e2 infer --model "$b8" --precision bf16 "$t0"
lines=1
if grep -q "will be slower than fp32" e2; then lines=0; fi
check "  with $lines line(s) naming the first deformable conv" \
  bash -c "[ \$(grep -c 'no int8 range for the deformable conv dla_up.ida_0.proj_1.conv' e) -eq $lines ]"
check "  and prints int8" grep -q "^precision: int8" o

check "re-calibrating a calibrated bundle (old keys replaced)" runs 0 o e calibrate --model "$b8" --tiles tiles --max 1 --out "$work/b8b.safetensors"
check "  on one tile" grep -Eq "^calibrated [0-9]+ convs on 1 tiles" o
check "  same tensors again" /usr/bin/python3 "$work/same.py" "$bundle" "$work/b8b.safetensors"

echo "$failures failure(s)"
[ "$failures" -eq 0 ]

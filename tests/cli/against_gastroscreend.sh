#!/usr/bin/env bash
# The client commands against the real coordinator: gastroscreend with a foreground and a
# reporter worker on ipc:// endpoints in a scratch folder. A slide without tissue goes
# submit -> plan -> unassessable -> report -> DONE without any tile work, so the whole loop
# is quick: submit prints its id (and "duplicate" the second time), a path outside the slide
# roots is refused, watch prints its verdict, status shows it done, top --once --json sees the
# coordinator and both workers, and /metrics answers in the Prometheus text format.
# usage: against_gastroscreend.sh GASTROSCREEN GASTROSCREEND FOREGROUND REPORTER BUNDLE
set -u
gs=${1:?} gsd=${2:?} fg=${3:?} rep=${4:?} bundle=${5:?}
py=/usr/bin/python3
slide="$GS_TEST_DATA/small.svs"
for f in "$gs" "$gsd" "$fg" "$rep" "$bundle" "$slide"; do
    [ -e "$f" ] || { echo "SKIP: $f does not exist"; exit 77; }
done

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for l in "$tmp"/*.log; do echo "--- $l"; tail -n 20 "$l"; done; exit 1; }

mkdir -p "$tmp/slides" "$tmp/state"
cp "$slide" "$tmp/slides/small.svs"
port=$($py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$tmp/gs.conf" <<CONF
[coordinator]
intake = ipc://$tmp/intake.sock
submit = ipc://$tmp/submit.sock
query = ipc://$tmp/query.sock
events = ipc://$tmp/events.sock
work = ipc://$tmp/work.sock
journal_dir = $tmp/state/journal
spool_dir = $tmp/state/spool
metrics = 127.0.0.1:$port
[intake]
slide_roots = $tmp/slides
[reporter]
report_dir = $tmp/state/reports
CONF
conf=(--config "$tmp/gs.conf")

"$gsd" "${conf[@]}" --model "$bundle" >"$tmp/gastroscreend.log" 2>&1 &
pids+=($!)
# Ready when the query socket answers (bounded: this is not a timing assertion).
up=0
for _ in $(seq 1 60); do
    if "$gs" status "${conf[@]}" --timeout 1 >/dev/null 2>&1; then up=1; break; fi
    kill -0 "${pids[0]}" 2>/dev/null || fail "gastroscreend exited"
done
[ $up -eq 1 ] || fail "gastroscreend never answered on its query socket"

timeout 300 "$gs" watch "${conf[@]}" --count 1 --timeout 30 >"$tmp/watch.out" 2>"$tmp/watch.log" &
watch_pid=$!
pids+=($watch_pid)
"$fg" "${conf[@]}" --model "$bundle" --instance 1 >"$tmp/foreground.log" 2>&1 &
pids+=($!)
"$rep" "${conf[@]}" --instance 1 >"$tmp/reporter.log" 2>&1 &
pids+=($!)

out=$("$gs" submit "${conf[@]}" /etc/passwd 2>&1)
rc=$?
[ $rc -eq 1 ] || fail "submit outside the roots: exit $rc"
echo "$out" | grep -q "refused: .*outside the slide roots" || fail "no refusal reason: $out"

out=$("$gs" submit "${conf[@]}" "$tmp/slides/small.svs") || fail "submit: exit $?: $out"
id=$(echo "$out" | sed -n 's/^\([0-9a-f]\{16\}\) accepted .*small.svs$/\1/p')
[ -n "$id" ] || fail "submit printed: $out"
out=$("$gs" submit "${conf[@]}" "$tmp/slides/small.svs") || fail "second submit: exit $?"
echo "$out" | grep -q "^$id duplicate " || fail "second submit printed: $out"

wait "$watch_pid" || fail "watch exited $?: $(cat "$tmp/watch.log")"
grep -q "^$id unassessable .*small.svs (no tissue" "$tmp/watch.out" ||
    fail "watch printed: $(cat "$tmp/watch.out")"
grep -q "model: untrained — not a diagnosis" "$tmp/watch.out" || fail "no untrained notice"
[ "$(wc -l <"$tmp/watch.out")" -eq 1 ] || fail "watch printed more than one line"

out=$("$gs" status "${conf[@]}" "$id") || fail "status: exit $?"
echo "$out" | grep -q "^$id  done .*unassessable" || fail "status printed: $out"
# No tissue: the plan ran (classical: the default bundle's foreground network is untrained),
# the blur check never did.
echo "$out" | grep -q "^methods: tissue plan classical, blur check -$" || fail "status printed: $out"
echo "$out" | grep -q "^precision:" && fail "a precision for a slide without inferred tiles: $out"
out=$("$gs" status "${conf[@]}" --json "$id") || fail "status --json: exit $?"
echo "$out" | $py -c '
import json, sys
v = json.load(sys.stdin)[0]["verdict"]
m = v["methods"]
assert m == {"foreground": "classical", "blur": None}, m
assert v["precision"] is None, v  # no tile inferred: no precision ran' || fail "status --json printed: $out"
"$gs" status "${conf[@]}" 0123456789abcdef >/dev/null 2>&1 && fail "unknown slide: exit 0"

"$gs" top "${conf[@]}" --once --json >"$tmp/top.json" || fail "top: exit $?"
$py - "$tmp/top.json" <<'PY' || fail "top --once --json: $(cat "$tmp/top.json")"
import json, sys
t = json.load(open(sys.argv[1]))
stages = {s["stage"]: s for s in t["stages"]}
assert t["coordinator"]["instances"] == 1, t["coordinator"]
assert stages["foreground"]["instances"] == 1 and stages["reporter"]["instances"] == 1, stages
assert stages["foreground"]["processed"] >= 1, stages["foreground"]
assert t["last_seq"] >= 3, t
PY

$py - "$port" <<'PY' || fail "/metrics"
import sys, urllib.request, urllib.error
base = "http://127.0.0.1:%s" % sys.argv[1]
r = urllib.request.urlopen(base + "/metrics")
assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
text = r.read().decode()
samples = [l for l in text.splitlines() if l and not l.startswith("#")]
assert samples and all(l.startswith("gastroscreen_") for l in samples), text[:500]
assert any("unassessable" in l and not l.endswith(" 0") for l in samples), text
# Histograms: cumulative buckets ending in +Inf equal to _count; one slide duration per verdict.
import re
def series(name):
    out = {}
    for l in samples:
        m = re.match(r'^' + name + r'_(bucket|count|sum)(\{[^}]*\})? (\S+)$', l)
        if m:
            labels = m.group(2) or ""
            le = re.search(r'le="([^"]*)"', labels)
            key = re.sub(r',?le="[^"]*"', "", labels)
            key = "" if key == "{}" else key
            s = out.setdefault(key, {"buckets": []})
            if m.group(1) == "bucket":
                s["buckets"].append((le.group(1), float(m.group(3))))
            else:
                s[m.group(1)] = float(m.group(3))
    return out
for name in ("gastroscreen_slide_duration_seconds", "gastroscreen_tile_round_trip_seconds"):
    assert "# TYPE %s histogram" % name in text, name
    ss = series(name)
    assert ss, name
    for key, s in ss.items():
        counts = [c for _, c in s["buckets"]]
        assert counts == sorted(counts), (name, key, s)
        assert s["buckets"][-1][0] == "+Inf" and s["buckets"][-1][1] == s["count"], (name, key, s)
verdicts = sum(float(l.split()[-1]) for l in samples if l.startswith("gastroscreen_verdicts_total"))
slide = series("gastroscreen_slide_duration_seconds")[""]
assert verdicts == 1 and slide["count"] == verdicts, (verdicts, slide)
assert set(series("gastroscreen_tile_round_trip_seconds")) == {'{stage="blur"}', '{stage="infer"}'}
try:
    urllib.request.urlopen(base + "/nothing")
    raise SystemExit("no 404")
except urllib.error.HTTPError as e:
    assert e.code == 404
PY
echo "ok: submit, duplicate, refusal, watch, status, top, /metrics against gastroscreend"

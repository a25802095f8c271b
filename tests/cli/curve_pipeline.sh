#!/usr/bin/env bash
# The whole service over CURVE on loopback tcp, with keys made by `gastroscreen keygen`:
# gastroscreend and the six stage workers of one node (one key, listed with every role) screen
# the sample slide to its verdict, submitted and watched by a listed client; no connection is
# refused on the way. An extra infer worker whose key is listed for blur only is refused with
# the reason and exits non-zero.
# usage: curve_pipeline.sh BUILD_DIR TEST_DATA
set -u
build=${1:?} data=${2:?}
gs=$build/daemon/gastroscreen gsd=$build/daemon/gastroscreend
bundle=$build/model/default.safetensors
py=/usr/bin/python3
for f in "$gs" "$gsd" "$bundle" "$data/CMU-1-Small-Region.svs"; do
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
fail() { echo "FAIL: $*"; for l in "$tmp"/logs/*.log; do echo "--- $l"; tail -n 15 "$l"; done; exit 1; }

keys=$tmp/keys
mkdir -p "$keys"/{workers,clients,announcers} "$tmp/slides" "$tmp/logs"
"$gs" keygen coordinator --out "$keys" >/dev/null 2>&1 || fail "keygen coordinator"
"$gs" keygen node --out "$tmp/node" --roles "tiler foreground blur infer screener reporter" \
    >/dev/null 2>&1 || fail "keygen node"
"$gs" keygen blurnode --out "$tmp/blurnode" --roles blur >/dev/null 2>&1 || fail "keygen blurnode"
"$gs" keygen alice --out "$tmp/alice" >/dev/null 2>&1 || fail "keygen alice"
cp "$tmp/node/node.pub" "$tmp/blurnode/blurnode.pub" "$keys/workers/"
cp "$tmp/alice/alice.pub" "$keys/clients/"
cp "$data/CMU-1-Small-Region.svs" "$tmp/slides/s.svs"

read -r p1 p2 p3 p4 p5 pm < <($py -c '
import socket
ss = [socket.socket() for _ in range(6)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
cat >"$tmp/gs.conf" <<CONF
[coordinator]
intake = tcp://127.0.0.1:$p1
submit = tcp://127.0.0.1:$p2
query = tcp://127.0.0.1:$p3
events = tcp://127.0.0.1:$p4
work = tcp://127.0.0.1:$p5
journal_dir = $tmp/journal
spool_dir = $tmp/spool
metrics = 127.0.0.1:$pm
[intake]
slide_roots = $tmp/slides
[model]
bundle = $bundle
[infer]
threads = 1
[reporter]
report_dir = $tmp/reports
[security]
keys_dir = $keys
worker_key = $tmp/node/node.key
client_key = $tmp/alice/alice.key
CONF
metrics() { $py -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$pm/metrics').read().decode())" 2>/dev/null; }
welcomed() { metrics | grep -c '^gastroscreen_workers{stage="[a-z]*"} [1-9]'; }

"$gsd" --config "$tmp/gs.conf" >"$tmp/logs/gastroscreend.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do
    grep -q "coordinator ready" "$tmp/logs/gastroscreend.log" && break
    kill -0 "${pids[0]}" 2>/dev/null || fail "gastroscreend exited"
    sleep 0.1
done
grep -q "CURVE on tcp sockets" "$tmp/logs/gastroscreend.log" || fail "gastroscreend is not on CURVE"
for s in tiler foreground blur infer screener reporter; do
    extra=()
    [ "$s" = blur ] || [ "$s" = infer ] &&
        extra=(--tile-inbox "tcp://127.0.0.1:*" --advertise-host 127.0.0.1)
    "$build/stages/gastroscreen-$s" --config "$tmp/gs.conf" "${extra[@]}" >"$tmp/logs/$s.log" 2>&1 &
    pids+=($!)
done
# Every stage welcomed (7 gauges >= 1: the six stages and the coordinator itself).
for _ in $(seq 1 1200); do
    [ "$(welcomed)" -ge 7 ] && break
    sleep 0.1
done
[ "$(welcomed)" -ge 7 ] || fail "not every worker was welcomed: $(metrics | grep '^gastroscreen_workers')"

# A key listed for blur cannot be welcomed as infer.
"$build/stages/gastroscreen-infer" --config "$tmp/gs.conf" --key "$tmp/blurnode/blurnode.key" \
    --instance 9 --tile-inbox "tcp://127.0.0.1:*" >"$tmp/logs/infer-9.log" 2>&1 &
bad=$!
pids+=($bad)
for _ in $(seq 1 1200); do kill -0 $bad 2>/dev/null || break; sleep 0.1; done
kill -0 $bad 2>/dev/null && fail "the blur-only key's infer worker is still running"
wait $bad && fail "the blur-only key's infer worker exited 0"
grep -q "not listed for this stage" "$tmp/logs/infer-9.log" || fail "no reason in the refused worker's log"

out=$(timeout 300 "$gs" submit --config "$tmp/gs.conf" "$tmp/slides/s.svs" 2>&1) || fail "submit: $out"
verdict=$(timeout 300 "$gs" watch --config "$tmp/gs.conf" --since 0 --count 1 --timeout 300 2>&1) ||
    fail "watch: $verdict"
echo "$verdict" | grep -Eq " (negative|positive|unassessable) " || fail "no verdict: $verdict"
m=$(metrics)
echo "$m" | grep '^gastroscreen_auth_refused_total' | grep -v ' 0$' && fail "connections were refused"
echo "$m" | grep -q '^gastroscreen_tiles_total{kind="recorded"} [1-9]' || fail "no tile recorded"
echo "PASS: $verdict"

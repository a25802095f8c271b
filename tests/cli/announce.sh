#!/usr/bin/env bash
# `gastroscreen announce` against the real coordinator (ipc:// endpoints in a scratch folder,
# no workers: the acknowledgement comes at intake): a slide under the roots is accepted and the
# id printed is the one `gastroscreen status` shows; announcing it again says duplicate with
# the same id; a path outside the roots is not acknowledged (timeout message naming the
# causes, exit 1); a missing file is named and exits 1; usage errors exit 2; a coordinator
# whose intake_connect names an announcer's bound PUB takes its slide (--bind); --connect and
# --endpoint intake= override the config; under CURVE an announcer key listed in announcers/ is
# taken and an unlisted one is not.
# usage: announce.sh GASTROSCREEN GASTROSCREEND BUNDLE
set -u
gs=$(realpath "${1:?}") gsd=${2:?} bundle=${3:?}
slide="${GS_TEST_DATA:-}/small.svs"
for f in "$gs" "$gsd" "$bundle" "$slide"; do
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

mkdir -p "$tmp/slides" "$tmp/state" "$tmp/outside"
cp "$slide" "$tmp/slides/small.svs"
cp "$slide" "$tmp/slides/second.svs"
cp "$slide" "$tmp/outside/small.svs"
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$tmp/gs.conf" <<CONF
[coordinator]
intake = ipc://$tmp/intake.sock
intake_connect = ipc://$tmp/scanner.sock
submit = ipc://$tmp/submit.sock
query = ipc://$tmp/query.sock
events = ipc://$tmp/events.sock
work = ipc://$tmp/work.sock
journal_dir = $tmp/state/journal
spool_dir = $tmp/state/spool
metrics = 127.0.0.1:$port
[intake]
slide_roots = $tmp/slides
[security]
keys_dir = $tmp/nokeys
CONF
conf=(--config "$tmp/gs.conf")
# The same, but an intake nobody binds: --connect or --endpoint intake= must win over it.
sed "s|^intake = .*|intake = ipc://$tmp/nowhere.sock|" "$tmp/gs.conf" >"$tmp/elsewhere.conf"
elsewhere=(--config "$tmp/elsewhere.conf")

# Usage errors come before any socket: exit 2 whether or not a coordinator runs.
"$gs" announce >/dev/null 2>&1
[ $? -eq 2 ] || fail "announce without a path did not exit 2"
"$gs" announce "${conf[@]}" --frobnicate "$tmp/slides/small.svs" >/dev/null 2>&1
[ $? -eq 2 ] || fail "unknown option did not exit 2"
out=$("$gs" announce "${conf[@]}" --external-id A1 "$tmp/slides/small.svs" \
    "$tmp/slides/second.svs" 2>&1)
rc=$?
[ $rc -eq 2 ] || fail "--external-id with two paths: exit $rc"
echo "$out" | grep -q "external-id names one slide" || fail "no message for --external-id: $out"
"$gs" announce "${conf[@]}" --connect ipc://x --bind ipc://y "$tmp/slides/small.svs" >/dev/null 2>&1
[ $? -eq 2 ] || fail "--connect with --bind did not exit 2"
"$gs" announce "${conf[@]}" --timeout >/dev/null 2>&1
[ $? -eq 2 ] || fail "--timeout without a value did not exit 2"
"$gs" announce --help | grep -q "usage: gastroscreen announce" || fail "--help"
"$gs" --help 2>&1 | grep -q "announce PATH" || fail "announce is not in gastroscreen's usage"

"$gsd" "${conf[@]}" --model "$bundle" >"$tmp/gastroscreend.log" 2>&1 &
pids+=($!)
up=0
for _ in $(seq 1 60); do
    if "$gs" status "${conf[@]}" --timeout 1 >/dev/null 2>&1; then up=1; break; fi
    kill -0 "${pids[0]}" 2>/dev/null || fail "gastroscreend exited"
done
[ $up -eq 1 ] || fail "gastroscreend never answered on its query socket"

# Accepted: the id printed is the coordinator's (status knows it, with this path).
out=$("$gs" announce "${conf[@]}" --external-id ACC-1 --announcer scanner-7 \
    "$tmp/slides/small.svs" 2>"$tmp/announce1.log") || fail "announce: exit $?: $out"
id=$(echo "$out" | sed -n "s|^$tmp/slides/small.svs: accepted as \([0-9a-f]\{16\}\)$|\1|p")
[ -n "$id" ] || fail "announce printed: $out"
st=$("$gs" status "${conf[@]}" "$id" 2>&1) || fail "status $id: exit $?: $st"
echo "$st" | grep -q "small.svs" || fail "status $id does not name the slide: $st"
"$gs" status "${conf[@]}" 2>&1 | grep -q "$id" || fail "status does not list $id"

# Again (a relative path, resolved): a duplicate of the same slide.
out=$(cd "$tmp/slides" && "$gs" announce "${elsewhere[@]}" --connect "ipc://$tmp/intake.sock" \
    small.svs 2>"$tmp/announce2.log") ||
    fail "second announce: exit $?: $out"
[ "$out" = "$tmp/slides/small.svs: duplicate of $id" ] || fail "second announce printed: $out"

# Outside the slide roots: the coordinator acknowledges nothing (it logs the refusal).
out=$("$gs" announce "${conf[@]}" --timeout 3 "$tmp/outside/small.svs" 2>&1)
rc=$?
[ $rc -eq 1 ] || fail "announce outside the roots: exit $rc: $out"
echo "$out" | grep -q "$tmp/outside/small.svs: no acknowledgement within 3 s (is gastroscreend running, is this path under its slide_roots, is this key listed in keys/announcers/?)" ||
    fail "no timeout message: $out"
grep -q "announcement from .* refused: .*outside" "$tmp/gastroscreend.log" ||
    fail "the coordinator did not log the refusal"

# A missing file is named; the other path of the same call is still announced.
out=$("$gs" announce "${elsewhere[@]}" --endpoint "intake=ipc://$tmp/intake.sock" \
    "$tmp/slides/missing.svs" "$tmp/slides/second.svs" 2>&1)
rc=$?
[ $rc -eq 1 ] || fail "missing file: exit $rc: $out"
echo "$out" | grep -q "$tmp/slides/missing.svs: cannot resolve the path" ||
    fail "missing file not named: $out"
echo "$out" | grep -q "^$tmp/slides/second.svs: accepted as [0-9a-f]\{16\}$" ||
    fail "the second path was not announced: $out"

# --bind: the coordinator connects its intake to the announcer's PUB (intake_connect).
cp "$slide" "$tmp/slides/bound.svs"
out=$("$gs" announce "${conf[@]}" --bind "ipc://$tmp/scanner.sock" "$tmp/slides/bound.svs" 2>&1) ||
    fail "announce --bind: exit $?: $out"
echo "$out" | grep -q "^$tmp/slides/bound.svs: accepted as [0-9a-f]\{16\}$" ||
    fail "announce --bind printed: $out"

# No coordinator: the timeout names the causes.
kill -TERM "${pids[0]}"
wait "${pids[0]}" 2>/dev/null
pids=()
out=$("$gs" announce "${conf[@]}" --timeout 2 "$tmp/slides/small.svs" 2>&1)
rc=$?
[ $rc -eq 1 ] || fail "announce without a coordinator: exit $rc: $out"
echo "$out" | grep -q "no acknowledgement within 2 s (is gastroscreend running" ||
    fail "no timeout message without a coordinator: $out"

# CURVE on loopback tcp: the announcement goes out with the announcer key (listed in
# announcers/), the acknowledgement is read with the client key (listed in clients/).
keys=$tmp/keys
mkdir -p "$keys/clients" "$keys/workers" "$keys/announcers"
"$gs" keygen coordinator --out "$keys" >/dev/null 2>&1 || fail "keygen coordinator"
for who in alice scanner rogue; do
    "$gs" keygen "$who" --out "$tmp/$who" >/dev/null 2>&1 || fail "keygen $who"
done
cp "$tmp/alice/alice.pub" "$keys/clients/"
cp "$tmp/scanner/scanner.pub" "$keys/announcers/"
read -r p1 p2 p3 p4 p5 pm < <(/usr/bin/python3 -c '
import socket
ss = [socket.socket() for _ in range(6)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
cat >"$tmp/curve.conf" <<CONF
[coordinator]
intake = tcp://127.0.0.1:$p1
submit = tcp://127.0.0.1:$p2
query = tcp://127.0.0.1:$p3
events = tcp://127.0.0.1:$p4
work = tcp://127.0.0.1:$p5
journal_dir = $tmp/state/curve-journal
spool_dir = $tmp/state/curve-spool
metrics = 127.0.0.1:$pm
[intake]
slide_roots = $tmp/slides
[security]
keys_dir = $keys
client_key = $tmp/alice/alice.key
CONF
curve=(--config "$tmp/curve.conf")
"$gsd" "${curve[@]}" --model "$bundle" >"$tmp/curve-gastroscreend.log" 2>&1 &
pids+=($!)
up=0
for _ in $(seq 1 60); do
    if "$gs" status "${curve[@]}" --timeout 1 >/dev/null 2>&1; then up=1; break; fi
    kill -0 "${pids[0]}" 2>/dev/null || fail "gastroscreend (CURVE) exited"
done
[ $up -eq 1 ] || fail "gastroscreend (CURVE) never answered alice"
out=$("$gs" announce "${curve[@]}" --key "$tmp/scanner/scanner.key" "$tmp/slides/small.svs" \
    2>"$tmp/announce-curve.log") || fail "announce with CURVE: exit $?: $out"
echo "$out" | grep -q "^$tmp/slides/small.svs: accepted as [0-9a-f]\{16\}$" ||
    fail "announce with CURVE printed: $out"
out=$("$gs" announce "${curve[@]}" --key "$tmp/rogue/rogue.key" --timeout 3 \
    "$tmp/slides/second.svs" 2>&1)
rc=$?
[ $rc -eq 1 ] || fail "unlisted announcer key: exit $rc: $out"
echo "$out" | grep -q "second.svs: no acknowledgement within 3 s" ||
    fail "unlisted announcer key: $out"
# -F: a Z85 key may hold [, ( or . and must match as written, not as a regex.
grep -qF "refused a connection on the intake socket from 127.0.0.1, key $(sed -n "s/^public = //p" "$tmp/rogue/rogue.pub" | head -c 8)" \
    "$tmp/curve-gastroscreend.log" || fail "the coordinator did not refuse the rogue key"
echo "PASS"

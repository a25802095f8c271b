#!/usr/bin/env bash
# gastroscreend with CURVE on loopback tcp, as a lab sets it up (README, Running the service):
# `gastroscreen keygen` makes the coordinator's and the clients' keys; a listed client's
# `status` is answered, an unlisted one's is not (and the refusal is on /metrics); after the
# key is listed, SIGHUP lets it in without a restart. Without keys a non-loopback endpoint
# refuses to start naming the key file; a secret key others can read is refused; security =
# off starts with a warning.
# usage: curve_gastroscreend.sh GASTROSCREEN GASTROSCREEND BUNDLE
set -u
gs=${1:?} gsd=${2:?} bundle=${3:?}
py=/usr/bin/python3
for f in "$gs" "$gsd" "$bundle"; do
    [ -e "$f" ] || { echo "SKIP: $f does not exist"; exit 77; }
done

tmp=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for l in "$tmp"/*.log; do echo "--- $l"; tail -n 20 "$l"; done; exit 1; }

keys=$tmp/keys
mkdir -p "$tmp/slides" "$keys/clients" "$keys/workers" "$keys/announcers"
"$gs" keygen coordinator --out "$keys" >"$tmp/coordinator.pubkey" 2>"$tmp/keygen.log" ||
    fail "keygen coordinator"
[ "$(stat -c %a "$keys/coordinator.key")" = 600 ] || fail "secret key is not 0600"
"$gs" keygen alice --out "$tmp/alice" >/dev/null 2>&1 || fail "keygen alice"
"$gs" keygen bob --out "$tmp/bob" >/dev/null 2>&1 || fail "keygen bob"
cp "$tmp/alice/alice.pub" "$keys/clients/"

read -r p1 p2 p3 p4 p5 pm < <($py -c '
import socket
ss = [socket.socket() for _ in range(6)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
endpoints() {
    cat <<CONF
[coordinator]
intake = tcp://$1:$p1
submit = tcp://$1:$p2
query = tcp://$1:$p3
events = tcp://$1:$p4
work = tcp://$1:$p5
journal_dir = $tmp/journal
spool_dir = $tmp/spool
metrics = 127.0.0.1:$pm
[intake]
slide_roots = $tmp/slides
CONF
}
{ endpoints 127.0.0.1; printf '[security]\nkeys_dir = %s\n' "$keys"; } >"$tmp/gsd.conf"
for who in alice bob; do
    { endpoints 127.0.0.1
      printf '[security]\nkeys_dir = %s\nclient_key = %s/%s/%s.key\n' "$keys" "$tmp" "$who" "$who"
    } >"$tmp/$who.conf"
done

"$gsd" --config "$tmp/gsd.conf" --model "$bundle" >"$tmp/gastroscreend.log" 2>&1 &
pid=$!
up=0
for _ in $(seq 1 60); do
    if "$gs" status --config "$tmp/alice.conf" --timeout 1 >/dev/null 2>&1; then up=1; break; fi
    kill -0 "$pid" 2>/dev/null || fail "gastroscreend exited"
done
[ $up -eq 1 ] || fail "alice's status never answered"
grep -q "CURVE on tcp sockets" "$tmp/gastroscreend.log" || fail "no CURVE in the ready line"

out=$("$gs" status --config "$tmp/bob.conf" --timeout 2 2>&1) && fail "unlisted bob was answered: $out"
echo "$out" | grep -q "clients/" || fail "bob's error does not point at the keys folder: $out"
metrics=$($py -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$pm/metrics').read().decode())")
echo "$metrics" | grep -Eq '^gastroscreen_auth_refused_total\{endpoint="query"\} [1-9]' ||
    fail "no query refusal on /metrics: $(echo "$metrics" | grep auth_refused)"
grep -qF "refused a connection on the query socket from 127.0.0.1, key $(sed -n "s/^public = //p" "$tmp/bob/bob.pub" | head -c 8)" \
    "$tmp/gastroscreend.log" || fail "the refusal was not logged"

# List bob and reload: answered without a restart.
cp "$tmp/bob/bob.pub" "$keys/clients/"
kill -HUP "$pid"
for _ in $(seq 1 100); do
    grep -q "keys reloaded" "$tmp/gastroscreend.log" && break
    sleep 0.1
done
grep -q "keys reloaded" "$tmp/gastroscreend.log" || fail "no reload after SIGHUP"
"$gs" status --config "$tmp/gsd.conf" --key "$tmp/bob/bob.key" \
    --coordinator-key "$keys/coordinator.pub" --timeout 5 >/dev/null 2>&1 ||
    fail "bob (--key) not answered after the reload"
kill -0 "$pid" 2>/dev/null || fail "gastroscreend did not survive SIGHUP"
kill -TERM "$pid"
wait "$pid" || fail "gastroscreend exit status $? after SIGTERM"
pid=

# Off the host without keys: refuses to start, naming the endpoint and the file.
{ endpoints 0.0.0.0; printf '[security]\nkeys_dir = %s/nokeys\n' "$tmp"; } >"$tmp/open.conf"
"$gsd" --config "$tmp/open.conf" --model "$bundle" >"$tmp/open.log" 2>&1 && fail "started without keys"
grep -q "tcp://0.0.0.0:$p5 is not a loopback" "$tmp/open.log" || fail "no endpoint in the error"
grep -q "nokeys/coordinator.key" "$tmp/open.log" || fail "no key file in the error"

# A secret key the group can read is refused, even on loopback.
chmod 640 "$keys/coordinator.key"
"$gsd" --config "$tmp/gsd.conf" --model "$bundle" >"$tmp/mode.log" 2>&1 && fail "started with a 0640 secret"
grep -q "readable by group or others" "$tmp/mode.log" || fail "no mode error"
chmod 600 "$keys/coordinator.key"

# security = off: plain, and a warning at the start.
{ endpoints 127.0.0.1; printf '[security]\nsecurity = off\n'; } >"$tmp/off.conf"
"$gsd" --config "$tmp/off.conf" --model "$bundle" >"$tmp/off.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    grep -q "coordinator ready" "$tmp/off.log" && break
    kill -0 "$pid" 2>/dev/null || fail "gastroscreend (off) exited"
    sleep 0.1
done
grep -q "security = off" "$tmp/off.log" || fail "no warning with security = off"
echo "PASS"

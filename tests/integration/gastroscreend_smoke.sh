#!/bin/sh
# gastroscreend end to end without workers: starts on loopback ports chosen by the system,
# reports readiness (after binding and loading the model), stops with exit 0 on SIGTERM.
# usage: gastroscreend_smoke.sh GASTROSCREEND BUNDLE SCRATCH_DIR
set -u
exe=$1 bundle=$2 d=$3/gastroscreend-smoke
rm -rf "$d" && mkdir -p "$d/slides" || exit 1
cat > "$d/c.conf" <<CONF
[coordinator]
intake = tcp://127.0.0.1:*
submit = tcp://127.0.0.1:*
query = tcp://127.0.0.1:*
events = tcp://127.0.0.1:*
work = tcp://127.0.0.1:*
journal_dir = $d/journal
spool_dir = $d/spool
metrics =
[intake]
slide_roots = $d/slides
[model]
bundle = $bundle
CONF
"$exe" --config "$d/c.conf" > "$d/log" 2>&1 &
pid=$!
i=0
# Waiting for a log line, not timing anything: the bound is only a safety net.
while ! grep -q "coordinator ready" "$d/log"; do
    if ! kill -0 $pid 2>/dev/null; then echo "gastroscreend exited early:"; cat "$d/log"; exit 1; fi
    i=$((i + 1))
    if [ $i -gt 1200 ]; then echo "no readiness line:"; cat "$d/log"; kill -9 $pid; exit 1; fi
    sleep 0.1
done
kill -TERM $pid
wait $pid
rc=$?
cat "$d/log"
[ $rc -eq 0 ] || { echo "exit status $rc after SIGTERM"; exit 1; }
grep -q "model: untrained" "$d/log" || { echo "no untrained notice"; exit 1; }
[ -d "$d/journal" ] || { echo "no journal folder"; exit 1; }

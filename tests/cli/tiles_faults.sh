#!/usr/bin/env bash
# gastroscreen tiles on bad input: a clear message naming the file, a non-zero exit, no crash.
# Usage: tiles_faults.sh GASTROSCREEN_BINARY
set -u
bin=$1
data=${GS_TEST_DATA:?}
shared=${GS_SHARED_DATA:-}
work=$(mktemp -d "${GS_BUILD_DIR:-/tmp}/cli-faults.XXXXXX")
trap 'rm -rf "$work"' EXIT
failures=0
expect() { # expect DESCRIPTION STATUS STDERR_PATTERN ARGS...
  local desc=$1 want=$2 pattern=$3
  shift 3
  "$bin" "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  if [ "$rc" -eq "$want" ] && grep -q -- "$pattern" "$work/err"; then
    echo "ok   $desc"
  else
    echo "FAIL $desc (exit $rc, stderr: $(head -c 300 "$work/err"))"
    failures=$((failures + 1))
  fi
}

expect "not a slide" 1 "gastroscreen tiles: $data/corrupt/broken.svs: " tiles "$data/corrupt/broken.svs" --out "$work/a"
expect "unsupported TIFF compression" 1 "unopenable.tiff: .*Unsupported TIFF compression: 52479" tiles "$data/corrupt/unopenable.tiff" --out "$work/b"
expect "bad JPEG data" 1 "unreadable.svs: .*Bogus marker length" tiles "$data/corrupt/unreadable.svs" --out "$work/c"
expect "missing file" 1 "$work/nope.svs: " tiles "$work/nope.svs"
expect "output folder that cannot be made" 1 "cannot create folder" tiles "$data/small.svs" --out /proc/gastroscreen-test
expect "bad option value" 2 "--min-tissue: 'lots' is not a number" tiles "$data/small.svs" --min-tissue lots
expect "no slide" 2 "usage: gastroscreen tiles" tiles
expect "unknown command" 2 "unknown command 'frobnicate'" frobnicate
if [ -n "$shared" ] && [ -d "$shared" ]; then
  "$bin" tiles "$shared/wsi/slideio-tutorial/test3-DAPI-2-387.ndpi" --out "$work/ndpi" >"$work/out" 2>&1
  if [ $? -eq 0 ] && grep -q "not-brightfield" "$work/out"; then echo "ok   fluorescence slide reported as such"; else echo "FAIL fluorescence slide"; failures=$((failures + 1)); fi
else
  echo "SKIP fluorescence slide: shared data folder absent"
fi
echo "$failures failed"
test "$failures" -eq 0

#!/bin/sh
# Load benchmark (not a ctest): bursts of N small real slides (default 100, then 500) against
# gastroscreend with separate stage processes on loopback; checks exactly N verdicts, none
# duplicated, and prints each process's peak memory (VmHWM) per N. See tests/bench/load.py.
#
# usage: tests/bench/load.sh [BUILD_DIR] [load.py options...]
#   BUILD_DIR defaults to build/release. The model is the build's default bundle unless
#   --bundle is given; the slide is tests/data/small.svs unless --slide is given.
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$src/build/release}
[ $# -gt 0 ] && shift
case " $* " in
*" --bundle "*) ;;
*) set -- --bundle "$build/model/default.safetensors" "$@" ;;
esac
exec /usr/bin/python3 "$src/tests/bench/load.py" --build "$build" \
    --scratch "${GS_BENCH_SCRATCH:-/tmp/gastroscreen-load-bench}" "$@"

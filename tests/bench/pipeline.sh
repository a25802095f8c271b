#!/bin/sh
# Pipeline benchmark (not a ctest): the service as separate processes on loopback vs the bare
# multi-task network in one process, side by side; prints medians, the ratio and each
# process's peak memory. See tests/bench/pipeline.py for what is measured.
#
# usage: tests/bench/pipeline.sh [BUILD_DIR] [pipeline.py options...]
#   BUILD_DIR defaults to build/release (gastroscreend, gastroscreen and the six stage
#   executables must be built). A seeded bundle is made in the scratch folder with
#   model/pytorch/make_bundle.py unless --bundle is given.
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$src/build/release}
[ $# -gt 0 ] && shift
scratch=${GS_BENCH_SCRATCH:-/tmp/gastroscreen-pipeline-bench}
mkdir -p "$scratch.bundle"
bundle=$scratch.bundle/seed1.safetensors
case " $* " in
*" --bundle "*) ;;
*)
    [ -f "$bundle" ] || /usr/bin/python3 "$src/model/pytorch/make_bundle.py" --seed 1 \
        --created 2026-01-01T00:00:00Z --out "$bundle"
    set -- --bundle "$bundle" "$@"
    ;;
esac
exec /usr/bin/python3 "$src/tests/bench/pipeline.py" --build "$build" \
    --slide "$src/tests/data/CMU-1-Small-Region.svs" --scratch "$scratch" "$@"

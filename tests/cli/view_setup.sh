#!/bin/bash
# Fixture of the viewer tests (view_http.py, tests/web/view_browser.py): the sample slide
# screened by the embedded `gastroscreen screen` into DIR/out.
# usage: view_setup.sh GASTROSCREEN DIR
set -u
exe=$1 d=$2
rm -rf "$d" && mkdir -p "$d" || exit 1
if ! "$exe" screen "$GS_TEST_DATA/CMU-1-Small-Region.svs" --out "$d/out" > "$d/screen.txt" 2>&1; then
    echo "FAIL: screen exit $?"
    cat "$d/screen.txt"
    exit 1
fi
n=$(ls "$d"/out/*/report.json 2>/dev/null | wc -l)
[ "$n" = 1 ] || { echo "FAIL: $n reports"; exit 1; }
echo "screened: $(cat "$d/screen.txt" | head -1)"

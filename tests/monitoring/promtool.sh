#!/bin/sh
# The monitoring files through promtool (Debian package prometheus):
#   promtool.sh check-rules RULES      promtool check rules
#   promtool.sh test-rules TESTS       promtool test rules (run from the tests' folder)
#   promtool.sh check-config CONFIG    promtool check config (and the rule files it names)
#   promtool.sh check-metrics SCRAPE   promtool check metrics on a saved /metrics scrape
#                                      (tests/monitoring/scrape.py); any finding fails
# Exit 0: pass; 1: fail; 77: skipped because promtool is not installed.
set -u
mode=$1 file=$2
if ! command -v promtool >/dev/null 2>&1; then
    echo "SKIP: promtool not found (install the Debian package prometheus, listed in .ci/packages.txt)"
    exit 77
fi
case $mode in
check-rules) promtool check rules "$file" ;;
test-rules) cd "$(dirname "$file")" && promtool test rules "$(basename "$file")" ;;
check-config) promtool check config "$file" ;;
check-metrics)
    # promtool prints one line per problem and exits non-zero for lint problems; a clean
    # exposition prints nothing. Both are required, so a version that only warns still fails.
    out=$(promtool check metrics < "$file" 2>&1)
    rc=$?
    echo "$out"
    [ $rc -eq 0 ] && [ -z "$out" ] || { echo "FAIL: promtool check metrics found problems"; exit 1; }
    echo "promtool check metrics: no problems in $(grep -c '^# TYPE' "$file") families"
    ;;
*) echo "unknown mode $mode"; exit 2 ;;
esac

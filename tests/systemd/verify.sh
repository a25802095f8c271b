#!/usr/bin/env bash
# Checks the systemd units of systemd/ the way CI must, so no unit that systemd rejects or warns
# about is shipped:
#   - systemd-analyze verify on every unit (templates through instance 1) must print NOTHING
#     and exit 0: an unknown key is only a warning with exit status 0, so any output fails;
#   - verify requires ExecStart= binaries to exist, so each unit is staged in a temporary folder
#     with ExecStart= rewritten to the binary of the same name in the build tree. A unit whose
#     binary is not built (yet) is skipped with the reason printed; if every unit is skipped
#     the test reports "skipped" (exit 77);
#   - systemd-analyze security --offline: the exposure score of each service is printed and
#     must not exceed GS_SECURITY_MAX (default 2.5 of 10);
#   - sysusers.d and tmpfiles.d files are applied to a temporary root and must create the user
#     and the folders, without a warning;
#   - a copy with a misspelt key must be reported, so this check cannot pass vacuously;
#   - every Documentation=file: path that a unit names is installed by `cmake --install`
#     (installed into a scratch prefix /usr mapped under DESTDIR).
# usage: verify.sh SOURCE_DIR BUILD_DIR
set -u
src=${1:?source dir}
build=${2:?build dir}
units="$src/systemd"
max_score=${GS_SECURITY_MAX:-2.5}

if ! command -v systemd-analyze >/dev/null; then
    echo "SKIP: systemd-analyze is not installed"
    exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/units"
failed=0
verified=0
skipped=0

# The binary called NAME in the build tree (the first executable file of that name).
built_binary() {
    find "$build" -maxdepth 4 -type f -name "$1" -perm -u+x 2>/dev/null | sort | head -n 1
}

# Stage the units. Targets have no ExecStart and are always staged.
staged=()
for unit in "$units"/*.service "$units"/*.target; do
    name=$(basename "$unit")
    exec_path=$(sed -n 's|^ExecStart=\([^ ]*\).*|\1|p' "$unit" | head -n 1)
    if [ -z "$exec_path" ]; then
        cp "$unit" "$tmp/units/$name"
    else
        bin=$(built_binary "$(basename "$exec_path")")
        if [ -z "$bin" ]; then
            echo "SKIP $name: $(basename "$exec_path") is not built in $build (yet)"
            skipped=$((skipped + 1))
            continue
        fi
        sed "s|^ExecStart=$exec_path|ExecStart=$bin|" "$unit" >"$tmp/units/$name"
    fi
    staged+=("$name")
done

cd "$tmp/units" || exit 1
for name in "${staged[@]}"; do
    arg=$name
    case $name in *@.service) arg="${name%@.service}@1.service" ;; esac
    out=$(systemd-analyze verify --man=no "./$arg" 2>&1)
    rc=$?
    if [ $rc -ne 0 ] || [ -n "$out" ]; then
        echo "FAIL verify $arg (exit $rc):"
        echo "$out"
        failed=1
    else
        echo "ok   verify $arg"
        verified=$((verified + 1))
    fi
    case $name in *.service) ;; *) continue ;; esac
    out=$(systemd-analyze security --offline=true "./$name" 2>&1)
    score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    if [ -z "$score" ]; then
        echo "FAIL security $name: no score in:"
        echo "$out"
        failed=1
    elif awk -v s="$score" -v m="$max_score" 'BEGIN { exit !(s > m) }'; then
        echo "FAIL security $name: exposure $score > $max_score"
        printf '%s\n' "$out" | grep '✗'
        failed=1
    else
        echo "ok   security $name: exposure $score"
    fi
done

# The check must be able to fail: a misspelt key is reported.
sed 's/^Description=/Descripton=/' "$units/gastroscreen.target" >"$tmp/units/gs-selftest.target"
out=$(systemd-analyze verify --man=no ./gs-selftest.target 2>&1)
if [ -z "$out" ]; then
    echo "FAIL: verify printed nothing for a unit with an unknown key; the check is blind"
    failed=1
fi
rm -f "$tmp/units/gs-selftest.target"

# Documentation= paths: what `cmake --install` puts under DESTDIR with the prefix /usr.
if [ -f "$build/cmake_install.cmake" ]; then
    dest="$tmp/install"
    if ! out=$(DESTDIR="$dest" cmake --install "$build" --prefix /usr 2>&1); then
        echo "FAIL cmake --install into $dest:"
        echo "$out"
        failed=1
    else
        for doc in $(sed -n 's|^Documentation=file:||p' "$units"/*.service "$units"/*.target | sort -u); do
            if [ -f "$dest$doc" ]; then
                echo "ok   Documentation=file:$doc is installed"
            else
                echo "FAIL Documentation=file:$doc is not installed by cmake --install"
                failed=1
            fi
        done
    fi
fi

# sysusers.d and tmpfiles.d into a scratch root.
root="$tmp/root"
mkdir -p "$root/etc"
out=$(systemd-sysusers --root="$root" "$units/sysusers.d/gastroscreen.conf" 2>&1 | grep -v '^Creating ')
if [ -n "$out" ] || ! grep -q '^gastroscreen:' "$root/etc/passwd"; then
    echo "FAIL sysusers.d/gastroscreen.conf:"
    echo "$out"
    failed=1
else
    echo "ok   sysusers.d/gastroscreen.conf: $(grep '^gastroscreen:' "$root/etc/passwd")"
    if [ "$(id -u)" -ne 0 ]; then
        echo "SKIP tmpfiles.d/gastroscreen.conf: creating folders owned by another user needs root"
    else
        out=$(systemd-tmpfiles --root="$root" --create "$units/tmpfiles.d/gastroscreen.conf" 2>&1)
        rc=$?
        uid=$(sed -n 's/^gastroscreen:x:\([0-9]*\):.*/\1/p' "$root/etc/passwd")
        bad=0
        for d in /run/gastroscreen /var/lib/gastroscreen/journal /var/lib/gastroscreen/spool \
            /var/lib/gastroscreen/reports; do
            if [ ! -d "$root$d" ] || [ "$(stat -c %u "$root$d")" != "$uid" ]; then
                echo "FAIL tmpfiles.d: $d missing or not owned by uid $uid"
                bad=1
            fi
        done
        if [ $rc -ne 0 ] || [ -n "$out" ] || [ $bad -ne 0 ]; then
            echo "FAIL tmpfiles.d/gastroscreen.conf (exit $rc):"
            echo "$out"
            failed=1
        else
            echo "ok   tmpfiles.d/gastroscreen.conf"
        fi
    fi
fi

echo "units verified: $verified, skipped: $skipped"
if [ $failed -ne 0 ]; then
    exit 1
fi
if [ $verified -eq 0 ]; then
    echo "SKIP: no unit could be verified (no binary built yet)"
    exit 77
fi
exit 0

#!/usr/bin/env bash
# `make test`: the suite on the normal build (gcc), then on an
# AddressSanitizer + UndefinedBehaviorSanitizer build (clang when present).
# The sanitizer build runs in the background during the first suite.
# Last line: "N passed, N failed".
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=$(nproc 2>/dev/null || echo 2)
pass=0 fail=0 log=$(mktemp) suite_log=$(mktemp)
trap 'rm -f "$log" "$suite_log"' EXIT

suite() {
    local build=$1; shift
    if ! make --no-print-directory -j"$jobs" BUILD="$build" "$@" tests >"$log" 2>&1; then
        cat "$log"; echo "build of $build failed"
        fail=$((fail + 1)); return
    fi
    # The suite's lines go straight to stdout as they come; its last line
    # (the SUITE total) is read back from a copy.
    local out
    bash tests/run-suite.sh "$build" | tee "$suite_log"
    out=$(tail -n 1 "$suite_log")
    set -- $out
    pass=$((pass + $4)); fail=$((fail + $6))
}

sancc=cc
command -v clang >/dev/null 2>&1 && sancc=clang
if ! make --no-print-directory -j"$jobs" BUILD=build tests >"$log" 2>&1; then
    cat "$log"; echo "build of build failed"
    fail=$((fail + 1))
fi
# The sanitizer build compiles (at low priority) while the first suite
# runs: the suite leaves most of a second core idle.
asan_log=$(mktemp)
trap 'rm -f "$log" "$suite_log" "$asan_log"' EXIT
nice -n 10 make --no-print-directory -j"$jobs" BUILD=build/asan SAN=1 CC=$sancc tests \
    >"$asan_log" 2>&1 &
asan_build=$!
suite build
if ! wait "$asan_build"; then
    cat "$asan_log"; echo "build of build/asan failed"
    fail=$((fail + 1))
fi
suite build/asan SAN=1 CC=$sancc
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

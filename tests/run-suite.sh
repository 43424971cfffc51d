#!/usr/bin/env bash
# Runs every test of one build: tests/test_*.c binaries, tests/*_test.sh and
# tests/*_test.py. Each prints "# passed N failed M" as its last summary line;
# a test that exits non-zero without one counts as one failure.
# Prints "SUITE <build> passed X failed Y" at the end.
set -u
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export ST_BUILD="$root/$build"
export ST_BIN="$root/$build/safetensors"
export ST_ROOT="$root"
export ST_CONFORMANCE="${ST_CONFORMANCE:-$root/../shared/conformance}"
export PYTHON="${PYTHON:-/usr/bin/python3}"
case "$build" in *asan*) export ST_SAN=1 ;; *) export ST_SAN=0 ;; esac
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
total_pass=0 total_fail=0

run_one() {
    local name=$1; shift
    local out="$tmp/out" rc
    local start=$SECONDS
    "$@" >"$out" 2>"$tmp/err"
    rc=$?
    local line p f
    line=$(grep -E '^# passed [0-9]+ failed [0-9]+$' "$out" | tail -n 1)
    if [ -n "$line" ]; then
        p=$(echo "$line" | awk '{print $3}'); f=$(echo "$line" | awk '{print $5}')
    else
        p=0; f=0
    fi
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=$((f + 1)); fi
    total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
    printf '%-40s %6d passed %4d failed  (%ds)\n' "$name" "$p" "$f" $((SECONDS - start))
    if [ "$f" -ne 0 ]; then
        echo "---- $name (exit $rc) stdout tail:"; tail -n 20 "$out"
        echo "---- $name stderr tail:"; tail -n 40 "$tmp/err"
    fi
}

for t in "$build"/tests/test_*; do
    [ -x "$t" ] || continue
    case "$t" in *.d) continue ;; esac
    run_one "$(basename "$t")" "$t"
done
for t in tests/*_test.sh; do
    [ -f "$t" ] || continue
    run_one "$(basename "$t")" bash "$t"
done
for t in tests/*_test.py; do
    [ -f "$t" ] || continue
    run_one "$(basename "$t")" "$PYTHON" "$t"
done
echo "SUITE $build passed $total_pass failed $total_fail"

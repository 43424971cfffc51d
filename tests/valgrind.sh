#!/usr/bin/env bash
# Every C test binary of a build under valgrind (memcheck): invalid reads or
# writes, uses of uninitialised values and leaks (definite and possible)
# fail a test. Not part of `make test` (it takes minutes); run it with
#   make valgrind          or      bash tests/valgrind.sh [BUILD] [TEST...]
# Verdicts come from valgrind's log of each process, not --error-exitcode:
# that would also change the exit status of the tests' forked children,
# which the tests check. Forked children are checked for memory errors. Programs run by exec (the CLI) are not
# followed. test_hostile runs at the ASan scale (ST_SAN=1: 10x smaller
# inputs, no RSS bounds), which valgrind needs to finish in reasonable time.
# Last line: "# passed N failed M", one per test binary.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${1:-build}
shift || true
if ! command -v valgrind >/dev/null 2>&1; then
    echo "valgrind not installed (apt-get install valgrind)"
    echo "# passed 0 failed 1"
    exit 1
fi
make --no-print-directory -j"$(nproc 2>/dev/null || echo 2)" BUILD="$build" tests >/dev/null || {
    echo "build failed"; echo "# passed 0 failed 1"; exit 1; }
export ST_BUILD="$root/$build" ST_BIN="$root/$build/safetensors" ST_ROOT="$root"
export ST_CONFORMANCE="${ST_CONFORMANCE:-$root/../shared/conformance}"
export PYTHON="${PYTHON:-/usr/bin/python3}" ST_SAN=0
logdir="$build/valgrind"
mkdir -p "$logdir"
tests=("$@")
if [ ${#tests[@]} -eq 0 ]; then
    for t in "$build"/tests/test_*; do
        case "$t" in *.d) continue ;; esac
        [ -x "$t" ] && tests+=("$(basename "$t")")
    done
fi
pass=0 fail=0
for name in "${tests[@]}"; do
    t="$build/tests/$name"
    log="$logdir/$name.log"
    extra=()
    [ "$name" = test_hostile ] && extra=(env ST_SAN=1)
    rm -f "$logdir/$name".*.vg
    start=$SECONDS
    "${extra[@]}" valgrind --leak-check=full --errors-for-leak-kinds=definite,possible \
        --show-leak-kinds=definite,possible --track-origins=yes --child-silent-after-fork=no \
        --log-file="$logdir/$name.%p.vg" "$t" >"$log" 2>&1 &
    main=$!
    wait "$main"
    rc=$?
    # The test's own process: any error or leak. Forked children end with
    # _exit() while the parent's buffers are still allocated in their copy
    # (reported as leaks that are not), so for them only memory errors count.
    bad=$(grep -lE 'ERROR SUMMARY: [1-9]|definitely lost: [1-9]|possibly lost: [1-9]' "$logdir/$name.$main.vg" 2>/dev/null)
    for f in "$logdir/$name".*.vg; do
        [ "$f" = "$logdir/$name.$main.vg" ] && continue
        grep -qE '(Invalid (read|write|free)|Conditional jump|uninitialised|Syscall param|Mismatched free|overlap)' "$f" 2>/dev/null &&
            bad="$bad $f"
    done
    line=$(grep -E '^# passed [0-9]+ failed [0-9]+$' "$log" | tail -n 1)
    if [ "$rc" -eq 0 ] && [ -z "$bad" ]; then
        pass=$((pass + 1))
        printf '%-24s ok      (%ds, %s)\n' "$name" $((SECONDS - start)) "$line"
    else
        fail=$((fail + 1))
        printf '%-24s FAILED  (exit %d, %ds, %s)\n' "$name" "$rc" $((SECONDS - start)) "$line"
        for f in $bad; do
            echo "---- $f"
            grep -E '^==[0-9]+== (Invalid|Conditional|Use of|Syscall|[0-9,]+ bytes in|   (at|by) )' "$f" | head -n 30
        done
    fi
done
echo "# passed $pass failed $fail"
[ "$fail" -eq 0 ]

# Sourced by shell tests: pass/fail counters, `check DESCRIPTION COMMAND...`
# (a pass when COMMAND succeeds, else a failure printed with DESCRIPTION),
# and `finish`, which prints the "# passed N failed M" line the suite reads
# and returns non-zero after any failure.
pass=0 fail=0
check() {
    local what=$1
    shift
    if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $what"; fi
}
finish() {
    echo "# passed $pass failed $fail"
    [ "$fail" -eq 0 ]
}

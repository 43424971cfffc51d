#!/usr/bin/env bash
# Every libFuzzer target (fuzz/fuzz_*.c, ASan + UBSan) for ST_FUZZ_SECONDS
# seconds each (default 20; the CLI parsers fuzz_glob, fuzz_jsonval and
# fuzz_merge ask for 60 with a fuzz-min-seconds line; two at a time, keep `make test`
# near 10 minutes; `make fuzz` runs them longer), through fuzz/run.sh: one pass per target that
# ran its time without a crash. Runs once per `make test`: in the normal
# suite only (skipped when ST_SAN=1; the targets carry their own sanitizers).
# Targets run side by side, one per CPU, so the wall time is about
# ceil(targets / CPUs) x ST_FUZZ_SECONDS plus the build.
# A crash leaves its input in build/fuzz/crashes/ (see fuzz/run.sh).
set -u
root=${ST_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"
if [ "${ST_SAN:-0}" = 1 ]; then
    echo "skipped in the sanitizer suite (runs once, in the normal one)"
    echo "# passed 0 failed 0"
    exit 0
fi
exec bash fuzz/run.sh "${ST_FUZZ_SECONDS:-20}"

#!/usr/bin/env bash
# `make bench`: the core benchmarks, then every other bench/*.sh.
#   bash bench/run.sh [BUILD]        (BUILD defaults to build)
#
# Inputs are generated under BUILD/bench (never committed) and the whole
# output also goes to BUILD/bench/results.txt.
#   1. st_open + st_close on headers of 1k, 10k, 100k and 1M tensors, header
#      MB/s, linearity in header size, st_find of every name.
#   2. Reading all tensor data of a 2 GiB file (real bytes) through the mapping
#      and through st_tensor_read, against `cat FILE > /dev/null`.
#   3. bench/*.sh other than this one, each run from the top folder as
#      `bash SCRIPT BUILD` (BUILD as given here) with ST_BUILD, ST_BIN,
#      ST_ROOT (absolute paths) and BENCH_DIR (BUILD/bench) in the environment.
#
# Environment:
#   BENCH_KEEP=1       keep the 2 GiB data file for the next run (it is reused
#                      when identical); by default it is deleted once read
#   BENCH_DATA_MIB=N   size of the data file (default 2048, a multiple of 8)
#   BENCH_REF_OPEN_MS  the reference crate's time to open the 100k-tensor
#                      header on this machine (default 120, the issue's figure)
set -u
build=${1:-build}
build_arg=$build # passed on as given: other scripts may expect it relative
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
case "$build" in /*) ;; *) build="$root/$build" ;; esac
out="$build/bench"
bin="$out/bin"
mkdir -p "$bin"
results="$out/results.txt"
data_mib=${BENCH_DATA_MIB:-2048}
ref_ms=${BENCH_REF_OPEN_MS:-120}
data="$out/data-${data_mib}m.safetensors"

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if [ "${BENCH_KEEP:-0}" != 1 ]; then rm -f "$data" "$data.tmp"; fi
}
trap cleanup EXIT

# The bench programs are built here rather than by the Makefile: they are
# not part of `make all`, and only `make bench` needs them.
build_progs() {
    local cc=${CC:-cc}
    local flags="-std=c11 -O2 -g -D_GNU_SOURCE -Iinclude -Wall -Wextra -Werror -Wshadow
                 -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith -Wformat=2 -Wvla"
    local p
    for p in gen_header gen_data; do
        # shellcheck disable=SC2086
        $cc $flags -o "$bin/$p" "bench/$p.c" || return 1
    done
    for p in bench_open bench_read; do
        # shellcheck disable=SC2086
        $cc $flags -pthread -o "$bin/$p" "bench/$p.c" "$build/libsafetensors.a" \
            -lcrypto -lz -lpthread -lm || return 1
    done
}

# Median seconds of `cat FILE > /dev/null`: hyperfine when installed (no
# shell, output to /dev/null), else 5 timed runs after a warm-up.
cat_seconds() {
    local f=$1 json
    if command -v hyperfine >/dev/null 2>&1 && command -v jq >/dev/null 2>&1; then
        json=$(mktemp)
        if hyperfine -N --style none --warmup 2 --runs 7 --output null \
            --export-json "$json" "cat $f" >/dev/null 2>&1; then
            jq -r '.results[0].median' "$json"
            rm -f "$json"
            return 0
        fi
        rm -f "$json"
    fi
    local t0 t1 times=()
    cat "$f" >/dev/null
    for _ in 1 2 3 4 5; do
        t0=$(date +%s%N); cat "$f" >/dev/null; t1=$(date +%s%N)
        times+=($((t1 - t0)))
    done
    printf '%s\n' "${times[@]}" | sort -n | sed -n 3p | awk '{printf "%.6f\n", $1 / 1e9}'
}

loadavg() {
    [ -r /proc/loadavg ] && echo "(load average $(cut -d' ' -f1-3 /proc/loadavg))"
    return 0
}

core() {
    local rc=0 f
    echo "== safetensors-c benchmarks: $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -sr)," \
         "$(nproc) CPUs, ${CC:-cc}, build $build"
    grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: /== CPU: /'
    # Figures from a loaded machine are not comparable: say how loaded it was.
    loadavg
    echo
    echo "-- generating header inputs"
    "$bin/gen_header" "$out/open-1k.safetensors" 1000 || return 1
    "$bin/gen_header" "$out/open-10k.safetensors" 10000 || return 1
    "$bin/gen_header" "$out/open-100k.safetensors" 100000 || return 1
    # Shorter names, so the header of a million tensors stays under the cap.
    "$bin/gen_header" "$out/open-1m.safetensors" 1000000 short || return 1
    for f in "$out"/open-*.safetensors; do cat "$f" >/dev/null; done
    echo
    loadavg
    "$bin/bench_open" -r "$ref_ms" "$out/open-1k.safetensors" "$out/open-10k.safetensors" \
        "$out/open-100k.safetensors" "$out/open-1m.safetensors" || rc=1
    echo

    echo "-- data file (${data_mib} MiB of F32)"
    "$bin/gen_data" "$data" "$data_mib" || return 1
    cat "$data" >/dev/null # warm the page cache
    local sec size gbps
    sec=$(cat_seconds "$data")
    size=$(stat -c %s "$data")
    gbps=$(awk -v s="$size" -v t="$sec" 'BEGIN { printf "%.3f", s / t / 1e9 }')
    echo "cat FILE > /dev/null: median $(awk -v t="$sec" 'BEGIN { printf "%.1f", t * 1e3 }') ms," \
         "$gbps GB/s (page-cache limit)"
    echo
    loadavg
    "$bin/bench_read" -c "$gbps" "$data" || rc=1
    cleanup # before the other benches add their own big files
    return $rc
}

others() {
    local s rc=0
    export ST_BUILD="$build" ST_BIN="$build/safetensors" ST_ROOT="$root" BENCH_DIR="$out"
    for s in bench/*.sh; do
        [ "$s" = bench/run.sh ] && continue
        [ -f "$s" ] || continue
        echo
        echo "-- $s"
        bash "$s" "$build_arg" || { echo "$s failed"; rc=1; }
    done
    return $rc
}

if ! build_progs; then
    echo "bench: building the bench programs failed" >&2
    exit 1
fi
start=$SECONDS
{
    core; rc_core=$?
    others; rc_others=$?
    echo
    echo "== done in $((SECONDS - start)) s; results in $results"
    [ "$rc_core" -eq 0 ] && [ "$rc_others" -eq 0 ]
} 2>&1 | tee "$results"
exit "${PIPESTATUS[0]}"

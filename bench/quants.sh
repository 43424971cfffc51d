#!/usr/bin/env bash
# GGUF quantization throughput (called by bench/run.sh as
# `bash bench/quants.sh BUILD`; also runnable alone after `make`):
# MB/s of F32 input per type, portable path and best path on 1 thread, all
# threads, and ggml's quantize_row_<type>_ref side by side when
# GGML_REF_SO names ggml's src/ggml-quants.c compiled as a shared library
# (gcc -O2 -shared -fPIC, with stubs for the few ggml.c functions it
# references), built outside this repository.
# Environment: QUANTS_BENCH_MIB (default 16), QUANTS_BENCH_RUNS (default 5),
# GGML_REF_SO, BENCH_DIR scratch directory.
set -u
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
case "$build" in /*) ;; *) build="$root/$build" ;; esac
dir=${BENCH_DIR:-$build/bench}
mkdir -p "$dir/bin"
cc=${CC:-cc}
# shellcheck disable=SC2086
$cc -std=c11 -O2 -g -D_GNU_SOURCE -Iinclude -Ilib -Wall -Wextra -Werror -Wshadow \
    -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith -Wformat=2 -Wvla -pthread \
    -o "$dir/bin/bench_quants" bench/bench_quants.c "$build/libsafetensors.a" \
    -lcrypto -lz -lpthread -lm -ldl || exit 1
echo "== GGUF quantization, $(nproc) CPUs (load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null))"
# shellcheck disable=SC2086
"$dir/bin/bench_quants" "${QUANTS_BENCH_MIB:-16}" "${QUANTS_BENCH_RUNS:-5}" ${GGML_REF_SO:-}

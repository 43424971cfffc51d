#!/usr/bin/env bash
# Builds every libFuzzer target fuzz/fuzz_*.c (clang, ASan + UBSan) into
# build/fuzz/ and runs each for SECONDS seconds.
#
#   bash fuzz/run.sh [SECONDS] [TARGET...]        (make fuzz FUZZ_SECONDS=...)
#
# Environment:
#   ST_CONFORMANCE   the shared corpus (seeds come from $ST_CONFORMANCE/files,
#                    copied at run time, never committed)
#   FUZZ_JOBS        targets run side by side (default: number of CPUs)
#   FUZZ_BUILD       build directory (default build/fuzz)
#   FUZZ_CC          compiler (default clang)
#   PYTHON           runs fuzz/seeds.py (default /usr/bin/python3, with torch)
#
# Corpora grow in $FUZZ_BUILD/corpus/TARGET across runs; a crash leaves its
# input in $FUZZ_BUILD/crashes/. Prints one line per target (executions,
# result), then "# passed N failed M" (a pass is a target that ran its time
# without a crash). Exits non-zero if any target crashed or did not build.
# A target whose "fuzz-requires:" files are absent is skipped (not counted).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
seconds=${1:-20}
shift || true
out=${FUZZ_BUILD:-build/fuzz}
cc=${FUZZ_CC:-clang}
jobs=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}
conf=${ST_CONFORMANCE:-$root/../shared/conformance}

if ! command -v "$cc" >/dev/null 2>&1; then
    echo "fuzz: $cc not found (apt-get install clang libclang-rt-14-dev)"
    echo "# passed 0 failed 1"
    exit 1
fi

# Every target: fuzz/fuzz_NAME.c. Optional TARGET arguments pick some.
targets=()
if [ $# -gt 0 ]; then
    targets=("$@")
else
    for f in fuzz/fuzz_*.c; do
        t=$(basename "$f" .c)
        targets+=("$t")
    done
fi

# -max_len per target: the header target needs room for the largest seeds
# (220 KB); targets that derive structures from bytes need little.
max_len_of() {
    case "$1" in
    fuzz_header) echo 262144 ;;
    fuzz_ckpt | fuzz_pickle | fuzz_zip) echo 65536 ;;
    *) echo 8192 ;;
    esac
}

warn="-Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith -Wformat=2 -Wvla"
san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
cflags="-std=c11 -g -O1 -pthread -Iinclude -Ilib -Ifuzz -D_GNU_SOURCE $warn $san"
libs="-lcrypto -lz -llapacke -lopenblas -lpthread -lm"
mkdir -p "$out/obj" "$out/crashes" "$out/logs"

# The library, instrumented for coverage, once for all targets.
build_lib() {
    local objs=() src obj
    for src in lib/*/*.c; do
        obj="$out/obj/$(basename "$(dirname "$src")")_$(basename "$src" .c).o"
        if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find lib include -newer "$obj" -name '*.h' 2>/dev/null | head -n 1)" ]; then
            "$cc" $cflags -fsanitize=fuzzer-no-link -c "$src" -o "$obj" || return 1
        fi
        objs+=("$obj")
    done
    rm -f "$out/libst_fuzz.a"
    ar rcs "$out/libst_fuzz.a" "${objs[@]}"
}

if ! build_lib; then
    echo "fuzz: library build failed"
    echo "# passed 0 failed 1"
    exit 1
fi

pass=0 fail=0 total_execs=0

# Seeds: the conformance files, plus what fuzz/seeds.py generates for the
# target (pickles and torch.save checkpoints for the checkpoint targets),
# at run time.
seed() {
    local t=$1 dir=$2
    mkdir -p "$dir"
    if [ -d "$conf/files" ]; then
        cp -n "$conf"/files/*.safetensors "$dir"/ 2>/dev/null
    fi
    "${PYTHON:-/usr/bin/python3}" fuzz/seeds.py "$t" "$dir" >/dev/null 2>&1 || true
}

# A target whose "fuzz-requires:" line names files that are not here (a
# branch not merged yet) is skipped: neither passed nor failed.
missing_of() {
    local f
    for f in $(sed -n 's/^.*fuzz-requires: *//p' "fuzz/$1.c" | head -n 1); do
        [ -e "$f" ] || { echo "$f"; return; }
    done
}

# Seconds for a target: SECONDS, or more when its source asks for a floor
# with a "fuzz-min-seconds: N" line (the CLI's own parsers get 60 s in
# `make test` while the others share the time budget).
seconds_of() {
    local floor
    floor=$(sed -n 's/^.*fuzz-min-seconds: *\([0-9][0-9]*\).*$/\1/p' "fuzz/$1.c" | head -n 1)
    if [ -n "$floor" ] && [ "$floor" -gt "$seconds" ]; then echo "$floor"; else echo "$seconds"; fi
}

run_target() {
    local t=$1 bin="$out/$1" corpus="$out/corpus/$1" log="$out/logs/$1.log"
    if ! "$cc" $cflags -fsanitize=fuzzer "fuzz/$t.c" "$out/libst_fuzz.a" $libs -o "$bin" \
        >"$log" 2>&1; then
        echo "BUILD-FAIL"
        return
    fi
    seed "$t" "$corpus"
    ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$bin" -max_total_time="$(seconds_of "$t")" -rss_limit_mb=2048 -malloc_limit_mb=2048 \
        -timeout=20 -max_len="$(max_len_of "$t")" -print_final_stats=1 \
        -artifact_prefix="$out/crashes/$t-" "$corpus" >>"$log" 2>&1
    echo "rc=$?"
}

# Targets run FUZZ_JOBS at a time; results are collected in order.
declare -A rcs
i=0
skipped=()
for t in "${targets[@]}"; do
    [ -f "fuzz/$t.c" ] || { echo "fuzz: no fuzz/$t.c"; fail=$((fail + 1)); continue; }
    m=$(missing_of "$t")
    if [ -n "$m" ]; then
        skipped+=("$t")
        rm -f "$out/logs/$t.rc"
        printf '%-18s skipped (needs %s)\n' "$t" "$m"
        continue
    fi
    (run_target "$t" >"$out/logs/$t.rc") &
    i=$((i + 1))
    if [ $((i % jobs)) -eq 0 ]; then wait; fi
done
wait

for t in "${targets[@]}"; do
    [ -f "$out/logs/$t.rc" ] || continue
    case " ${skipped[*]} " in *" $t "*) continue ;; esac
    res=$(cat "$out/logs/$t.rc")
    log="$out/logs/$t.log"
    execs=$(grep -E '^stat::number_of_executed_units:' "$log" | tail -n 1 | awk '{print $2}')
    execs=${execs:-0}
    total_execs=$((total_execs + execs))
    if [ "$res" = "rc=0" ]; then
        pass=$((pass + 1))
        printf '%-18s %12s execs  %5ss  ok\n' "$t" "$execs" "$(seconds_of "$t")"
    else
        fail=$((fail + 1))
        printf '%-18s %12s execs  %5ss  FAILED (%s)\n' "$t" "$execs" "$(seconds_of "$t")" "$res"
        grep -E 'ERROR|FUZZ_ASSERT|runtime error|SUMMARY|Test unit written|error:' "$log" | head -n 12
    fi
done
echo "fuzz: ${#targets[@]} targets, $total_execs executions, wall ${SECONDS}s"
echo "# passed $pass failed $fail"
[ "$fail" -eq 0 ]

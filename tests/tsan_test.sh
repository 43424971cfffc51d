#!/usr/bin/env bash
# Builds the library, tests/test_threads.c, tests/test_model.c (the
# model's shared descriptor cache), tests/test_model_ops.c (shards
# hashed side by side) and tests/test_lora.c (LoRA bake's workers) with
# ThreadSanitizer (clang) in
# build/tsan and runs them: any data race in the read paths fails it.
# Runs once per `make test` (in the normal suite; skipped when ST_SAN=1).
set -u
root=${ST_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"
if [ "${ST_SAN:-0}" = 1 ]; then
    echo "skipped in the sanitizer suite (runs once, in the normal one)"
    echo "# passed 0 failed 0"
    exit 0
fi
if ! command -v clang >/dev/null 2>&1; then
    echo "clang not found"
    echo "# passed 0 failed 1"
    exit 1
fi
out=build/tsan
mkdir -p "$out/obj"
flags="-std=c11 -g -O1 -pthread -fsanitize=thread -Iinclude -Ilib -Itests -D_GNU_SOURCE
       -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla"
objs=()
for src in lib/*/*.c; do
    obj="$out/obj/$(basename "$(dirname "$src")")_$(basename "$src" .c).o"
    if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find lib include -name '*.h' -newer "$obj" | head -n 1)" ]; then
        clang $flags -c "$src" -o "$obj" || { echo "# passed 0 failed 1"; exit 1; }
    fi
    objs+=("$obj")
done
pass=0 fail=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in test_threads test_model test_model_ops test_lora; do
    if ! clang $flags "tests/$t.c" "${objs[@]}" -lcrypto -lz -llapacke -lopenblas -lm -o "$out/$t"; then
        fail=$((fail + 1))
        continue
    fi
    # halt_on_error: the first race fails the run. setarch -R: TSan in clang 14
    # cannot map its shadow under the newest kernels' high ASLR entropy.
    run=("$out/$t")
    if command -v setarch >/dev/null 2>&1; then run=(setarch "$(uname -m)" -R "${run[@]}"); fi
    TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1" "${run[@]}" >"$log" 2>&1
    rc=$?
    line=$(grep -E '^# passed [0-9]+ failed [0-9]+$' "$log" | tail -n 1)
    if [ "$rc" -eq 0 ] && [ -n "$line" ] && ! grep -q 'WARNING: ThreadSanitizer' "$log"; then
        echo "$t under ThreadSanitizer: no race ($line)"
        pass=$((pass + 1))
    else
        echo "FAIL: $t under ThreadSanitizer (exit $rc)"
        head -n 60 "$log"
        fail=$((fail + 1))
    fi
done
echo "# passed $pass failed $fail"
[ "$fail" -eq 0 ]

#!/usr/bin/env bash
# Builds the library and tests/test_threads.c with ThreadSanitizer (clang)
# in build/tsan and runs it: any data race in the read paths fails it.
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
clang $flags tests/test_threads.c "${objs[@]}" -lcrypto -lz -llapacke -lopenblas -lm -o "$out/test_threads" ||
    { echo "# passed 0 failed 1"; exit 1; }

# halt_on_error: the first race fails the run. setarch -R: TSan in clang 14
# cannot map its shadow under the newest kernels' high ASLR entropy.
run=("$out/test_threads")
if command -v setarch >/dev/null 2>&1; then run=(setarch "$(uname -m)" -R "${run[@]}"); fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1" "${run[@]}" >"$log" 2>&1
rc=$?
line=$(grep -E '^# passed [0-9]+ failed [0-9]+$' "$log" | tail -n 1)
if [ "$rc" -eq 0 ] && [ -n "$line" ] && ! grep -q 'WARNING: ThreadSanitizer' "$log"; then
    echo "test_threads under ThreadSanitizer: no race ($line)"
    echo "# passed 1 failed 0"
    exit 0
fi
echo "FAIL: test_threads under ThreadSanitizer (exit $rc)"
head -n 60 "$log"
echo "# passed 0 failed 1"
exit 1

#!/usr/bin/env bash
# LoRA benchmarks (minutes; not part of `make bench`):
#   bash bench/long/lora.sh [BUILD]      BENCH_RUNS=N (default 5), BENCH_DIR=...
# 1. `lora bake` of a rank-32 SDXL LoRA (every attention and conv layer, text
#    encoders) into a 6.9 GB fp16 SDXL-shaped checkpoint, against `convert`
#    of the same checkpoint (target: bake <= 1.5x convert). Best of N each.
# 2. `lora extract --rank 32` on SD1.5-shaped base and tuned fp16 models that
#    differ in every layer (target <= 60 s on 2 cores). Best of N.
# Inputs are generated under BENCH_DIR (default BUILD/bench/lora) and removed.
# BENCH_ONLY=bake or extract runs one of the two.
set -u
build=${1:-build}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root" || exit 1
bin="$root/$build/safetensors"
dir=${BENCH_DIR:-$root/$build/bench/lora}
runs=${BENCH_RUNS:-5}
py=${PYTHON:-/usr/bin/python3}
mkdir -p "$dir"
trap 'rm -rf "$dir"' EXIT

best() { # best wall time in seconds of "$@", runs times
    local b="" t
    for _ in $(seq "$runs"); do
        local s=$(date +%s.%N)
        "$@" >/dev/null || { echo "FAILED: $*" >&2; return 1; }
        t=$(echo "$(date +%s.%N) - $s" | bc)
        if [ -z "$b" ] || [ "$(echo "$t < $b" | bc)" = 1 ]; then b=$t; fi
    done
    echo "$b"
}

only=${BENCH_ONLY:-}
if [ "$only" != extract ]; then
echo "generating inputs in $dir ..."
"$py" bench/long/lora_gen.py "$dir" sdxl && "$py" bench/long/lora_gen.py "$dir" lora || exit 2
ls -l "$dir"
conv=$(best "$bin" convert "$dir/sdxl.safetensors" "$dir/out.safetensors") || exit 1
rm -f "$dir/out.safetensors"
bake=$(best "$bin" lora bake "$dir/sdxl.safetensors" -o "$dir/out.safetensors" "$dir/sdxl_lora.safetensors") || exit 1
rm -f "$dir/out.safetensors" "$dir/sdxl.safetensors"
printf 'convert SDXL fp16 6.9 GB: %.2f s; lora bake rank 32: %.2f s; ratio %.2f (target <= 1.5)\n' \
    "$conv" "$bake" "$(echo "$bake / $conv" | bc -l)"
fi
[ "$only" = bake ] && exit 0

"$py" bench/long/lora_gen.py "$dir" sd15 || exit 2
ext=$(best "$bin" lora extract "$dir/sd15_base.safetensors" "$dir/sd15_tuned.safetensors" \
      -o "$dir/ex.safetensors" --rank 32 --min-diff 0) || exit 1
printf 'lora extract --rank 32, SD1.5 fp16: %.2f s (target <= 60 s on 2 cores)\n' "$ext"

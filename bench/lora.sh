#!/usr/bin/env bash
# LoRA bake (issue 13): a rank-LORA_RANK (default 32) kohya LoRA over every
# attention and conv layer of an SDXL-shaped checkpoint (UNet, VAE and both
# text encoders at their real sizes, F16, about 6.9 GB; written sparse, so
# its bytes are zeros) baked with `lora bake`, against `convert` of the same
# checkpoint (the cost of reading and writing it once). Best of LORA_RUNS
# (default 3), outputs on /dev/shm, ratio bake / convert. Peak RSS of the
# bake from /usr/bin/time.
set -u
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
case "$build" in /*) ;; *) build="$root/$build" ;; esac
bin=${ST_BIN:-$build/safetensors}
py=${PYTHON:-/usr/bin/python3}
runs=${LORA_RUNS:-3}
dir=$(mktemp -d "${BENCH_DIR:-$build/bench}/st_lora_bench.XXXXXX" 2>/dev/null || mktemp -d)
out=$(mktemp -d /dev/shm/st_lora_out.XXXXXX)
trap 'rm -rf "$dir" "$out"' EXIT

"$py" - "$dir" "${LORA_RANK:-32}" <<'PY' || exit 1
import os, sys
import numpy as np
sys.path.insert(0, "tests")
import sdlayouts
import lora_test
d, rank = sys.argv[1], int(sys.argv[2])
L = sdlayouts.sdxl_unet()
L.merge(sdlayouts.vae())
L.merge(sdlayouts.clip_hf("conditioner.embedders.0.transformer.", width=768, layers=12))
L.merge(sdlayouts.open_clip("conditioner.embedders.1.model.", width=1280, layers=32))
L.write(os.path.join(d, "sdxl.safetensors"))
shapes = {k: np.lib.stride_tricks.as_strided(np.zeros(1, np.float16), shape=s, strides=[0] * len(s))
          for k, (dt, s) in L.tensors.items()}
targets = lora_test.kohya_targets(shapes, False, conv=True)
lt = lora_test.make_lora(np.random.default_rng(3), shapes, targets, rank)
lora_test.save(os.path.join(d, "lora.safetensors"), lt, {"ss_network_module": "networks.lora"})
print("%d modules" % len(targets))
PY
size=$(stat -c %s "$dir/sdxl.safetensors")
best() { # best COMMAND...: min wall seconds
    local b=999999999999 t s e
    for _ in $(seq "$runs"); do
        rm -f "$out/o.safetensors"
        s=$(date +%s%N)
        "$@" >/dev/null 2>&1 || { echo 0; return; }
        e=$(date +%s%N)
        t=$(( (e - s) / 1000 ))
        [ "$t" -lt "$b" ] && b=$t
    done
    echo "$b"
}
plain=$(best "$bin" convert "$dir/sdxl.safetensors" "$out/o.safetensors" -q)
bake=$(best "$bin" lora bake "$dir/sdxl.safetensors" "$dir/lora.safetensors" -o "$out/o.safetensors" -q)
# OpenBLAS 0.3.21 runs its AVX2 kernels on CPUs it does not know (Zen 4/5)
# and the environment may pin them (OPENBLAS_CORETYPE): the same bake with
# its AVX-512 kernels, where the CPU has them, shows what the products cost.
skx=0
if grep -qw avx512bw /proc/cpuinfo 2>/dev/null && grep -qw avx512vl /proc/cpuinfo; then
    skx=$(OPENBLAS_CORETYPE=SkylakeX best "$bin" lora bake "$dir/sdxl.safetensors" \
        "$dir/lora.safetensors" -o "$out/o.safetensors" -q)
fi
rss=$(/usr/bin/time -f %M "$bin" lora bake "$dir/sdxl.safetensors" "$dir/lora.safetensors" \
    -o "$out/o.safetensors" -q 2>&1 >/dev/null | tail -n 1)
awk -v s="$size" -v c="$plain" -v b="$bake" -v r="$rss" -v k="$skx" -v ct="${OPENBLAS_CORETYPE:-auto}" 'BEGIN {
    printf "== LoRA bake, SDXL-shaped %.2f GB F16 checkpoint, best of runs\n", s / 1e9
    printf "convert (plain)  %7.2f s\n", c / 1e6
    printf "lora bake        %7.2f s  = %.2fx convert   peak RSS %.0f MiB (OpenBLAS core: %s)\n", b / 1e6, b / c, r / 1024, ct
    if (k > 0)
        printf "  with SkylakeX  %7.2f s  = %.2fx convert   (OPENBLAS_CORETYPE=SkylakeX)\n", k / 1e6, k / c }'

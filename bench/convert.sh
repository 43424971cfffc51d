#!/usr/bin/env bash
# Conversion benchmarks (called by `make bench` through bench/run.sh as
# `bash bench/convert.sh BUILD`; also runnable alone after `make`):
#   1. bench_convert: F32 -> BF16 and F32 -> F16 over a 1 GiB array in
#      memory (single thread, scalar, all threads) against memcpy.
#   2. PyTorch's Tensor.to() on the same sizes, torch.set_num_threads(1),
#      with $PYTHON (Debian's python3-torch), both allocating (.to) and into
#      a preallocated tensor (copy_).
#   3. `safetensors convert --dtype f16` of a 2 GiB F32 file: wall time and
#      peak RSS (/usr/bin/time) against `cp` (and `cp` + `sync`) of the same
#      file, medians of 3 interleaved rounds.
# Environment: CONVERT_BENCH_MIB (default 1024) array size; CONVERT_FILE_MIB
# (default 2048) file size, 0 to skip part 3; BENCH_DIR scratch directory.
set -u
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
case "$build" in /*) ;; *) build="$root/$build" ;; esac
dir=${BENCH_DIR:-$build/bench}
mkdir -p "$dir/bin"
mib=${CONVERT_BENCH_MIB:-1024}
file_mib=${CONVERT_FILE_MIB:-2048}
py=${PYTHON:-/usr/bin/python3}
bin=${ST_BIN:-$build/safetensors}

cc=${CC:-cc}
# shellcheck disable=SC2086
$cc -std=c11 -O2 -g -D_GNU_SOURCE -Iinclude -Wall -Wextra -Werror -Wshadow \
    -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith -Wformat=2 -Wvla -pthread \
    -o "$dir/bin/bench_convert" bench/bench_convert.c "$build/libsafetensors.a" \
    -lcrypto -lz -lpthread -lm || exit 1

echo "== conversion, $mib MiB of F32 in memory (best of 5)"
"$dir/bin/bench_convert" "$mib" 5

echo "== PyTorch Tensor.to(), 1 thread, same size and value distribution (best of 5)"
"$py" - "$mib" <<'PYEOF' || echo "(torch benchmark failed)"
import sys, time
import numpy as np
import torch
torch.set_num_threads(1)
mib = int(sys.argv[1])
n = mib * (1 << 20) // 4
rng = np.random.default_rng(1)
bits = rng.integers(0, 2**32, size=n, dtype=np.uint32)
bits = (bits & np.uint32(0x807FFFFF)) | ((np.uint32(0x6B) + (bits >> np.uint32(8)) % np.uint32(0x1C)) << np.uint32(23))
x = torch.from_numpy(bits.view(np.float32))
for name, dt in (("F32->BF16", torch.bfloat16), ("F32->F16", torch.float16)):
    best = 1e9
    for _ in range(5):
        t = time.perf_counter(); y = x.to(dt); t = time.perf_counter() - t
        best = min(best, t); del y
    print("torch %-22s %8.4f s  %7.2f GB/s" % (name + " .to()", best, n * 4 / best / 1e9))
    out = torch.empty(n, dtype=dt)
    best = 1e9
    for _ in range(5):
        t = time.perf_counter(); out.copy_(x); t = time.perf_counter() - t
        best = min(best, t)
    print("torch %-22s %8.4f s  %7.2f GB/s" % (name + " copy_()", best, n * 4 / best / 1e9))
    del out
PYEOF

if [ "$file_mib" -gt 0 ] && [ -x "$bin" ] && "$bin" convert --help >/dev/null 2>&1; then
    echo "== safetensors convert --dtype f16 of a $file_mib MiB F32 file vs cp"
    src="$dir/convert-src-${file_mib}m.safetensors"
    "$py" - "$src" "$file_mib" <<'PYEOF' || exit 1
import json, struct, sys
import numpy as np
path, mib = sys.argv[1], int(sys.argv[2])
# 64 tensors of equal size, F32, random weights-like values
count = 64
per = mib * (1 << 20) // 4 // count
hdr = {"__metadata__": {"format": "pt"}}
off = 0
for i in range(count):
    hdr["layer.%02d.weight" % i] = {"dtype": "F32", "shape": [per], "data_offsets": [off, off + per * 4]}
    off += per * 4
h = json.dumps(hdr, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
rng = np.random.default_rng(2)
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(h))); f.write(h)
    for i in range(count):
        f.write(rng.standard_normal(per, dtype=np.float32).tobytes())
PYEOF
    out="$dir/convert-out.safetensors"
    # 3 rounds, interleaved, each after a sync so that one run's writeback
    # does not slow the next; medians. `cp` does not fsync its copy and the
    # writer does (atomic, durable output), so `cp` + `sync` is shown too.
    : >"$dir/convert.times"
    for _ in 1 2 3; do
        sync
        /usr/bin/time -f "cp %e" -a -o "$dir/convert.times" cp "$src" "$dir/cp-copy"
        rm -f "$dir/cp-copy"; sync
        /usr/bin/time -f "cpsync %e" -a -o "$dir/convert.times" \
            sh -c 'cp "$1" "$2" && sync "$2"' sh "$src" "$dir/cp-copy"
        rm -f "$dir/cp-copy"; sync
        /usr/bin/time -f "convert %e %M" -a -o "$dir/convert.times" \
            "$bin" convert "$src" "$out" --dtype f16 >"$dir/convert.log" 2>&1
        rc=$?
        [ "$rc" -eq 0 ] || { echo "convert failed (exit $rc)"; cat "$dir/convert.log"; break; }
        rm -f "$out"
    done
    median() { grep "^$1 " "$dir/convert.times" | awk '{print $2}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
    maxrss=$(grep "^convert " "$dir/convert.times" | awk '{print $3}' | sort -n | tail -n 1)
    c=$(median convert); p=$(median cp); ps=$(median cpsync)
    echo "cp:                     ${p} s (median of 3)"
    echo "cp + sync:              ${ps} s"
    echo "safetensors convert:    ${c} s, peak RSS ${maxrss} KiB (max of 3)"
    awk -v c="$c" -v p="$p" -v ps="$ps" 'BEGIN { printf "ratio convert/cp %.2f, convert/(cp+sync) %.2f (target <= 1.5)\n", c / p, c / ps }'
    tail -n 3 "$dir/convert.log"
    rm -f "$src" "$out"
fi

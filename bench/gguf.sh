#!/usr/bin/env bash
# GGUF output (issue 11): a GGUF_MIB (default 2048) MiB F32 Flux-shaped
# model (double_blocks' attention and MLP weights, 3072 wide, and 1-D
# biases) converted with `convert IN OUT.gguf --quant TYPE` for q8_0,
# q4_k_s and q3_k_m, with one thread and with every core: wall time, MB/s
# of input per core, peak RSS (/usr/bin/time), output size. Best of
# GGUF_RUNS (default 3), input warm, output on /dev/shm. city96's convert.py
# loads the whole state dict (torch's load_file) before writing, so its
# memory is at least the input's size; that is the figure RSS is held to.
set -u
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
case "$build" in /*) ;; *) build="$root/$build" ;; esac
bin=${ST_BIN:-$build/safetensors}
py=${PYTHON:-/usr/bin/python3}
mib=${GGUF_MIB:-2048}
runs=${GGUF_RUNS:-3}
dir=$(mktemp -d /dev/shm/st_gguf_bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT

"$py" - "$dir/flux.safetensors" "$mib" <<'PY'
import json, os, struct, sys
import numpy as np
path, mib = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(5)
w = 3072
shapes = []
blk = 0
total = 0
while total + 4 * 8 * w * w <= mib << 20 or blk == 0:  # whole blocks of 8 w^2 floats
    shapes += [("double_blocks.%d.img_attn.qkv.weight" % blk, (3 * w, w)),
               ("double_blocks.%d.img_attn.qkv.bias" % blk, (3 * w,)),
               ("double_blocks.%d.img_mlp.0.weight" % blk, (4 * w, w)),
               ("double_blocks.%d.img_attn.proj.weight" % blk, (w, w)),
               ("double_blocks.%d.img_attn.norm.query_norm.scale" % blk, (128,))]
    total += 4 * (3 * w * w + 3 * w + 4 * w * w + w * w + 128)
    blk += 1
hdr, off = {}, 0
for n, s in sorted(shapes):
    k = int(np.prod(s)) * 4
    hdr[n] = {"dtype": "F32", "shape": list(s), "data_offsets": [off, off + k]}
    off += k
h = json.dumps(hdr, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
chunk = rng.standard_normal(1 << 22).astype(np.float32).tobytes()
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    left = off
    while left:
        k = min(left, len(chunk))
        f.write(chunk[:k])
        left -= k
PY
size=$(stat -c %s "$dir/flux.safetensors")
cat "$dir/flux.safetensors" >/dev/null
echo "== GGUF output: $(awk -v s="$size" 'BEGIN{printf "%.2f GiB", s/1073741824}') F32 Flux-shaped input, best of $runs"
for quant in q8_0 q4_k_s q3_k_m; do
    for threads in 1 0; do
        best=999999999 rss=0
        for _ in $(seq "$runs"); do
            rm -f "$dir/out.gguf"
            t0=$(date +%s%N)
            if [ "$threads" = 0 ]; then targs=(); else targs=(--threads "$threads"); fi
            r=$(/usr/bin/time -f %M "$bin" convert "$dir/flux.safetensors" "$dir/out.gguf" \
                --quant "$quant" "${targs[@]}" -q 2>&1 >/dev/null | tail -n 1)
            t1=$(date +%s%N)
            if [ ! -s "$dir/out.gguf" ]; then
                echo "$quant: convert failed ($r)"
                continue
            fi
            t=$(( (t1 - t0) / 1000 ))
            [ "$t" -lt "$best" ] && best=$t && rss=$r
        done
        [ "$best" = 999999999 ] && continue
        cores=$([ "$threads" = 0 ] && nproc || echo "$threads")
        out=$(stat -c %s "$dir/out.gguf" 2>/dev/null || echo 0)
        awk -v q="$quant" -v c="$cores" -v t="$best" -v s="$size" -v r="$rss" -v o="$out" 'BEGIN {
            printf "%-7s %d thread%s  %7.2f s  %7.0f MB/s of input per core  peak RSS %6.1f MiB  output %.1f MiB\n",
                q, c, c == 1 ? " " : "s", t / 1e6, s / (t / 1e6) / 1e6 / c, r / 1024, o / 1048576 }'
    done
done
echo "(city96's convert.py holds the state dict: at least $(awk -v s="$size" 'BEGIN{printf "%.0f", s/1048576}') MiB)"

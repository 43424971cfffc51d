#!/usr/bin/env bash
# Checkpoint conversion benchmark (issue 4's target): a 2 GiB fp32 .ckpt
# (torch.save zip format, SD-like {"state_dict": ..., "global_step": N})
# converted to safetensors
#   (a) by `safetensors convert`,
#   (b) by Python: torch.load(weights_only=True) then writing the tensors
#       (the same canonical layout, so the two outputs must be identical).
# Reports wall time and peak RSS (GNU time) of each, warm page cache (each
# run twice, the second counted), and cmp's the outputs.
#   bench/ckpt.sh [BUILD]      (BUILD defaults to build; inputs in BUILD/bench)
# Env: PYTHON (default /usr/bin/python3, with Debian's python3-torch),
#      CKPT_GIB (default 2), OUT_DIR (where the outputs go; default BUILD/bench;
#      OUT_DIR=/dev/shm takes the disk's write speed out of the comparison).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
bin=$root/$build/safetensors
py=${PYTHON:-/usr/bin/python3}
gib=${CKPT_GIB:-2}
dir=$root/$build/bench
mkdir -p "$dir"
ckpt=$dir/model_${gib}g.ckpt
out=${OUT_DIR:-$dir}
[ -x "$bin" ] || { echo "build first: make" >&2; exit 2; }
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (/usr/bin/time)" >&2; exit 2; }

if [ ! -s "$ckpt" ]; then
    echo "generating $ckpt ($gib GiB fp32) ..." >&2
    "$py" - "$ckpt" "$gib" <<'PYEOF'
import collections, sys, torch
path, gib = sys.argv[1], int(sys.argv[2])
g = torch.Generator().manual_seed(0)
sd = collections.OrderedDict()
n = gib * 32  # 32 MiB tensors
for i in range(n):
    sd["model.diffusion_model.block.%03d.weight" % i] = torch.randn(4096, 2048, generator=g)
sd["model.diffusion_model.out.bias"] = torch.randn(320, generator=g)
torch.save({"state_dict": sd, "global_step": 470000, "epoch": 6}, path)
PYEOF
fi

cat > "$dir/py_convert.py" <<'PYEOF'
# torch.load(weights_only=True), then write the tensors in the canonical
# safetensors layout (what safetensors.torch.save_file produces).
import json, struct, sys, torch
src, dst = sys.argv[1], sys.argv[2]
obj = torch.load(src, map_location="cpu", weights_only=True)
sd = obj["state_dict"]
meta = {"format": "pt"}
for k in ("epoch", "global_step"):
    meta[k] = str(obj[k])
rank = {torch.float32: 17, torch.float16: 13, torch.bfloat16: 14, torch.float64: 19, torch.int64: 20}
name = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64", torch.int64: "I64"}
items = sorted(sd.items(), key=lambda kv: (-rank[kv[1].dtype], kv[0].encode()))
hdr, off = {"__metadata__": dict(sorted(meta.items()))}, 0
for k, t in items:
    n = t.numel() * t.element_size()
    hdr[k] = {"dtype": name[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + n]}
    off += n
h = json.dumps(hdr, separators=(",", ":"), ensure_ascii=False).encode()
h += b" " * (-len(h) % 8)
with open(dst, "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    for k, t in items:
        f.write(t.contiguous().numpy().tobytes())
PYEOF

measure() { # label cmd...: prints "label seconds maxrss_kb"
    local label=$1; shift
    "$@" >/dev/null 2>&1 || true # warm-up: page cache
    rm -f "${@: -1}" # the output (last argument)
    sync             # the warm-up's dirty pages do not slow the timed run
    /usr/bin/time -f "%e %M %U %S" -o "$dir/time.out" "$@" >/dev/null
    read -r secs kb us ss <"$dir/time.out"
    printf '%-22s %7.2f s wall  %7.2f s CPU (user+sys)  peak RSS %7.1f MiB\n' "$label" "$secs" \
        "$(echo "$us + $ss" | bc -l)" "$(echo "$kb / 1024" | bc -l)"
    echo "$secs" >"$dir/$label.secs"
}

echo "input: $ckpt ($(stat -c %s "$ckpt") bytes)"
echo "outputs in: $out"
rm -f "$out/out_c.safetensors" "$out/out_py.safetensors"
measure safetensors-convert "$bin" convert "$ckpt" "$out/out_c.safetensors"
measure python-torch-load "$py" "$dir/py_convert.py" "$ckpt" "$out/out_py.safetensors"
if cmp -s "$out/out_c.safetensors" "$out/out_py.safetensors"; then
    echo "outputs: identical ($(stat -c %s "$out/out_c.safetensors") bytes)"
else
    echo "outputs: DIFFER" >&2
    exit 1
fi
c=$(cat "$dir/safetensors-convert.secs") p=$(cat "$dir/python-torch-load.secs")
printf 'speedup (wall): %.1fx\n' "$(echo "$p / $c" | bc -l)"
rm -f "$out/out_c.safetensors" "$out/out_py.safetensors" "$dir/time.out" "$dir"/*.secs

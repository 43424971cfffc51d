#!/usr/bin/env bash
# Zero-copy data paths (issue 16), on tmpfs (/dev/shm) and on the disk
# (BENCH_DIR) in the same run: for a ZC_MIB (default 2048) MiB file,
#   1. `convert` without a dtype change against `cp`;
#   2. `convert` of a torch.save checkpoint of the same size against `cp`;
#   3. `meta --set --in-place` of a file written with --pad 4KiB: on a
#      loop-mounted XFS image when root and mkfs.xfs allow (a clone and a
#      header write), and on the disk/tmpfs (the header keeps its size, the
#      tensors are copied).
# Best (min) of ZC_RUNS (default 5) runs each, inputs warm, outputs removed
# between runs; ratios are min(ours) / min(cp).
set -u
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
case "$build" in /*) ;; *) build="$root/$build" ;; esac
bin=${ST_BIN:-$build/safetensors}
py=${PYTHON:-/usr/bin/python3}
mib=${ZC_MIB:-2048}
runs=${ZC_RUNS:-5}
disk=${BENCH_DIR:-$build/bench}/zerocopy
mkdir -p "$disk"
shm=$(mktemp -d /dev/shm/st_zc.XXXXXX)
mnt=$disk/xfs
# shellcheck disable=SC2317
cleanup() { umount "$mnt" 2>/dev/null; rm -rf "$shm" "$disk"; }
trap cleanup EXIT

best() { # best OUT_TO_REMOVE COMMAND...: min wall seconds over $runs runs
    local out=$1 b=999999999999 t s e
    shift
    for _ in $(seq "$runs"); do
        rm -f "$out"
        s=$(date +%s%N)
        "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; echo 0; return; }
        e=$(date +%s%N)
        t=$(( (e - s) / 1000 ))
        [ "$t" -lt "$b" ] && b=$t
    done
    rm -f "$out"
    echo "$b"
}
ms() { awk -v u="$1" 'BEGIN { printf "%.1f ms", u / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "?" }'; }

make_inputs() { # DIR
    "$py" - "$1" "$mib" <<'PY'
import json, os, struct, sys
import torch
d, mib = sys.argv[1], int(sys.argv[2])
n = mib * (1 << 20) // 4 // 8
blk = os.urandom(n * 4)  # the same random tensor eight times: cheap to make
hdr, off = {}, 0
for i in range(8):
    hdr["layer%d.weight" % i] = {"dtype": "F32", "shape": [n], "data_offsets": [off, off + 4 * n]}
    off += 4 * n
h = json.dumps(hdr, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
with open(os.path.join(d, "in.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    for i in range(8):
        f.write(blk)
t = torch.frombuffer(bytearray(blk), dtype=torch.float32)
torch.save({"layer%d.weight" % i: t.clone() for i in range(8)}, os.path.join(d, "in.ckpt"))
PY
}

report() { # WHERE DIR
    local where=$1 d=$2
    cat "$d/in.safetensors" "$d/in.ckpt" >/dev/null
    local cp_t cps_t conv_t ck_t
    cp_t=$(best "$d/out" cp "$d/in.safetensors" "$d/out")
    # ours fsyncs its output (a crash leaves the old file or the new one);
    # cp does not, so cp + sync of the copy is the like-for-like figure
    cps_t=$(best "$d/out" sh -c 'cp "$1" "$2" && sync "$2"' sh "$d/in.safetensors" "$d/out")
    conv_t=$(best "$d/out" "$bin" convert "$d/in.safetensors" "$d/out" -q)
    ck_t=$(best "$d/out" "$bin" convert "$d/in.ckpt" "$d/out" -q)
    echo "$where: cp $(ms "$cp_t"), cp + sync $(ms "$cps_t")"
    echo "$where: convert (no dtype) $(ms "$conv_t") = $(ratio "$conv_t" "$cp_t") cp," \
        "$(ratio "$conv_t" "$cps_t") cp + sync"
    echo "$where: .ckpt import $(ms "$ck_t") = $(ratio "$ck_t" "$cp_t") cp," \
        "$(ratio "$ck_t" "$cps_t") cp + sync"
    "$bin" convert "$d/in.safetensors" "$d/padded.safetensors" --pad 4KiB -q >/dev/null
    local b=999999999999 t s e
    for i in $(seq "$runs"); do
        s=$(date +%s%N)
        "$bin" meta "$d/padded.safetensors" --set "edit=$i" --in-place -q >/dev/null
        e=$(date +%s%N)
        t=$(( (e - s) / 1000 ))
        [ "$t" -lt "$b" ] && b=$t
    done
    echo "$where: meta --set --in-place on a --pad file: $(ms "$b")"
    rm -f "$d"/in.* "$d/padded.safetensors"
}

echo "== zero-copy paths, $mib MiB, best of $runs"
make_inputs "$shm" && report "tmpfs" "$shm"
make_inputs "$disk" && report "disk ($(df --output=fstype "$disk" | tail -1 | tr -d ' '))" "$disk"
mkdir -p "$mnt"
if [ "$(id -u)" = 0 ] && command -v mkfs.xfs >/dev/null 2>&1 &&
    truncate -s $((mib * 3 + 1024))M "$disk/xfs.img" && mkfs.xfs -q -f "$disk/xfs.img" &&
    mount -o loop "$disk/xfs.img" "$mnt"; then
    make_inputs "$mnt" && report "xfs (loop, reflink)" "$mnt"
    umount "$mnt"
else
    echo "xfs: skipped (needs root, mkfs.xfs and a loop mount)"
fi

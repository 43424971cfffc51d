#!/usr/bin/env bash
# The zero-copy paths (issue 16) give the bytes the buffered paths give:
# convert without a dtype change, .ckpt import, join and meta edits, each
# run with the kernel's copies (copy_file_range, FICLONE) and again with
# ST_NO_COPY_FILE_RANGE=1 (every byte through a buffer), outputs compared.
# `--pad` leaves room that a later `meta` edit uses: the header keeps its
# size and the tensors stay where they are. On a loop-mounted XFS image
# (root and mkfs.xfs needed, skipped with a message otherwise) `meta
# --in-place` clones the file and writes only the header, and `convert` of
# a file already canonical clones it whole: the data extents are shared.
set -u
bin=${ST_BIN:?ST_BIN not set}
py=${PYTHON:-/usr/bin/python3}
# shellcheck source=tests/testlib.sh
. "$(dirname "$0")/testlib.sh"
tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/st_zerocopy.XXXXXX")
mnt="$tmp/xfs"
trap 'umount "$mnt" 2>/dev/null; rm -rf "$tmp"' EXIT

# A model with tensors of several dtypes written out of canonical order by
# hand (so convert must move them), and a torch.save checkpoint of it.
"$py" - "$tmp" <<'PY'
import json, os, struct, sys
import numpy as np
import torch
d = sys.argv[1]
rng = np.random.default_rng(16)
ts = {"b.weight": rng.standard_normal((64, 33)).astype(np.float16),
      "a.weight": rng.standard_normal((300, 7)).astype(np.float32),
      "c.ids": np.arange(1000, dtype=np.int64),
      "d.flag": np.array([True, False, True])}
names = ["c.ids", "d.flag", "b.weight", "a.weight"]  # not the canonical order
dt = {np.dtype(np.float16): "F16", np.dtype(np.float32): "F32",
      np.dtype(np.int64): "I64", np.dtype(np.bool_): "BOOL"}
hdr, off, blobs = {"__metadata__": {"k": "v"}}, 0, []
for n in names:
    b = ts[n].tobytes()
    hdr[n] = {"dtype": dt[ts[n].dtype], "shape": list(ts[n].shape), "data_offsets": [off, off + len(b)]}
    off += len(b)
    blobs.append(b)
h = json.dumps(hdr).encode()
h += b" " * (-len(h) % 8)
with open(os.path.join(d, "in.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
torch.save({n: torch.from_numpy(ts[n].copy()) for n in names}, os.path.join(d, "in.ckpt"))
PY

both() { # both NAME COMMAND... : run with kernel copies, then buffered; compare OUT files
    local name=$1; shift
    "$@" "$tmp/$name.fast" -q >/dev/null 2>&1
    local rc1=$?
    ST_NO_COPY_FILE_RANGE=1 "$@" "$tmp/$name.slow" -q >/dev/null 2>&1
    local rc2=$?
    check "$name: both paths succeed ($rc1, $rc2)" [ "$rc1" -eq 0 -a "$rc2" -eq 0 ]
    check "$name: byte-identical on both paths" cmp -s "$tmp/$name.fast" "$tmp/$name.slow"
}
both convert "$bin" convert "$tmp/in.safetensors"
both ckpt "$bin" convert "$tmp/in.ckpt"
both padded "$bin" convert "$tmp/in.safetensors" --pad 4KiB

# --pad: the same tensors and metadata, the header 4 KiB larger, valid.
"$bin" check "$tmp/padded.fast" >/dev/null 2>&1
check "padded: passes check" [ $? -eq 0 ]
hdr_n() { "$py" -c 'import struct,sys; print(struct.unpack("<Q", open(sys.argv[1],"rb").read(8))[0])' "$1"; }
plain_n=$(hdr_n "$tmp/convert.fast") padded_n=$(hdr_n "$tmp/padded.fast")
check "padded: header $padded_n >= $plain_n + 4096, a multiple of 8" \
    [ "$padded_n" -ge $((plain_n + 4096)) -a $((padded_n % 8)) -eq 0 ]
"$bin" diff "$tmp/convert.fast" "$tmp/padded.fast" >/dev/null 2>&1
check "padded: the same tensors and metadata as the canonical file" [ $? -eq 0 ]
err=$("$bin" convert "$tmp/in.safetensors" "$tmp/x.safetensors" --pad lots 2>&1)
check "--pad lots: a usage error ($err)" [ $? -eq 2 ]
err=$("$bin" convert "$tmp/in.safetensors" "$tmp/x.safetensors" --pad 200MB 2>&1)
check "--pad over the header limit: a usage error" [ $? -eq 2 ]

# meta on the padded file: the header keeps its size, the tensors do not
# move, and both paths agree; on the canonical file an edit that does not
# fit rewrites it canonically.
both meta "$bin" meta "$tmp/padded.fast" --set added=value -o
check "meta on a padded file keeps the size" \
    [ "$(stat -c %s "$tmp/meta.fast")" -eq "$(stat -c %s "$tmp/padded.fast")" ]
check "meta on a padded file: the data section unchanged" \
    cmp -s <(tail -c +$((padded_n + 9)) "$tmp/padded.fast") <(tail -c +$((padded_n + 9)) "$tmp/meta.fast")
"$bin" meta "$tmp/meta.fast" --json 2>/dev/null | grep -q '"added": *"value"'
check "meta on a padded file: the key is there" [ $? -eq 0 ]
"$bin" meta "$tmp/convert.fast" --set added=value -o "$tmp/grown.safetensors" -q >/dev/null 2>&1
"$bin" convert "$tmp/grown.safetensors" "$tmp/grown.canon" -q >/dev/null 2>&1
check "meta that does not fit: the canonical layout" cmp -s "$tmp/grown.safetensors" "$tmp/grown.canon"
"$bin" meta "$tmp/convert.fast" --set added=value --pad 1KiB -o "$tmp/grown.pad" -q >/dev/null 2>&1
check "meta --pad 1KiB: room left" [ "$(hdr_n "$tmp/grown.pad")" -ge $((plain_n + 1024)) ]

# split and join of shards: both paths.
"$bin" split "$tmp/convert.fast" "$tmp/shards" --max-shard-size 2KB -q >/dev/null 2>&1
ST_NO_COPY_FILE_RANGE=1 "$bin" split "$tmp/convert.fast" "$tmp/shards.slow" --max-shard-size 2KB \
    -q >/dev/null 2>&1
check "split: several shards" [ "$(ls "$tmp/shards" | wc -l)" -gt 2 ]
check "split: byte-identical shards on both paths" diff -r "$tmp/shards" "$tmp/shards.slow"
both join "$bin" join "$tmp/shards"
out=$("$bin" diff "$tmp/convert.fast" "$tmp/join.fast" 2>&1)
check "join: the tensors of the file split ($out)" \
    bash -c "echo \"\$1\" | grep -q '4 common tensors: 4 identical'" _ "$out"

# FICLONE on XFS: only the header is written, the extents stay shared.
mkdir -p "$mnt"
if [ "$(id -u)" = 0 ] && command -v mkfs.xfs >/dev/null 2>&1 &&
    truncate -s 512M "$tmp/xfs.img" && mkfs.xfs -q -f "$tmp/xfs.img" 2>/dev/null &&
    mount -o loop "$tmp/xfs.img" "$mnt" 2>/dev/null; then
    "$py" - "$mnt/big.safetensors" <<'PY'
import json, os, struct, sys
n = 8 << 20  # 32 MiB of F32
h = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}},
               separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
with open(sys.argv[1] + ".raw", "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + os.urandom(4 * n))
PY
    "$bin" convert "$mnt/big.safetensors.raw" "$mnt/big.safetensors" --pad 4KiB -q >/dev/null
    cp "$mnt/big.safetensors" "$tmp/big.before"
    out=$("$bin" meta "$mnt/big.safetensors" --set note=cloned --in-place 2>&1)
    check "xfs: meta --in-place succeeds" [ $? -eq 0 ]
    check "xfs: only the header was written ($out)" bash -c "echo \"\$1\" | grep -q cloned" _ "$out"
    ST_NO_COPY_FILE_RANGE=1 "$bin" meta "$tmp/big.before" --set note=cloned -o "$tmp/big.slow" -q \
        >/dev/null
    check "xfs: the clone's bytes = the copying path's" cmp -s "$mnt/big.safetensors" "$tmp/big.slow"
    "$bin" meta "$mnt/big.safetensors" --set other=1 -o "$mnt/big2.safetensors" -q >/dev/null
    check "xfs: -o clones too; the input untouched" cmp -s "$mnt/big.safetensors" "$tmp/big.slow"
    if command -v filefrag >/dev/null 2>&1; then
        check "xfs: the output's extents are shared" \
            bash -c "filefrag -v \"\$1\" | grep -q shared" _ "$mnt/big2.safetensors"
    fi
    # convert of a file already canonical: its bytes, cloned as cp does
    "$bin" convert "$mnt/big.safetensors.raw" "$mnt/canon.safetensors" -q >/dev/null
    "$bin" convert "$mnt/canon.safetensors" "$mnt/canon2.safetensors" -q >/dev/null
    check "xfs: convert of a canonical file = the file" \
        cmp -s "$mnt/canon.safetensors" "$mnt/canon2.safetensors"
    if command -v filefrag >/dev/null 2>&1; then
        check "xfs: convert of a canonical file shares its extents" \
            bash -c "filefrag -v \"\$1\" | grep -q shared" _ "$mnt/canon2.safetensors"
    fi
    check "xfs: no temporary file left" [ "$(find "$mnt" -name '.*.tmp' | wc -l)" -eq 0 ]
    umount "$mnt"
else
    echo "xfs clone checks skipped: need root, mkfs.xfs (xfsprogs) and a loop mount"
fi

finish

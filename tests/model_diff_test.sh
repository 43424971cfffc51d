#!/usr/bin/env bash
# diff on sharded models (st_model_diff): a file against its shards gives
# the same tensor verdicts as against itself; a changed tensor in one shard
# is found with its values compared across shards; a missing shard is an
# error (exit 2) naming it; --json works the same on models.
set -u
bin=${ST_BIN:?ST_BIN not set}
py=${PYTHON:-/usr/bin/python3}
# shellcheck source=tests/testlib.sh
. "$(dirname "$0")/testlib.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$py" - "$tmp/m.safetensors" <<'PY'
import json, struct, sys
import numpy as np
rng = np.random.default_rng(12)
ts = {"layer%02d.weight" % i: rng.standard_normal((64, 64)).astype(np.float32) for i in range(12)}
hdr, off, blobs = {"__metadata__": {"format": "pt"}}, 0, []
for n in sorted(ts):
    b = ts[n].tobytes()
    hdr[n] = {"dtype": "F32", "shape": [64, 64], "data_offsets": [off, off + len(b)]}
    off += len(b)
    blobs.append(b)
h = json.dumps(hdr, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
PY
"$bin" split "$tmp/m.safetensors" "$tmp/sh" --max-shard-size 40KB -q >/dev/null
check "split into several shards" [ "$(ls "$tmp/sh"/*.safetensors | wc -l)" -gt 3 ]

out=$("$bin" diff "$tmp/m.safetensors" "$tmp/sh" 2>&1)
rc=$?
check "file vs its shards: identical (exit $rc: $out)" [ "$rc" -eq 0 ]
check "file vs its shards: 12 identical tensors" \
    bash -c "echo \"\$1\" | grep -q '12 common tensors: 12 identical, 0 differ'" _ "$out"
"$bin" diff "$tmp/sh" "$tmp/sh/model.safetensors.index.json" >/dev/null 2>&1
check "folder vs its index: identical" [ $? -eq 0 ]

# change one tensor's values inside a shard copy
cp -r "$tmp/sh" "$tmp/sh2"
shard=$(grep -o '"layer05.weight": "[^"]*"' "$tmp/sh2/model.safetensors.index.json" | cut -d'"' -f4)
"$py" - "$tmp/sh2/$shard" <<'PY'
import json, struct, sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
s, e = h["layer05.weight"]["data_offsets"]
import numpy as np
v = np.frombuffer(bytes(b[8 + n + s:8 + n + e]), dtype=np.float32).copy()
v[7] += 0.5
b[8 + n + s:8 + n + e] = v.tobytes()
open(p, "wb").write(bytes(b))
PY
out=$("$bin" diff "$tmp/m.safetensors" "$tmp/sh2" 2>&1)
rc=$?
check "a changed tensor: exit 1 ($rc)" [ "$rc" -eq 1 ]
check "a changed tensor: named with max|a-b| 0.5 ($out)" \
    bash -c "echo \"\$1\" | grep 'layer05.weight' | grep -q '0.5'" _ "$out"
json=$("$bin" diff --json "$tmp/sh" "$tmp/sh2" 2>/dev/null)
check "--json on two models: one changed tensor" \
    "$py" -c 'import json,sys; d=json.loads(sys.argv[1]); t=d["tensors"]; assert not d["identical"] and [x["name"] for x in t if x["status"]=="changed"]==["layer05.weight"], t' "$json"

# a shard missing: an error naming it, exit 2
rm "$tmp/sh2/$shard"
err=$("$bin" diff "$tmp/m.safetensors" "$tmp/sh2" 2>&1 >/dev/null)
rc=$?
check "a missing shard: exit 2 ($rc)" [ "$rc" -eq 2 ]
check "a missing shard: named ($err)" bash -c "echo \"\$1\" | grep -q \"\$2\"" _ "$err" "$shard"
finish

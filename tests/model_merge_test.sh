#!/usr/bin/env bash
# merge and hash over sharded models: A (or C, or the VAE) given as an index
# or a folder merges to the same tensors and metadata as its joined file,
# but for the hashes, which are the shards' (sd_merge_models per shard,
# a list in sd_merge_recipe); a broken shard set fails (missing: exit 2,
# invalid: exit 1) with no output; OUT may not be a shard. `hash` over a
# model gives sha256sum's digest of each shard, one shard at a time or
# several at once.
set -u
bin=${ST_BIN:?ST_BIN not set}
py=${PYTHON:-/usr/bin/python3}
# shellcheck source=tests/testlib.sh
. "$(dirname "$0")/testlib.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# A, B, C: checkpoint-like files (names with and without "model", F32, F16,
# an integer tensor, CLIP's position_ids); V: a VAE file (unprefixed names).
"$py" - "$tmp" <<'PY'
import json, struct, sys
import numpy as np
d = sys.argv[1]
def write(path, ts, meta):
    hdr, off, blobs = {"__metadata__": meta}, 0, []
    for n in sorted(ts):
        a = ts[n]
        b = a.tobytes()
        dt = {"float32": "F32", "float16": "F16", "int64": "I64"}[str(a.dtype)]
        hdr[n] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
def ckpt(seed):
    r = np.random.default_rng(seed)
    ts = {}
    for i in range(8):
        ts["model.diffusion_model.block%d.weight" % i] = r.standard_normal((64, 48)).astype(np.float32)
    for i in range(3):
        ts["first_stage_model.enc%d.weight" % i] = r.standard_normal((32, 32)).astype(np.float16)
    ts["cond_stage_model.transformer.text_model.embeddings.position_ids"] = np.arange(77, dtype=np.int64).reshape(1, 77)
    ts["alphas_cumprod"] = r.standard_normal((100,)).astype(np.float32)
    return ts
write(d + "/a.safetensors", ckpt(1), {"format": "pt", "from": "A"})
write(d + "/b.safetensors", ckpt(2), {"format": "pt", "from": "B"})
write(d + "/c.safetensors", ckpt(3), {"format": "pt"})
r = np.random.default_rng(4)
write(d + "/v.safetensors", {"enc%d.weight" % i: r.standard_normal((32, 32)).astype(np.float32) for i in range(3)}, {})
PY

for m in a c v; do
    "$bin" split "$tmp/$m.safetensors" "$tmp/${m}sh" --max-shard-size 5KB -q >/dev/null
    "$bin" join "$tmp/${m}sh" "$tmp/${m}j.safetensors" -q >/dev/null
done
nsh=$(ls "$tmp/ash"/*.safetensors | wc -l)
check "A split into several shards ($nsh)" [ "$nsh" -gt 3 ]
check "the VAE split into several shards" [ "$(ls "$tmp/vsh"/*.safetensors | wc -l)" -gt 1 ]

# Tensors (names, dtypes, shapes, bytes) and metadata of two outputs equal,
# but for sd_merge_recipe / sd_merge_models.
same_but_hashes() {
    "$py" - "$1" "$2" <<'PY'
import json, struct, sys
def load(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    meta = h.pop("__metadata__", {})
    for k in ("sd_merge_recipe", "sd_merge_models"):
        meta.pop(k)
    return h, meta, b[8 + n:]
x, y = load(sys.argv[1]), load(sys.argv[2])
assert x[0] == y[0], "tensor tables differ"
assert x[1] == y[1], (x[1], y[1])
assert x[2] == y[2], "tensor data differs"
PY
}

mkdir -p "$tmp/o1" "$tmp/o2" "$tmp/o3"
"$bin" merge "$tmp/aj.safetensors" "$tmp/b.safetensors" -o "$tmp/o1/out.safetensors" --alpha 0.3 -q >/dev/null
check "merge joined A + B: exit 0" [ $? -eq 0 ]
"$bin" merge "$tmp/ash" "$tmp/b.safetensors" -o "$tmp/o2/out.safetensors" --alpha 0.3 -q >/dev/null
check "merge A's folder + B: exit 0" [ $? -eq 0 ]
"$bin" merge "$tmp/ash/model.safetensors.index.json" "$tmp/b.safetensors" -o "$tmp/o3/out.safetensors" \
    --alpha 0.3 -q >/dev/null
check "merge A's index + B: exit 0" [ $? -eq 0 ]
check "sharded A: same tensors and metadata as the joined A" \
    same_but_hashes "$tmp/o1/out.safetensors" "$tmp/o2/out.safetensors"
check "A's folder and A's index: byte-identical outputs" \
    cmp -s "$tmp/o2/out.safetensors" "$tmp/o3/out.safetensors"
out=$("$bin" diff "$tmp/o1/out.safetensors" "$tmp/o2/out.safetensors" 2>&1)
check "diff of the two outputs: all tensors identical ($out)" \
    bash -c "echo \"\$1\" | grep -q 'common tensors: 13 identical, 0 differ'" _ "$out"

# The record of a sharded input: each shard by its SHA-256, as sha256sum.
check "sd_merge_models and sd_merge_recipe list A's shards" \
    "$py" - "$tmp/o2/out.safetensors" "$tmp/ash" "$tmp/b.safetensors" <<'PY'
import hashlib, json, os, struct, sys
out, shdir, b = sys.argv[1:]
raw = open(out, "rb").read()
meta = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])["__metadata__"]
ix = json.load(open(shdir + "/model.safetensors.index.json"))
shards = sorted(set(ix["weight_map"].values()))
sha = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
want = [sha(os.path.join(shdir, s)) for s in shards]
recipe = json.loads(meta["sd_merge_recipe"])
assert recipe["primary_model_hash"] == want, recipe
assert recipe["secondary_model_hash"] == sha(b), recipe
assert recipe["tertiary_model_hash"] is None
models = json.loads(meta["sd_merge_models"])
assert list(models) == want + [sha(b)], list(models)
for s, h in zip(shards, want):
    assert models[h]["name"] == s, models[h]
    # a shard is under 1 MiB: autov1 is the SHA-256 of nothing
    assert models[h]["legacy_hash"] == "e3b0c442", models[h]
assert models[sha(b)]["name"] == "b.safetensors"
PY

# add-diff with C and the VAE sharded too, against their joined files
"$bin" merge "$tmp/aj.safetensors" "$tmp/b.safetensors" "$tmp/cj.safetensors" --mode add-diff \
    --vae "$tmp/vj.safetensors" --dtype f16 -o "$tmp/o1/ad.safetensors" --alpha 0.7 -q >/dev/null
check "add-diff, joined C and VAE: exit 0" [ $? -eq 0 ]
"$bin" merge "$tmp/ash" "$tmp/b.safetensors" "$tmp/csh" --mode add-diff \
    --vae "$tmp/vsh" --dtype f16 -o "$tmp/o2/ad.safetensors" --alpha 0.7 -q >/dev/null
check "add-diff, sharded A, C and VAE: exit 0" [ $? -eq 0 ]
check "add-diff over shards: same tensors and metadata as over the joined files" \
    same_but_hashes "$tmp/o1/ad.safetensors" "$tmp/o2/ad.safetensors"
check "add-diff over shards: the VAE's tensors baked in (F16 of V's)" \
    "$py" - "$tmp/o2/ad.safetensors" "$tmp/v.safetensors" <<'PY'
import json, struct, sys
import numpy as np
def load(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    return h, b[8 + n:]
(ho, do), (hv, dv) = load(sys.argv[1]), load(sys.argv[2])
recipe = json.loads(ho["__metadata__"]["sd_merge_recipe"])
assert recipe["bake_in_vae"] == "model.safetensors.index.json", recipe
assert isinstance(recipe["tertiary_model_hash"], list), recipe
for i in range(3):
    t, v = ho["first_stage_model.enc%d.weight" % i], hv["enc%d.weight" % i]
    assert t["dtype"] == "F16", t
    got = np.frombuffer(do[t["data_offsets"][0]:t["data_offsets"][1]], np.float16)
    ref = np.frombuffer(dv[v["data_offsets"][0]:v["data_offsets"][1]], np.float32).astype(np.float16)
    assert (got == ref).all()
PY

# A broken shard set: no output, nothing left in OUT's folder.
cp -r "$tmp/ash" "$tmp/miss"
victim=$(ls "$tmp/miss"/model-*.safetensors | sed -n 2p)
rm "$victim"
mkdir -p "$tmp/o4"
err=$("$bin" merge "$tmp/miss" "$tmp/b.safetensors" -o "$tmp/o4/out.safetensors" --alpha 0.5 -q 2>&1 >/dev/null)
rc=$?
check "a missing shard in A: exit 2 ($rc)" [ "$rc" -eq 2 ]
check "a missing shard: named ($err)" bash -c "echo \"\$1\" | grep -q \"\$2\"" _ "$err" "$(basename "$victim")"
check "a missing shard: no output, no temporary file" [ -z "$(ls -A "$tmp/o4")" ]

cp -r "$tmp/csh" "$tmp/bad"
victim=$(ls "$tmp/bad"/model-*.safetensors | head -n 1)
printf 'XXXXXXXX' | dd of="$victim" bs=1 seek=0 conv=notrunc status=none
err=$("$bin" merge "$tmp/a.safetensors" "$tmp/b.safetensors" "$tmp/bad/model.safetensors.index.json" \
    --mode add-diff -o "$tmp/o4/out.safetensors" --alpha 0.5 -q 2>&1 >/dev/null)
rc=$?
check "an invalid shard in C: exit 1 ($rc: $err)" [ "$rc" -eq 1 ]
check "an invalid shard: named ($err)" bash -c "echo \"\$1\" | grep -q \"\$2\"" _ "$err" "$(basename "$victim")"
check "an invalid shard: no output, no temporary file" [ -z "$(ls -A "$tmp/o4")" ]

first=$(ls "$tmp/ash"/model-*.safetensors | head -n 1)
before=$(sha256sum <"$first")
"$bin" merge "$tmp/ash" "$tmp/b.safetensors" -o "$first" --alpha 0.5 -q >/dev/null 2>&1
rc=$?
check "OUT naming one of A's shards: exit 2 ($rc)" [ "$rc" -eq 2 ]
check "OUT naming a shard: the shard is untouched" [ "$(sha256sum <"$first")" = "$before" ]

# hash over a model: each shard's digest as sha256sum gives it
want=$(cd "$tmp/ash" && sha256sum model-*.safetensors | awk '{print $2 " " $1}')
for th in 1 2 3 ""; do
    got=$("$bin" hash --algo sha256 --json ${th:+--threads $th} "$tmp/ash" |
        "$py" -c 'import json, os, sys
for l in sys.stdin: d = json.loads(l); print(os.path.basename(d["file"]), d["sha256"])')
    check "hash ${th:+--threads $th }over A's shards: sha256sum's digests, in shard order" \
        [ "$got" = "$want" ]
done
got=$("$bin" hash --algo all "$tmp/ash/model.safetensors.index.json" | grep -c '^  sha256 ')
check "hash of an index, all digests: one block per shard ($got)" [ "$got" -eq "$nsh" ]
err=$("$bin" hash "$tmp/miss" 2>&1 >/dev/null)
check "hash of a model with a missing shard: exit 2" [ $? -eq 2 ]
finish

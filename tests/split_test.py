"""`safetensors split` and `join` against the rules they follow, written
here independently in Python: huggingface_hub's split_state_dict_into_shards
(greedy fill in key order, larger tensors alone and listed when met, the
file name pattern, the single-shard case) and the index JSON exactly as
Python's json.dumps writes it (transformers: indent=2, sort_keys=True and a
newline; huggingface_hub with --hub: indent=2, insertion order). Shards are
read back with a small Python reader and compared byte for byte with the
source; join of the shards must equal `convert` of the source. Hostile
inputs: missing shard, invalid shard, path escaping the folder, bad sizes;
each with its exit code and no output left behind.

Runs the CLI given by $ST_BIN; data is generated in a temp dir."""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

BIN = os.environ.get("ST_BIN") or os.path.join(os.path.dirname(__file__), "..", "build", "safetensors")
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL", what, file=sys.stderr)


def run(*args):
    p = subprocess.run([BIN] + list(args), capture_output=True)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


DT = {"F32": 4, "F16": 2, "I64": 8, "U8": 1, "BF16": 2}


def write_st(path, tensors, metadata=None):
    """tensors: name -> (dtype, shape, bytes)."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    off = 0
    blobs = []
    for name, (dt, shape, data) in tensors.items():
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
        blobs.append(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_st(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", None)
    out = {}
    for k, v in header.items():
        b, e = v["data_offsets"]
        out[k] = (v["dtype"], v["shape"], raw[8 + n + b:8 + n + e])
    return out, meta


def make_model():
    t = {}
    seed = 1

    def data(nbytes):
        nonlocal seed
        out = bytearray()
        for _ in range(nbytes):
            seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
            out.append(seed >> 16 & 0xFF)
        return bytes(out)

    names = ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"]
    for layer in range(6):
        for part in ("q_proj", "k_proj", "v_proj", "o_proj"):
            names.append("model.layers.%d.self_attn.%s.weight" % (layer, part))
        names.append("model.layers.%d.input_layernorm.weight" % layer)
    names += ["caf\u00e9.\u00fc", "emoji.\U0001F600", "quote\"back\\slash", "ctl\x01\x7f.tab\t",
              "zero.sized", "scalar"]
    sizes = {}
    for i, n in enumerate(names):
        dt = ["F32", "F16", "BF16", "I64", "U8"][i % 5]
        if n == "zero.sized":
            shape = [0, 3]
        elif n == "scalar":
            shape = []
        elif n == "model.embed_tokens.weight":
            shape = [64, 40]  # the big one
        else:
            shape = [3 + i % 7, 5]
        ne = 1
        for d in shape:
            ne *= d
        t[n] = (dt, shape, data(ne * DT[dt]))
        sizes[n] = ne * DT[dt]
    return t


def hub_plan(sizes, max_size):
    """huggingface_hub's rules, on (name, size) in key order."""
    shard_list, cur, cur_size = [], {}, 0
    for key, size in sizes:
        if size > max_size:
            shard_list.append({key: size})
            continue
        if cur_size + size > max_size:
            shard_list.append(cur)
            cur, cur_size = {}, 0
        cur[key] = size
        cur_size += size
    if len(cur) > 0:
        shard_list.append(cur)
    return shard_list


def expected_files(tensors, max_size, prefix="model"):
    sizes = [(k, len(tensors[k][2])) for k in sorted(tensors, key=lambda s: s.encode())]
    shards = hub_plan(sizes, max_size)
    if len(shards) == 1:
        return {prefix + ".safetensors": list(shards[0])}, None, None
    files, t2f = {}, {}
    for i, sh in enumerate(shards):
        fn = "%s-%05d-of-%05d.safetensors" % (prefix, i + 1, len(shards))
        files[fn] = list(sh)
        for k in sh:
            t2f[k] = fn
    total = sum(s for _, s in sizes)
    return files, t2f, total


def params(tensors):
    total = 0
    for dt, shape, _ in tensors.values():
        ne = 1
        for d in shape:
            ne *= d
        total += ne
    return total


def check_split(tmp, tensors, meta, max_arg, max_size, hub=False, prefix=None):
    src = os.path.join(tmp, "src.safetensors")
    write_st(src, tensors, meta)
    out = os.path.join(tmp, "out-%s-%s-%s" % (max_arg, hub, prefix))
    args = ["split", "-q", "--max-shard-size", max_arg, src, out]
    if hub:
        args.insert(1, "--hub")
    if prefix:
        args[1:1] = ["--prefix", prefix]
    rc, so, se = run(*args)
    check(rc == 0, "split %s: rc %d %s" % (max_arg, rc, se))
    files, t2f, total = expected_files(tensors, max_size, prefix or "model")
    names = sorted(os.listdir(out))
    idx_name = (prefix or "model") + ".safetensors.index.json"
    want = sorted(list(files) + ([idx_name] if t2f else []))
    check(names == want, "files %s: %s != %s" % (max_arg, names[:4], want[:4]))
    for fn, keys in files.items():
        if not os.path.exists(os.path.join(out, fn)):
            continue
        got, gmeta = read_st(os.path.join(out, fn))
        check(sorted(got) == sorted(keys), "%s: tensors %s" % (fn, sorted(got)[:3]))
        for k in keys:
            check(k in got and got[k] == tensors[k], "%s: tensor %r data" % (fn, k))
        wmeta = dict(meta or {})
        wmeta.setdefault("format", "pt")
        check(gmeta == wmeta, "%s: metadata %r" % (fn, gmeta))
    if t2f:
        with open(os.path.join(out, idx_name), "rb") as f:
            text = f.read().decode()
        if hub:
            md = {"total_size": total}
            md.update(meta or {})
            want_text = json.dumps({"metadata": md, "weight_map": t2f}, indent=2)
        else:
            idx = {"metadata": {"total_parameters": params(tensors), "total_size": total},
                   "weight_map": t2f}
            want_text = json.dumps(idx, indent=2, sort_keys=True) + "\n"
        check(text == want_text, "index text (%s, hub=%s):\n%s\n---\n%s" % (max_arg, hub, text[:600], want_text[:600]))
    # join of the output equals convert of the source (with the shards' metadata)
    joined = os.path.join(tmp, "joined.safetensors")
    rc, so, se = run("join", "-q", out, joined)
    check(rc == 0, "join rc %d %s" % (rc, se))
    conv_src = os.path.join(tmp, "src-meta.safetensors")
    m2 = dict(meta or {})
    m2.setdefault("format", "pt")
    write_st(conv_src, tensors, m2)
    conv = os.path.join(tmp, "conv.safetensors")
    rc, so, se = run("convert", conv_src, conv)
    check(rc == 0, "convert rc %d %s" % (rc, se))
    with open(joined, "rb") as a, open(conv, "rb") as b:
        check(a.read() == b.read(), "join == convert (%s)" % max_arg)
    shutil.rmtree(out)
    return len(files)


def main():
    tmp = tempfile.mkdtemp()
    try:
        tensors = make_model()
        total = sum(len(v[2]) for v in tensors.values())
        meta = {"format": "pt", "note": "h\u00e9llo"}
        n = check_split(tmp, tensors, meta, "5GB", 5 * 10**9)
        check(n == 1, "one shard")
        n = check_split(tmp, tensors, meta, "1KB", 1000)
        check(n > 3, "several shards: %d" % n)
        # the big tensor (10240 bytes F32? no: 64*40 of its dtype) is larger
        # than 2KB: it goes alone, listed when met
        n = check_split(tmp, tensors, None, "2KB", 2000, hub=True)
        check(n > 2, "several shards (hub)")
        check_split(tmp, tensors, {"a": "b"}, "0.0015MB", 1500, prefix="diffusion_pytorch_model")
        check_split(tmp, tensors, meta, "700", 700)
        check_split(tmp, tensors, meta, "1KiB", 1024, hub=True)
        check_split(tmp, tensors, meta, "%d" % total, total)

        # the other commands take an index or a folder
        import hashlib
        src = os.path.join(tmp, "src.safetensors")
        write_st(src, tensors, meta)
        out = os.path.join(tmp, "cmds")
        rc, _, se = run("split", "-q", "--max-shard-size", "1KB", src, out)
        idx = os.path.join(out, "model.safetensors.index.json")
        shards = sorted(f for f in os.listdir(out) if f.endswith(".safetensors"))
        for arg in (out, idx):
            rc, so, se = run("check", arg)
            check(rc == 0 and "OK (%d tensors)" % len(tensors) in so, "check %s: %s %s" % (arg, so, se))
            rc, so, se = run("info", "--json", arg)
            j = json.loads(so) if rc == 0 else {}
            check(j.get("tensor_count") == len(tensors) and j.get("shards") == shards,
                  "info --json: %s" % so[:300])
            check(j.get("metadata") == dict(meta), "info metadata %r" % j.get("metadata"))
            rc, so, se = run("info", arg)
            check(rc == 0 and "Shards:" in so, "info text")
            rc, so, se = run("ls", "--json", "--sort", "name", arg)
            names = [t["name"] for t in json.loads(so)] if rc == 0 else []
            check(names == sorted(tensors, key=lambda k: k.encode()), "ls names")
            rc, so, se = run("hash", "--json", "--algo", "sha256", arg)
            lines = [json.loads(x) for x in so.splitlines()] if rc == 0 else []
            want = [hashlib.sha256(open(os.path.join(out, f), "rb").read()).hexdigest() for f in shards]
            check([x.get("sha256") for x in lines] == want, "hash of shards: %s" % so[:200])
            rc, so, se = run("identify", "--json", arg)
            check(rc == 0 and json.loads(so).get("kind") == "unknown", "identify: %s %s" % (so[:200], se))
            conv = os.path.join(tmp, "c.safetensors")
            rc, so, se = run("convert", "-q", arg, conv)
            rc2, _, _ = run("join", "-q", arg, os.path.join(tmp, "j2.safetensors"))
            check(rc == 0 and rc2 == 0 and open(conv, "rb").read() == open(os.path.join(tmp, "j2.safetensors"), "rb").read(),
                  "convert of a model = join: %s" % se)
            # with options: what convert writes from the joined file
            j2 = os.path.join(tmp, "j2.safetensors")
            for opts in (["--dtype", "f16"], ["--dtype", "bf16", "--only", "model.layers.*"],
                         ["--drop", "*.o_proj.*"], ["--dtype", "f32", "--pad", "4096"]):
                want_f, got_f = os.path.join(tmp, "want.safetensors"), conv
                rc1, _, se1 = run("convert", "-q", j2, want_f, *opts)
                rc, so, se = run("convert", "-q", arg, got_f, *opts)
                check(rc == 0 and rc1 == 0 and open(got_f, "rb").read() == open(want_f, "rb").read(),
                      "convert %s of a model = of the joined file: %d %s %s" % (opts, rc, se, se1))
            rc, so, se = run("convert", arg, os.path.join(out, shards[0]))
            check(rc == 2, "convert onto a shard")
        shutil.rmtree(out)

        # hostile inputs for join
        src = os.path.join(tmp, "src.safetensors")
        write_st(src, tensors, meta)
        out = os.path.join(tmp, "h")
        rc, _, se = run("split", "-q", "--max-shard-size", "1KB", src, out)
        check(rc == 0, "split for hostile")
        shards = sorted(f for f in os.listdir(out) if f.endswith(".safetensors"))
        joined = os.path.join(tmp, "j.safetensors")
        # a shard missing: I/O error, no output
        os.rename(os.path.join(out, shards[1]), os.path.join(tmp, "moved"))
        rc, _, se = run("join", "-q", out, joined)
        check(rc == 2 and shards[1] in se and not os.path.exists(joined), "missing shard: %d %s" % (rc, se))
        rc, _, se = run("convert", "-q", out, joined, "--dtype", "f16")
        check(rc == 2 and shards[1] in se and not os.path.exists(joined),
              "convert --dtype, missing shard: %d %s" % (rc, se))
        # a shard failing check: exit 1, named
        with open(os.path.join(tmp, "moved"), "rb") as f:
            data = f.read()
        with open(os.path.join(out, shards[1]), "wb") as f:
            f.write(data[:-1])
        rc, _, se = run("join", "-q", out, joined)
        check(rc == 1 and shards[1] in se and not os.path.exists(joined), "bad shard: %d %s" % (rc, se))
        rc, so, se = run("check", out)
        check(rc == 1, "check of the folder: %d %s %s" % (rc, so, se))
        # weight_map pointing outside the folder: exit 1
        with open(os.path.join(out, shards[1]), "wb") as f:
            f.write(data)
        idx = os.path.join(out, "model.safetensors.index.json")
        with open(idx) as f:
            text = f.read()
        with open(idx, "w") as f:
            f.write(text.replace('"' + shards[0] + '"', '"../h/' + shards[0] + '"', 1))
        rc, _, se = run("join", "-q", idx, joined)
        check(rc == 1 and "inside" in se and not os.path.exists(joined), "escape: %d %s" % (rc, se))
        # a tensor listed twice: exit 1
        with open(idx, "w") as f:
            f.write(text.replace('"weight_map": {', '"weight_map": {\n    "scalar": "%s",' % shards[0], 1))
        rc, _, se = run("join", "-q", idx, joined)
        check(rc == 1 and "twice" in se and not os.path.exists(joined), "twice: %d %s" % (rc, se))
        with open(idx, "w") as f:
            f.write(text)
        rc, _, se = run("join", "-q", out, joined)
        check(rc == 0 and os.path.exists(joined), "join restored: %s" % se)
        # the output must not be one of the shards
        rc, _, se = run("join", "-q", out, os.path.join(out, shards[0]))
        check(rc == 2, "join onto a shard: %d" % rc)
        # bad sizes and usage
        for bad in ("", "GB", "5XB", "-1GB", "0", "1.5", "inf", "nanGB", "1e400GB"):
            rc, _, se = run("split", "--max-shard-size", bad, src, os.path.join(tmp, "nope"))
            check(rc == 2 and not os.path.exists(os.path.join(tmp, "nope")), "size %r: %d" % (bad, rc))
        rc, _, _ = run("split", src)
        check(rc == 2, "split usage")
        rc, _, _ = run("join", src)
        check(rc == 2, "join usage")
        for cmd in ("split", "join"):
            rc, so, _ = run(cmd, "--help")
            check(rc == 0 and "Usage" in so, cmd + " --help")
    finally:
        shutil.rmtree(tmp)
    print("# passed %d failed %d" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

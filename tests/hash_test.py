"""`safetensors hash` against independent computations: Python's hashlib and
zlib, the A1111 / kohya rules written out here from their code, Civitai's
formatting (civitai/model-scanner HashTask.cs), and b3sum when installed."""
import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

BIN = os.environ.get("ST_BIN", "build/safetensors")
B3SUM = shutil.which("b3sum")
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what)


# ---- the reference rules ----

def autov1(data):
    # A1111 modules/sd_models.py model_hash: seek(0x100000), read(0x10000).
    return hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]


def autov3(data):
    # A1111 modules/hashes.py addnet_hash_safetensors / kohya train_util.
    n = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[n + 8:]).hexdigest()


def expected(data, safetensors):
    sha = hashlib.sha256(data).hexdigest()
    crc = zlib.crc32(data) & 0xFFFFFFFF
    e = {"sha256": sha, "autov1": autov1(data), "autov2": sha[:10],
         "autov3": autov3(data) if safetensors else None, "crc32": "%08x" % crc}
    c = {"SHA256": sha.upper(), "AutoV1": autov1(data).upper() if len(data) >= 2 * 1024 * 1024 else None,
         "AutoV2": sha[:10].upper(), "AutoV3": e["autov3"].upper() if safetensors else None,
         "CRC32": struct.pack("<I", crc).hex().upper()}
    return e, c


def b3(path):
    if not B3SUM:
        return None
    out = subprocess.run([B3SUM, "--no-names", path], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


# ---- safetensors files as the reference serializer writes them ----

DTYPE_ORDER = {"F16": 13, "BF16": 14, "F32": 17}
DTYPE_SIZE = {"F16": 2, "BF16": 2, "F32": 4}


def serialize(tensors, metadata):
    """tensors: {name: (dtype, shape, bytes)}. Rust safetensors order:
    dtype descending, then name; metadata first, keys sorted; compact JSON;
    spaces to a multiple of 8."""
    order = sorted(tensors, key=lambda k: (-DTYPE_ORDER[tensors[k][0]], k.encode()))
    header = {}
    if metadata is not None:
        header["__metadata__"] = dict(sorted(metadata.items()))
    off = 0
    for k in order:
        dt, shape, blob = tensors[k]
        header[k] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(blob)]}
        off += len(blob)
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(tensors[k][2] for k in order)


def lora_tensors(rng, rank=8):
    t = {}
    for i in range(12):
        m = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_%d_attn2_to_k" % i
        t[m + ".alpha"] = ("F16", [], rng.randbytes(2))
        t[m + ".lora_down.weight"] = ("F16", [rank, 768], rng.randbytes(2 * rank * 768))
        t[m + ".lora_up.weight"] = ("F16", [320, rank], rng.randbytes(2 * 320 * rank))
    t["big.weight"] = ("F32", [640, 1024], rng.randbytes(4 * 640 * 1024))
    return t


def run(args, stdin=None):
    return subprocess.run([BIN] + args, capture_output=True, input=stdin)


def hash_json(paths, extra=()):
    out = run(["hash", "--json", "--algo", "all"] + list(extra) + paths)
    check(out.returncode == 0, "hash exit %d: %s" % (out.returncode, out.stderr[-300:]))
    return [json.loads(l) for l in out.stdout.decode().splitlines()]


def main():
    rng = random.Random(1234)
    tmp = tempfile.mkdtemp()
    try:
        files = {}  # name -> (bytes, is_safetensors)
        M = 1024 * 1024
        for name, size in [("empty", 0), ("one", 1), ("small", 1000), ("under1m", M - 1),
                           ("exact1m", M), ("partialwin", M + 100), ("fullwin", M + 0x10000 + 7),
                           ("under2m", 2 * M - 1), ("exact2m", 2 * M), ("big", 9 * M + 12345)]:
            files[name] = (rng.randbytes(size), False)
        files["hello"] = (b"hello world", False)
        # valid safetensors files: a small one and one spanning several reads
        files["st_small"] = (serialize({"a": ("F32", [2, 2], rng.randbytes(16))}, None), True)
        files["st_big"] = (serialize(lora_tensors(rng), {"ss_network_dim": "8"}), True)
        # a plausible length prefix but not a valid file: no autov3
        files["st_invalid"] = (b"\x08\x00\x00\x00\x00\x00\x00\x00{notjson" + rng.randbytes(100), False)
        paths = []
        for name, (data, _) in files.items():
            p = os.path.join(tmp, name)
            with open(p, "wb") as f:
                f.write(data)
            paths.append(p)

        for extra in ((), ("--threads", "1"), ("--threads", "3")):
            plain = hash_json(paths, extra)
            civ = hash_json(paths, ("--civitai",) + extra)
            check(len(plain) == len(files) and len(civ) == len(files), "one line per file")
            for j, jc, (name, (data, st)) in zip(plain, civ, files.items()):
                e, c = expected(data, st)
                tag = "%s %s" % (name, " ".join(extra))
                check(j["size"] == len(data), tag + ": size")
                check(j["safetensors"] == st, tag + ": safetensors verdict")
                for k, v in e.items():
                    check(j[k] == v, "%s: %s %r want %r" % (tag, k, j[k], v))
                for k, v in c.items():
                    check(jc["hashes"][k] == v, "%s: civitai %s %r want %r" % (tag, k, jc["hashes"][k], v))
                bl = b3(os.path.join(tmp, name))
                if bl:
                    check(j["blake3"] == bl, tag + ": blake3 = b3sum")
                    check(jc["hashes"]["BLAKE3"] == bl.upper(), tag + ": civitai BLAKE3")
                check(len(j["blake3"]) == 64 and j["blake3"] == jc["hashes"]["BLAKE3"].lower(),
                      tag + ": blake3 in both styles")
                if st:
                    n = int.from_bytes(data[:8], "little")
                    check(j["data_offset"] == n + 8, tag + ": data offset")

        # Civitai's own test (model-scanner HashTaskTests.cs): "hello world".
        jc = hash_json([os.path.join(tmp, "hello")], ("--civitai",))[0]["hashes"]
        check(jc["CRC32"] == "85114A0D", "Civitai CRC32 of hello world")
        check(jc["BLAKE3"] == "D74981EFA70A0C880B8D8C1985D075DBCBF679B99A5F9914E5AAF96B831A9E24",
              "Civitai BLAKE3 of hello world")
        check(jc["AutoV1"] is None and jc["AutoV2"] == "B94D27B993", "Civitai AutoV1/AutoV2 of hello world")

        # Default list and text output.
        d = run(["hash", os.path.join(tmp, "st_big")])
        txt = d.stdout.decode()
        e, _ = expected(files["st_big"][0], True)
        check(d.returncode == 0 and e["sha256"] in txt and e["autov3"] in txt and e["autov1"] in txt,
              "default text output has sha256, autov1, autov3")
        check("crc32" not in txt and "blake3" not in txt, "default list leaves out crc32 and blake3")
        one = run(["hash", "--algo", "crc32", "--json", os.path.join(tmp, "big")])
        jo = json.loads(one.stdout)
        check("sha256" not in jo and jo["crc32"] == e_crc(files["big"][0]), "--algo crc32 alone")

        # stdin
        s = run(["hash", "--json", "--algo", "sha256,crc32", "-"], stdin=files["big"][0])
        js = json.loads(s.stdout)
        check(js["sha256"] == hashlib.sha256(files["big"][0]).hexdigest(), "stdin sha256")
        check(js["crc32"] == e_crc(files["big"][0]), "stdin crc32")

        # kohya's embedded hashes: computed over the file with only ss_* metadata.
        t = lora_tensors(rng)
        ss = {"ss_network_dim": "8", "ss_base_model_version": "sd_v1"}
        ss_only = serialize(t, ss)
        check(len(ss_only) > 0x110000, "test LoRA is larger than the autov1 window")
        model_hash = autov3(ss_only)
        legacy = autov1(ss_only)
        meta = dict(ss)
        meta.update({"sshs_model_hash": model_hash, "sshs_legacy_hash": legacy,
                     "modelspec.title": "a title that moves the data", "modelspec.hash_sha256": "0x" + model_hash})
        good = os.path.join(tmp, "kohya_good.safetensors")
        with open(good, "wb") as f:
            f.write(serialize(t, meta))
        meta["sshs_model_hash"] = "0" * 64
        meta["sshs_legacy_hash"] = "deadbeef"
        meta["modelspec.hash_sha256"] = "1234"
        bad = os.path.join(tmp, "kohya_bad.safetensors")
        with open(bad, "wb") as f:
            f.write(serialize(t, meta))
        jg, jb = hash_json([good, bad])
        eg = jg["embedded"]
        check(eg["sshs_model_hash"]["matches"] is True, "sshs_model_hash matches autov3")
        check(eg["sshs_legacy_hash"]["matches"] is True, "sshs_legacy_hash matches the ss_*-only file")
        check(eg["modelspec.hash_sha256"]["matches"] is True and eg["modelspec.hash_sha256"]["matched"] == "autov3",
              "modelspec.hash_sha256 is the data hash")
        check(autov1(open(good, "rb").read()) != legacy, "the legacy hash differs from the file's autov1")
        eb = jb["embedded"]
        check(eb["sshs_model_hash"]["matches"] is False, "stale sshs_model_hash")
        check(eb["sshs_legacy_hash"]["matches"] is False, "stale sshs_legacy_hash")
        check(eb["modelspec.hash_sha256"]["matches"] is False, "wrong modelspec.hash_sha256")
        tg = run(["hash", good]).stdout.decode()
        check("sshs_model_hash" in tg and "matches" in tg, "text output shows sshs_model_hash")
        tb = run(["hash", bad]).stdout.decode()
        check("DOES NOT MATCH" in tb, "text output flags a stale hash")

        # errors
        m = run(["hash", os.path.join(tmp, "missing")])
        check(m.returncode == 2 and b"missing" in m.stderr, "missing file: exit 2")
        m = run(["hash", tmp])
        check(m.returncode == 2, "directory: exit 2")
        m = run(["hash", "--algo", "md5", paths[0]])
        check(m.returncode == 2, "unknown algorithm: usage error")
        m = run(["hash"])
        check(m.returncode == 2, "no file: usage error")
        m = run(["hash", "--threads", "0", paths[0]])
        check(m.returncode == 2, "--threads 0: usage error")
    finally:
        shutil.rmtree(tmp)
    print("# passed %d failed %d" % (passed, failed))
    return 1 if failed else 0


def e_crc(data):
    return "%08x" % (zlib.crc32(data) & 0xFFFFFFFF)


if __name__ == "__main__":
    sys.exit(main())

"""GGUF output of `safetensors convert IN OUT.gguf --quant TYPE`, judged by
an independent reader written here from ggml's docs/gguf.md (struct only):
header, KV pairs, tensor infos in ggml's dimension order, alignment, file
size = header + the tensors' block sizes padded to 32. Tensor types follow
city96's convert.py + patched llama-quantize rules (checked by name on a
Flux-shaped and an SD1-shaped model), the SD1 reshape and folded 5-D tensors
carry comfy.gguf.orig_shape as ComfyUI-GGUF's loader reads it (ARRAY of
INT32), and Q8_0 / Q4_0 bytes equal numpy reimplementations of ggml's
quantize_row_q8_0_ref / quantize_row_q4_0_ref; K-quants dequantize close to
the input. Bad input: a diffusers layout, an integer tensor, an unknown
type, OUT = IN: clear errors, no output."""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from testlib import check, finish  # noqa: E402

BIN = os.environ["ST_BIN"]



def save(path, tensors, dtype=None):
    hdr, off, blobs = {}, 0, []
    names = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
             np.dtype(np.int64): "I64"}
    for n in sorted(tensors):
        a = tensors[n]
        b = a.tobytes()
        hdr[n] = {"dtype": dtype.get(n, names[a.dtype]) if dtype else names[a.dtype],
                  "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


# ---- an independent GGUF reader (docs/gguf.md) ----

BLOCK = {0: (1, 4), 1: (1, 2), 30: (1, 2), 8: (32, 34), 2: (32, 18), 3: (32, 20), 6: (32, 22),
         7: (32, 24), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176),
         14: (256, 210)}
SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
          11: "<q", 12: "<d"}


class Reader:
    def __init__(self, path):
        self.b = open(path, "rb").read()
        self.p = 0
        magic, version, nt, nkv = struct.unpack_from("<4sIQQ", self.b, 0)
        assert magic == b"GGUF", magic
        self.version = version
        self.p = 24
        self.kv = {}
        self.kv_types = {}
        for _ in range(nkv):
            k = self.string()
            t = self.u32()
            self.kv_types[k] = t
            self.kv[k] = self.value(t)
        self.tensors = []
        for _ in range(nt):
            name = self.string()
            nd = self.u32()
            ne = [self.u64() for _ in range(nd)]
            typ = self.u32()
            off = self.u64()
            self.tensors.append((name, ne, typ, off))
        align = self.kv.get("general.alignment", 32)
        self.data = (self.p + align - 1) // align * align
        self.align = align

    def u32(self):
        v = struct.unpack_from("<I", self.b, self.p)[0]
        self.p += 4
        return v

    def u64(self):
        v = struct.unpack_from("<Q", self.b, self.p)[0]
        self.p += 8
        return v

    def string(self):
        n = self.u64()
        s = self.b[self.p:self.p + n].decode("utf-8")
        self.p += n
        return s

    def value(self, t):
        if t == 8:
            return self.string()
        if t == 9:
            et = self.u32()
            n = self.u64()
            return (et, [self.value(et) for _ in range(n)])
        v = struct.unpack_from(SCALAR[t], self.b, self.p)[0]
        self.p += struct.calcsize(SCALAR[t])
        return v

    def nbytes(self, ne, typ):
        blk, size = BLOCK[typ]
        n = 1
        for d in ne:
            n *= d
        assert ne[0] % blk == 0
        return n // blk * size

    def raw(self, t):
        name, ne, typ, off = t
        return self.b[self.data + off:self.data + off + self.nbytes(ne, typ)]


def f16(x):
    return np.frombuffer(x, dtype=np.float16).astype(np.float32)


def deq_q8_0(raw, n):
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 34)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    q = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
    return (q * d).reshape(-1)[:n]


def deq_q4_0(raw, n):
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 18)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    qs = blocks[:, 2:]
    lo = (qs & 0x0F).astype(np.int8) - 8
    hi = (qs >> 4).astype(np.int8) - 8
    return (np.concatenate([lo, hi], axis=1).astype(np.float32) * d).reshape(-1)[:n]


def roundf(x):  # C's roundf: half away from zero
    return np.sign(x) * np.floor(np.abs(x) + np.float32(0.5))


def ref_q8_0(x):
    """ggml's quantize_row_q8_0_ref."""
    out = bytearray()
    for blk in x.reshape(-1, 32).astype(np.float32):
        amax = np.float32(np.max(np.abs(blk)))
        d = np.float32(amax / np.float32(127))
        idd = np.float32(1) / d if d else np.float32(0)
        q = roundf(blk * idd).astype(np.int8)
        out += np.float16(d).tobytes() + q.tobytes()
    return bytes(out)


def ref_q4_0(x):
    """ggml's quantize_row_q4_0_ref."""
    out = bytearray()
    for blk in x.reshape(-1, 32).astype(np.float32):
        i = int(np.argmax(np.abs(blk)))  # the first of the largest magnitude
        mx = blk[i]
        d = np.float32(mx / np.float32(-8))
        idd = np.float32(1) / d if d else np.float32(0)
        q = np.minimum(15, (blk * idd + np.float32(8.5)).astype(np.int8)).astype(np.uint8)
        out += np.float16(d).tobytes() + (q[:16] | (q[16:] << 4)).astype(np.uint8).tobytes()
    return bytes(out)


def run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True)


TYPE = {"f32": 0, "f16": 1, "bf16": 30, "q8_0": 8, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7,
        "q2_k": 10, "q3_k": 11, "q4_k": 12, "q5_k": 13, "q6_k": 14}

with tempfile.TemporaryDirectory() as tmp:
    rng = np.random.default_rng(11)

    # ---- a Flux-shaped model ----
    flux = {}
    for blk in range(6):
        flux[f"double_blocks.{blk}.img_attn.proj.weight"] = rng.standard_normal((256, 256))
        flux[f"double_blocks.{blk}.img_attn.qkv.weight"] = rng.standard_normal((768, 256))
        flux[f"double_blocks.{blk}.img_attn.qkv.bias"] = rng.standard_normal((768,))
        flux[f"double_blocks.{blk}.img_attn.norm.query_norm.scale"] = rng.standard_normal((128,))
        flux[f"double_blocks.{blk}.img_mlp.2.weight"] = rng.standard_normal((256, 512))
    flux["img_in.weight"] = rng.standard_normal((256, 64))
    flux["final_layer.linear.weight"] = rng.standard_normal((64, 256))
    flux["guidance_in.in_layer.weight"] = rng.standard_normal((256, 256))
    flux["odd.weight"] = rng.standard_normal((64, 96))
    flux["small.weight"] = rng.standard_normal((16, 32))
    flux = {k: v.astype(np.float32) for k, v in flux.items()}
    src = os.path.join(tmp, "flux.safetensors")
    save(src, flux)
    for quant in ("q8_0", "q4_0", "q4_k_s", "q4_k_m", "q3_k_m", "q2_k", "q6_k", "f16", "bf16"):
        out = os.path.join(tmp, "flux-%s.gguf" % quant)
        p = run("convert", src, out, "--quant", quant, "-q")
        check(p.returncode == 0, "flux %s: exit %d %s" % (quant, p.returncode, p.stderr))
        if p.returncode:
            continue
        r = Reader(out)
        check(r.version == 3, "flux %s: version 3" % quant)
        check(r.kv.get("general.architecture") == "flux" and r.kv_types["general.architecture"] == 8,
              "flux %s: general.architecture" % quant)
        check(r.kv.get("general.alignment") == 32 and r.kv_types["general.alignment"] == 4,
              "flux %s: general.alignment u32 32" % quant)
        check(r.kv.get("general.quantization_version") == 2, "flux %s: quantization_version" % quant)
        names = [t[0] for t in r.tensors]
        check(names == sorted(flux), "flux %s: every tensor, in name order" % quant)
        end = r.data
        for t in r.tensors:
            check(t[3] % 32 == 0, "flux %s: %s aligned" % (quant, t[0]))
            end = max(end, r.data + t[3] + r.nbytes(t[1], t[2]))
        size = os.path.getsize(out)
        check(size == (end + 31) // 32 * 32, "flux %s: size %d = header + padded blocks (%d)"
              % (quant, size, end))
        types = {t[0]: t[2] for t in r.tensors}
        shapes = {t[0]: t[1] for t in r.tensors}
        check(shapes["double_blocks.0.img_attn.qkv.weight"] == [256, 768],
              "flux %s: ggml dimension order" % quant)
        # convert.py: 1-D and small F32 tensors stay F32
        check(types["double_blocks.0.img_attn.qkv.bias"] == 0 and types["small.weight"] == 0,
              "flux %s: 1-D and <= 1024 elements in F32" % quant)
        base16 = TYPE["bf16"] if quant == "bf16" else TYPE["f16"]
        # lcpp.patch: Flux's embedders and final layer are never quantized
        for k in ("img_in.weight", "final_layer.linear.weight", "guidance_in.in_layer.weight"):
            check(types[k] == base16, "flux %s: %s kept %d (got %d)" % (quant, k, base16, types[k]))
        if quant in ("f16", "bf16"):
            check(types["double_blocks.0.img_attn.proj.weight"] == base16, "flux %s: no quant" % quant)
            continue
        base = {"q8_0": "q8_0", "q4_0": "q4_0", "q4_k_s": "q4_k", "q4_k_m": "q4_k",
                "q3_k_m": "q3_k", "q2_k": "q2_k", "q6_k": "q6_k"}[quant]
        check(types["double_blocks.0.img_attn.proj.weight"] == TYPE[base],
              "flux %s: proj in %s" % (quant, base))
        want_qkv = {"q4_k_m": "q5_k", "q3_k_m": "q4_k"}.get(quant, base)
        check(types["double_blocks.3.img_attn.qkv.weight"] == TYPE[want_qkv],
              "flux %s: fused qkv bumped to %s (got %d)" % (quant, want_qkv,
                                                            types["double_blocks.3.img_attn.qkv.weight"]))
        # rows of 96: a 256-block type falls back to F16, 32-block types fit
        check(types["odd.weight"] == (1 if base.endswith("_k") else TYPE[base]),
              "flux %s: odd rows (got %d)" % (quant, types["odd.weight"]))
        x = flux["double_blocks.0.img_attn.proj.weight"]
        t = [t for t in r.tensors if t[0] == "double_blocks.0.img_attn.proj.weight"][0]
        raw = r.raw(t)
        if quant == "q8_0":
            check(raw == ref_q8_0(x), "flux q8_0: bytes = quantize_row_q8_0_ref")
            err = np.max(np.abs(deq_q8_0(raw, x.size) - x.reshape(-1)))
            check(err <= np.max(np.abs(x)) / 127, "flux q8_0: dequantized within a step (%g)" % err)
        if quant == "q4_0":
            check(raw == ref_q4_0(x), "flux q4_0: bytes = quantize_row_q4_0_ref")
        # every tensor back through the library's reader of GGUF, when there
        # is one, is checked elsewhere; here: sizes of the k-quant blocks
        check(len(raw) == r.nbytes(t[1], t[2]), "flux %s: block bytes" % quant)

    # q4_k_s: the first four attention-v tensors in Q5_K (none in Flux's
    # names), ffn down in Q5_K: an SD1 model has both (to_v, ff.net.2)
    sd = {}
    pre = "model.diffusion_model."
    for i in (3, 6, 9):
        sd[pre + "input_blocks.%d.0.op.weight" % i] = rng.standard_normal((32, 32, 3, 3))
    for i, j in ((2, 1), (5, 2), (8, 2)):
        sd[pre + "output_blocks.%d.%d.conv.weight" % (i, j)] = rng.standard_normal((32, 32, 3, 3))
    for b in range(6):
        base = pre + "input_blocks.%d.1.transformer_blocks.0." % (b + 1)
        sd[base + "attn1.to_v.weight"] = rng.standard_normal((256, 256))
        sd[base + "ff.net.2.weight"] = rng.standard_normal((256, 1024))
        sd[base + "attn1.to_q.weight"] = rng.standard_normal((256, 256))
    sd[pre + "input_blocks.1.1.proj_in.weight"] = rng.standard_normal((320, 320, 1, 1))
    sd[pre + "time_embed.0.weight"] = rng.standard_normal((1280, 320))
    sd[pre + "input_blocks.0.0.weight"] = rng.standard_normal((320, 4, 3, 3))
    sd["first_stage_model.decoder.conv_in.weight"] = rng.standard_normal((512, 4, 3, 3))
    sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = np.arange(77)[None]
    sd = {k: (v.astype(np.int64) if "position_ids" in k else v.astype(np.float32))
          for k, v in sd.items()}
    src = os.path.join(tmp, "sd1.safetensors")
    save(src, sd)
    out = os.path.join(tmp, "sd1.gguf")
    p = run("convert", src, out, "--quant", "q4_k_s")
    check(p.returncode == 0, "sd1 q4_k_s: exit %d %s" % (p.returncode, p.stderr))
    r = Reader(out)
    check(r.kv.get("general.architecture") == "sd1", "sd1: architecture sd1")
    check(r.kv.get("general.file_type") == 14, "sd1: general.file_type 14 (Q4_K_S)")
    check(r.kv.get("safetensors.name_prefix") == pre, "sd1: the stripped prefix recorded")
    names = [t[0] for t in r.tensors]
    check(all(not n.startswith("model.") for n in names) and len(names) == len(sd) - 2,
          "sd1: model.diffusion_model. stripped, VAE and text encoder left out")
    check("left out 2 tensors" in p.stdout, "sd1: the summary says what was left out (%s)" % p.stdout)
    types = {t[0]: t[2] for t in r.tensors}
    shapes = {t[0]: t[1] for t in r.tensors}
    to_v = sorted(n for n in names if n.endswith("to_v.weight"))
    check([types[n] for n in to_v] == [13, 13, 13, 13, 12, 12],
          "sd1 q4_k_s: the first four to_v in Q5_K, then Q4_K (%s)" % [types[n] for n in to_v])
    ffn = sorted(n for n in names if n.endswith("ff.net.2.weight"))
    check(all(types[n] == 13 for n in ffn), "sd1 q4_k_s: ff.net.2 in Q5_K")
    check(types["time_embed.0.weight"] == 1 and types["input_blocks.0.0.weight"] in (0, 1),
          "sd1: time_embed and input_blocks.0.0 never quantized")
    # convert.py's SD1 reshape: 320x320x1x1 (last dim 1) -> rows of 256
    k = "input_blocks.1.1.proj_in.weight"
    check(shapes[k] == [256, 320 * 320 // 256], "sd1: proj_in stored as rows of 256 (%s)" % shapes[k])
    check(r.kv.get("comfy.gguf.orig_shape." + k) == (5, [320, 320, 1, 1]) and
          r.kv_types["comfy.gguf.orig_shape." + k] == 9,
          "sd1: comfy.gguf.orig_shape ARRAY of INT32 (%s)" % (r.kv.get("comfy.gguf.orig_shape." + k),))
    check(types[k] == 12, "sd1: the reshaped 2-D tensor is quantized (got %d)" % types[k])

    # a Wan-shaped model with a 5-D patch embedding: folded, shape recorded
    wan = {"blocks.0.self_attn.norm_q.weight": rng.standard_normal((128,)),
           "text_embedding.2.weight": rng.standard_normal((128, 128)),
           "head.modulation": rng.standard_normal((1, 2, 128)),
           "patch_embedding.weight": rng.standard_normal((128, 16, 1, 2, 2)),
           "blocks.0.ffn.2.weight": rng.standard_normal((128, 512))}
    wan = {k: v.astype(np.float32) for k, v in wan.items()}
    src = os.path.join(tmp, "wan.safetensors")
    save(src, wan)
    out = os.path.join(tmp, "wan.gguf")
    p = run("convert", src, out, "--quant", "q8_0", "-q")
    check(p.returncode == 0, "wan: exit %d %s" % (p.returncode, p.stderr))
    r = Reader(out)
    check(r.kv.get("general.architecture") == "wan", "wan: architecture")
    sh = {t[0]: t[1] for t in r.tensors}
    check(len(sh["patch_embedding.weight"]) == 4 and
          np.prod(sh["patch_embedding.weight"]) == 128 * 16 * 4,
          "wan: 5-D folded into 4 dimensions (%s)" % sh["patch_embedding.weight"])
    check(r.kv.get("comfy.gguf.orig_shape.patch_embedding.weight") == (5, [128, 16, 1, 2, 2]),
          "wan: the 5-D shape recorded")
    ty = {t[0]: t[2] for t in r.tensors}
    check(ty["head.modulation"] == 0, "wan: .modulation kept F32 (keys_hiprec)")
    check(ty["blocks.0.ffn.2.weight"] == 8, "wan: ffn in Q8_0")

    # ---- GGUF back to safetensors ----
    def load_st(path):
        b = open(path, "rb").read()
        n = struct.unpack("<Q", b[:8])[0]
        h = json.loads(b[8:8 + n])
        meta = h.pop("__metadata__", {})
        out = {}
        for k, v in h.items():
            dt = {"F32": np.float32, "F16": np.float16, "BF16": None}[v["dtype"]]
            raw = b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]
            if dt is None:
                a = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                a = np.frombuffer(raw, dt).astype(np.float32)
            out[k] = a.reshape(v["shape"])
        return out, meta

    for quant in ("q8_0", "q4_0"):
        g = os.path.join(tmp, "flux-%s.gguf" % quant)
        back = os.path.join(tmp, "back-%s.safetensors" % quant)
        p = run("convert", g, back, "-q")
        check(p.returncode == 0, "gguf -> safetensors %s: %d %s" % (quant, p.returncode, p.stderr))
        got, meta = load_st(back)
        r = Reader(g)
        check(sorted(got) == sorted(flux), "back %s: the same names" % quant)
        check(meta.get("gguf.general.architecture") == "flux", "back %s: metadata carried" % quant)
        for name, ne, typ, off in r.tensors:
            want_shape = list(flux[name].shape)
            check(list(got[name].shape) == want_shape, "back %s: %s shape" % (quant, name))
            raw = r.raw((name, ne, typ, off))
            if typ == 0:
                want = np.frombuffer(raw, np.float32)
            elif typ == 1:
                want = np.frombuffer(raw, np.float16).astype(np.float32)
            elif typ == 8:
                want = deq_q8_0(raw, flux[name].size)
            elif typ == 2:
                want = deq_q4_0(raw, flux[name].size)
            else:
                continue
            check(np.array_equal(got[name].reshape(-1), want),
                  "back %s: %s = ggml's dequantization" % (quant, name))
    # shapes restored from comfy.gguf.orig_shape, prefix restored
    back = os.path.join(tmp, "back-sd1.safetensors")
    p = run("convert", os.path.join(tmp, "sd1.gguf"), back, "--dtype", "f16", "-q")
    check(p.returncode == 0, "sd1 gguf -> safetensors: %d %s" % (p.returncode, p.stderr))
    got, _ = load_st(back)
    k = pre + "input_blocks.1.1.proj_in.weight"
    check(k in got and list(got[k].shape) == [320, 320, 1, 1],
          "sd1 back: prefix and the 4-D shape restored")
    k = pre + "time_embed.0.weight"
    check(k in got and np.array_equal(got[k], sd[k].astype(np.float16).astype(np.float32)),
          "sd1 back: an F16 tensor exact")
    back = os.path.join(tmp, "back-wan.safetensors")
    p = run("convert", os.path.join(tmp, "wan.gguf"), back, "-q")
    got, _ = load_st(back)
    check(p.returncode == 0 and list(got["patch_embedding.weight"].shape) == [128, 16, 1, 2, 2],
          "wan back: the 5-D shape restored")
    check(np.array_equal(got["patch_embedding.weight"],
                         wan["patch_embedding.weight"].astype(np.float16).astype(np.float32)),
          "wan back: the 5-D tensor's values")

    # ---- hostile GGUF files: check says invalid (exit 1, code gguf) ----
    def gstr(s):
        b = s.encode() if isinstance(s, str) else s
        return struct.pack("<Q", len(b)) + b

    def gguf(kvs=b"", nkv=0, infos=b"", nt=0, data=b"", version=3, pad=True):
        head = b"GGUF" + struct.pack("<IQQ", version, nt, nkv) + kvs + infos
        if pad:
            head += b"\0" * (-len(head) % 32)
        return head + data

    def info(name, ne, typ, off):
        return gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne) \
            + struct.pack("<IQ", typ, off)

    ok = gguf(infos=info("a", [32], 0, 0), nt=1, data=b"\0" * 128)
    hostile = {
        "truncated header": ok[:20],
        "bad magic": b"GGUX" + ok[4:],
        "version 1": gguf(version=1),
        "huge tensor count": b"GGUF" + struct.pack("<IQQ", 3, 1 << 60, 0),
        "huge kv count": b"GGUF" + struct.pack("<IQQ", 3, 0, 1 << 40),
        "string past the end": gguf(kvs=struct.pack("<Q", 1 << 50) + b"x", nkv=1, pad=False),
        "key not UTF-8": gguf(kvs=gstr(b"\xff\xfe") + struct.pack("<IB", 0, 1), nkv=1),
        "unknown value type": gguf(kvs=gstr("k") + struct.pack("<I", 99), nkv=1),
        "array longer than the file": gguf(kvs=gstr("k") + struct.pack("<IIQ", 9, 4, 1 << 40), nkv=1),
        "array of arrays": gguf(kvs=gstr("k") + struct.pack("<IIQ", 9, 9, 1), nkv=1),
        "alignment not a power of two": gguf(kvs=gstr("general.alignment") + struct.pack("<II", 4, 24),
                                             nkv=1),
        "alignment of the wrong type": gguf(kvs=gstr("general.alignment") + struct.pack("<IQ", 10, 32),
                                            nkv=1),
        "five dimensions": gguf(infos=info("a", [1, 1, 1, 1, 32], 0, 0), nt=1, data=b"\0" * 128),
        "zero dimensions": gguf(infos=info("a", [], 0, 0), nt=1, data=b"\0" * 128),
        "unknown tensor type": gguf(infos=info("a", [32], 77, 0), nt=1, data=b"\0" * 128),
        "row not filling blocks": gguf(infos=info("a", [33], 8, 0), nt=1, data=b"\0" * 128),
        "data past the end": gguf(infos=info("a", [64], 0, 0), nt=1, data=b"\0" * 128),
        "misaligned offset": gguf(infos=info("a", [8], 0, 4), nt=1, data=b"\0" * 128),
        "overlapping tensors": gguf(infos=info("a", [16], 0, 0) + info("b", [16], 0, 32), nt=2,
                                    data=b"\0" * 128),
        "a name twice": gguf(infos=info("a", [8], 0, 0) + info("a", [8], 0, 32), nt=2,
                             data=b"\0" * 128),
        "dimensions overflow": gguf(infos=info("a", [1 << 40, 1 << 40], 0, 0), nt=1, data=b"\0" * 128),
        "a key twice": gguf(kvs=(gstr("k") + struct.pack("<IB", 0, 1)) * 2, nkv=2),
        "a key holding NUL": gguf(kvs=gstr(b"a\0b") + struct.pack("<IB", 0, 1), nkv=1),
        "a name holding NUL": gguf(infos=info(b"a\0", [8], 0, 0), nt=1, data=b"\0" * 128),
    }
    good = os.path.join(tmp, "good.gguf")
    open(good, "wb").write(ok)
    p = run("check", good)
    check(p.returncode == 0, "a minimal valid GGUF passes check: %s %s" % (p.stdout, p.stderr))
    for what, data in hostile.items():
        path = os.path.join(tmp, "hostile.gguf")
        open(path, "wb").write(data)
        p = run("check", "--json", path)
        try:
            v = json.loads(p.stdout)
        except ValueError:
            v = {}
        # without the magic it is not a GGUF file: judged as safetensors
        code_ok = v.get("error") == "gguf" or (what == "bad magic" and v.get("error"))
        check(p.returncode == 1 and code_ok and v.get("message"),
              "hostile GGUF (%s): exit %d %s %s" % (what, p.returncode, p.stdout, p.stderr))
        p = run("convert", path, os.path.join(tmp, "h.safetensors"))
        check(p.returncode == 1 and not os.path.exists(os.path.join(tmp, "h.safetensors")),
              "hostile GGUF (%s): convert refuses, exit %d" % (what, p.returncode))

    # ---- identify on GGUF: the names as converted from real layouts ----
    import sdlayouts

    def sparse_gguf(path, layout, prefix, arch):
        kvs = gstr("general.architecture") + struct.pack("<I", 8) + gstr(arch)
        nkv = 1
        if prefix:
            kvs += gstr("safetensors.name_prefix") + struct.pack("<I", 8) + gstr(prefix)
            nkv += 1
        infos, off, nt = b"", 0, 0
        for name, (dt, shape) in layout.tensors.items():
            if not name.startswith(prefix):
                continue
            n = 1
            for d in shape:
                n *= d
            infos += info(name[len(prefix):], list(reversed(shape)), 1, off)
            off += (2 * n + 31) // 32 * 32
            nt += 1
        head = b"GGUF" + struct.pack("<IQQ", 3, nt, nkv) + kvs + infos
        head += b"\0" * (-len(head) % 32)
        with open(path, "wb") as f:
            f.write(head)
            f.truncate(len(head) + off)

    for fam, layout, arch in (("sd1", sdlayouts.sd1_unet(), "sd1"),
                              ("sdxl", sdlayouts.sdxl_unet(), "sdxl"),
                              ("flux", sdlayouts.flux(), "flux")):
        path = os.path.join(tmp, "id-%s.gguf" % fam)
        sparse_gguf(path, layout, "model.diffusion_model.", arch)
        p = run("identify", "--json", path)
        try:
            v = json.loads(p.stdout)
        except ValueError:
            v = {}
        check(p.returncode == 0 and v.get("family") == fam,
              "identify GGUF %s: %s" % (fam, p.stdout[:300]))

    # ---- bad input ----
    diff = {"transformer_blocks.0.attn.norm_added_k.weight": np.ones(64, np.float32),
            "double_blocks.0.img_attn.proj.weight": np.ones((64, 64), np.float32)}
    src = os.path.join(tmp, "diffusers.safetensors")
    save(src, diff)
    out = os.path.join(tmp, "x.gguf")
    p = run("convert", src, out, "--quant", "q8_0")
    check(p.returncode == 2 and "diffusers" in p.stderr and not os.path.exists(out),
          "diffusers layout refused: %d %s" % (p.returncode, p.stderr))
    p = run("convert", os.path.join(tmp, "flux.safetensors"), out, "--quant", "q9_k")
    check(p.returncode == 2 and "q9_k" in p.stderr and not os.path.exists(out),
          "unknown quant type: %d %s" % (p.returncode, p.stderr))
    ints = dict(flux)
    ints["steps"] = np.arange(4, dtype=np.int64)
    src = os.path.join(tmp, "ints.safetensors")
    save(src, ints)
    p = run("convert", src, out, "--quant", "q8_0")
    check(p.returncode == 2 and "steps" in p.stderr and "I64" in p.stderr and not os.path.exists(out),
          "integer tensor refused with its name: %d %s" % (p.returncode, p.stderr))
    same = os.path.join(tmp, "same.gguf")
    save(same, flux)
    before = open(same, "rb").read()
    p = run("convert", same, same, "--quant", "q8_0")
    check(p.returncode == 2 and open(same, "rb").read() == before, "OUT = IN refused: %d" % p.returncode)
    p = run("convert", os.path.join(tmp, "flux.safetensors"), out, "--arch", "nope")
    check(p.returncode == 2 and "nope" in p.stderr, "unknown --arch refused")
    p = run("convert", os.path.join(tmp, "flux.safetensors"), out, "--arch", "sd3", "-q")
    check(p.returncode == 0 and Reader(out).kv["general.architecture"] == "sd3", "--arch overrides")
    check(not [f for f in os.listdir(tmp) if f.endswith(".tmp")], "no temporary file left")

sys.exit(finish())

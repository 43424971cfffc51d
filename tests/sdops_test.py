"""Tests of the Stable Diffusion surgery commands: merge, diff, meta,
convert --ema/--drop and install, through the CLI ($ST_BIN), on small files
with real SD key names, checked against numpy (and hashlib) computed here
from the same inputs. Run with $PYTHON (Debian's python3 with numpy and
torch). Only the CLI is called, so it runs under the sanitizer build too."""
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

BIN = os.environ.get("ST_BIN") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "build", "safetensors")

passed = 0
failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL", what, file=sys.stderr)


def run(*args, cwd=None):
    p = subprocess.run([BIN] + [str(a) for a in args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, cwd=cwd)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


# ---------------------------------------------------------------- file I/O

DT = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64,
      "I32": np.int32, "U8": np.uint8}


def bf16_bits(a32):
    """float32 -> bfloat16 bits, round to nearest even (as torch)."""
    u = np.ascontiguousarray(a32, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return r


def bf16_to_f32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def save(path, tensors, meta=None):
    """tensors: name -> numpy array, or (dtype name, raw array) for BF16."""
    hdr = {}
    if meta is not None:
        hdr["__metadata__"] = meta
    blobs = []
    off = 0
    for k, v in tensors.items():
        if isinstance(v, tuple):
            dt, a = v
        else:
            a = v
            dt = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
                  np.dtype(np.float64): "F64", np.dtype(np.int64): "I64",
                  np.dtype(np.int32): "I32", np.dtype(np.uint8): "U8"}[a.dtype]
        b = np.ascontiguousarray(a).tobytes()
        hdr[k] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def load(path):
    """name -> (dtype, array as float32/int for numerics); and metadata."""
    with open(path, "rb") as f:
        d = f.read()
    n = struct.unpack("<Q", d[:8])[0]
    h = json.loads(d[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        raw = d[8 + n + b:8 + n + e]
        if v["dtype"] == "BF16":
            a = bf16_to_f32(np.frombuffer(raw, np.uint16)).reshape(v["shape"])
        else:
            a = np.frombuffer(raw, DT[v["dtype"]]).reshape(v["shape"])
        out[k] = (v["dtype"], a)
    return out, h.get("__metadata__")


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# ------------------------------------------------------ realistic layouts

def sd1_layout(rng, in_ch=4, dtype=np.float32, ema=False, scale=1.0):
    """An SD1 checkpoint in miniature: real key names, the shapes that
    identify checks (context 768, 4-channel VAE latents), small sizes."""
    def r(*s):
        return (rng.standard_normal(s) * scale).astype(dtype)
    t = {
        "model.diffusion_model.input_blocks.0.0.weight": r(32, in_ch, 3, 3),
        "model.diffusion_model.input_blocks.0.0.bias": r(32),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": r(32, 768),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_v.weight": r(32, 768),
        "model.diffusion_model.time_embed.0.weight": r(128, 32),
        "model.diffusion_model.middle_block.1.proj_in.weight": r(32, 32, 1, 1),
        "model.diffusion_model.out.0.weight": r(32),
        "model.diffusion_model.out.2.weight": r(4, 32, 3, 3),
        "first_stage_model.encoder.conv_in.weight": r(16, 3, 3, 3),
        "first_stage_model.decoder.conv_in.weight": r(16, 4, 3, 3),
        "first_stage_model.decoder.conv_out.weight": r(3, 16, 3, 3),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": r(64, 768),
        "cond_stage_model.transformer.text_model.final_layer_norm.weight": r(768),
        "cond_stage_model.transformer.text_model.embeddings.position_ids":
            np.arange(77, dtype=np.int64).reshape(1, 77),
        "alphas_cumprod": np.linspace(1, 0, 1000).astype(np.float32),
    }
    if ema:
        for k in list(t):
            if k.startswith("model.") and t[k].dtype != np.int64:
                t["model_ema." + k[len("model."):].replace(".", "")] = r(*t[k].shape)
        t["model_ema.decay"] = np.array(0.9999, dtype=np.float32)
        t["model_ema.num_updates"] = np.array(1234, dtype=np.int32)
    return t


def f32(a):
    return np.asarray(a, dtype=np.float32)


# ------------------------------------------------------------------ merge

def z3():
    return np.zeros((4, 4, 1, 1), np.float16)


def test_merge(tmp):
    rng = np.random.default_rng(1)
    A = sd1_layout(rng)
    B = sd1_layout(rng)
    B["model.diffusion_model.only_in_b.weight"] = f32(rng.standard_normal(5))
    del B["model.diffusion_model.out.0.weight"]  # A's is kept as it is
    B["cond_stage_model.transformer.text_model.embeddings.position_ids"] = \
        np.arange(77, dtype=np.int64)[::-1].reshape(1, 77).copy()
    pa, pb = os.path.join(tmp, "a.safetensors"), os.path.join(tmp, "b.safetensors")
    save(pa, A, {"ss_note": "from A", "shared": "A"})
    save(pb, B, {"shared": "B"})
    out = os.path.join(tmp, "ab.safetensors")
    rc, so, se = run("merge", pa, pb, "-o", out, "--alpha", "0.3")
    check(rc == 0, "merge weighted: exit %d %s" % (rc, se))
    O, meta = load(out)
    wa, wb = np.float32(1 - 0.3), np.float32(0.3)
    for k, a in A.items():
        check(k in O, "merge keeps A's tensor " + k)
        if k not in O:
            continue
        dt, o = O[k]
        if "model" in k and k in B and a.dtype == np.float32 and "position_ids" not in k:
            exp = wa * a + wb * B[k]
            check(dt == "F32" and np.array_equal(o, exp), "weighted sum of " + k)
        else:
            check(np.array_equal(o, a), "A's value kept for " + k)
    check("model.diffusion_model.only_in_b.weight" not in O, "tensors only in B left out")
    check(meta.get("format") == "pt", "format=pt")
    check(meta.get("ss_note") == "from A" and meta.get("shared") == "B",
          "metadata of A then B (later wins)")
    recipe = json.loads(meta["sd_merge_recipe"])
    check(recipe["interp_method"] == "Weighted sum" and recipe["multiplier"] == 0.3,
          "recipe method and multiplier")
    check(recipe["primary_model_hash"] == sha(pa) and recipe["secondary_model_hash"] == sha(pb)
          and recipe["tertiary_model_hash"] is None, "recipe hashes are the inputs' SHA-256")
    check(recipe["is_inpainting"] is False and recipe["save_as_half"] is False,
          "recipe flags")
    models = json.loads(meta["sd_merge_models"])
    with open(pa, "rb") as f:
        legacy = hashlib.sha256(f.read()[0x100000:0x110000]).hexdigest()[:8]
    check(set(models) == {sha(pa), sha(pb)}, "sd_merge_models keys")
    check(models.get(sha(pa), {}).get("name") == "a.safetensors"
          and models[sha(pa)]["legacy_hash"] == legacy, "sd_merge_models name and legacy hash")

    # a merge of a merge carries the history, and the recipe embedded
    out2 = os.path.join(tmp, "abb.safetensors")
    rc, so, se = run("merge", out, pb, "-o", out2, "--alpha", "0.5")
    check(rc == 0, "merge of a merge: exit %d %s" % (rc, se))
    _, meta2 = load(out2)
    models2 = json.loads(meta2["sd_merge_models"])
    check({sha(pa), sha(pb), sha(out)} <= set(models2), "history of merges kept")
    check(models2.get(sha(out), {}).get("sd_merge_recipe", {}).get("multiplier") == 0.3,
          "an input's sd_merge_recipe embedded as JSON")

    # fp16 inputs, arithmetic in fp32, output fp16 (A's dtype)
    rng = np.random.default_rng(2)
    A16 = sd1_layout(rng, dtype=np.float16)
    B16 = sd1_layout(rng, dtype=np.float16)
    pa16, pb16 = os.path.join(tmp, "a16.safetensors"), os.path.join(tmp, "b16.safetensors")
    save(pa16, A16)
    save(pb16, B16)
    out16 = os.path.join(tmp, "ab16.safetensors")
    rc, so, se = run("merge", pa16, pb16, "-o", out16, "--alpha", "0.75")
    check(rc == 0, "merge fp16: exit %d %s" % (rc, se))
    O16, _ = load(out16)
    k = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    exp = (np.float32(0.25) * f32(A16[k]) + np.float32(0.75) * f32(B16[k])).astype(np.float16)
    check(O16[k][0] == "F16" and np.array_equal(O16[k][1], exp), "fp16 merge in fp32, rounded once")

    # --dtype f16 and bf16 from fp32 inputs
    for name, dt in (("f16", "F16"), ("bf16", "BF16")):
        o = os.path.join(tmp, "ab_%s.safetensors" % name)
        rc, so, se = run("merge", pa, pb, "-o", o, "--alpha", "0.3", "--dtype", name)
        check(rc == 0, "merge --dtype %s: exit %d %s" % (name, rc, se))
        Od, md = load(o)
        e32 = wa * A[k] + wb * B[k]
        if dt == "F16":
            ok = np.array_equal(Od[k][1], e32.astype(np.float16))
        else:
            ok = np.array_equal(Od[k][1], bf16_to_f32(bf16_bits(e32)))
        check(Od[k][0] == dt and ok, "--dtype %s values" % name)
        check(Od["cond_stage_model.transformer.text_model.embeddings.position_ids"][0] == "I64",
              "--dtype leaves integer tensors")
        check(json.loads(md["sd_merge_recipe"])["save_as_half"] == (dt == "F16"),
              "save_as_half for --dtype %s" % name)

    # add difference, with a tensor missing from C (a zero difference)
    C = sd1_layout(np.random.default_rng(3))
    del C["model.diffusion_model.time_embed.0.weight"]
    pc = os.path.join(tmp, "c.safetensors")
    save(pc, C)
    outd = os.path.join(tmp, "abc.safetensors")
    rc, so, se = run("merge", pa, pb, pc, "-o", outd, "--alpha", "0.6", "--mode", "add-diff")
    check(rc == 0, "merge add-diff: exit %d %s" % (rc, se))
    Od, md = load(outd)
    m = np.float32(0.6)
    kk = "model.diffusion_model.middle_block.1.proj_in.weight"
    check(np.array_equal(Od[kk][1], A[kk] + m * (B[kk] - C[kk])), "add difference A + M(B - C)")
    kt = "model.diffusion_model.time_embed.0.weight"
    check(np.array_equal(Od[kt][1], A[kt]), "add difference: missing in C is a zero difference")
    r = json.loads(md["sd_merge_recipe"])
    check(r["interp_method"] == "Add difference" and r["tertiary_model_hash"] == sha(pc),
          "add-diff recipe")

    # inpainting A (9 input channels) with a normal B: first 4 channels merged
    Ai = sd1_layout(np.random.default_rng(4), in_ch=9)
    pai = os.path.join(tmp, "inpaint.safetensors")
    save(pai, Ai)
    outi = os.path.join(tmp, "inpaint_merge.safetensors")
    rc, so, se = run("merge", pai, pb, "-o", outi, "--alpha", "0.4")
    check(rc == 0, "merge inpainting A: exit %d %s" % (rc, se))
    Oi, mi = load(outi)
    ki = "model.diffusion_model.input_blocks.0.0.weight"
    exp = Ai[ki].copy()
    exp[:, :4] = np.float32(0.6) * Ai[ki][:, :4] + np.float32(0.4) * B[ki]
    check(Oi[ki][1].shape == (32, 9, 3, 3) and np.array_equal(Oi[ki][1], exp),
          "inpainting: first 4 channels merged, the other 5 A's")
    check(json.loads(mi["sd_merge_recipe"])["is_inpainting"] is True, "recipe is_inpainting")
    outx = os.path.join(tmp, "wrong_order.safetensors")
    rc, so, se = run("merge", pb, pai, "-o", outx, "--alpha", "0.4")
    check(rc == 2 and "inpainting" in se and not os.path.exists(outx),
          "normal A with inpainting B refused, no output")

    # bake in a VAE (A1111's option): its K replaces first_stage_model.K in
    # the VAE's dtype; loss.* skipped; --discard drops names by regex
    vae = {"encoder.conv_in.weight": rng.standard_normal((16, 3, 3, 3)).astype(np.float16),
           "decoder.conv_out.weight": rng.standard_normal((3, 16, 3, 3)).astype(np.float16),
           "loss.logvar": np.zeros(1, np.float32), "post_quant_conv.weight": z3()}
    pv = os.path.join(tmp, "vae.safetensors")
    save(pv, vae)
    outv = os.path.join(tmp, "baked.safetensors")
    rc, so, se = run("merge", pa, pb, "-o", outv, "--alpha", "0.3", "--vae", pv,
                     "--discard", "alphas_|time_embed")
    check(rc == 0, "merge --vae --discard: exit %d %s" % (rc, se))
    Ov, mv = load(outv)
    kv = "first_stage_model.encoder.conv_in.weight"
    check(Ov[kv][0] == "F16" and np.array_equal(Ov[kv][1], vae["encoder.conv_in.weight"]),
          "VAE tensor baked in, in the VAE's dtype")
    kd = "first_stage_model.decoder.conv_in.weight"
    check(np.array_equal(Ov[kd][1], wa * A[kd] + wb * B[kd]), "tensors the VAE lacks merged")
    check("first_stage_model.loss.logvar" not in Ov and
          "first_stage_model.post_quant_conv.weight" not in Ov, "only A's names are baked")
    check("alphas_cumprod" not in Ov and "model.diffusion_model.time_embed.0.weight" not in Ov
          and len(Ov) == len(A) - 2, "--discard REGEX")
    rv = json.loads(mv["sd_merge_recipe"])
    check(rv["bake_in_vae"] == "vae.safetensors" and rv["discard_weights"] == "alphas_|time_embed",
          "recipe bake_in_vae and discard_weights")
    vae["decoder.conv_out.weight"] = np.zeros((3, 8, 3, 3), np.float16)
    save(pv, vae)
    rc, so, se = run("merge", pa, pb, "-o", outx, "--alpha", "0.3", "--vae", pv)
    check(rc == 2 and not os.path.exists(outx), "VAE of another shape refused")
    check(run("merge", pa, pb, "-o", outx, "--alpha", "0.3", "--discard", "a(")[0] == 2,
          "bad --discard regex")

    # incompatible shapes, OUT = an input, usage errors
    Bad = dict(B)
    Bad["model.diffusion_model.time_embed.0.weight"] = f32(rng.standard_normal((64, 32)))
    pbad = os.path.join(tmp, "bad.safetensors")
    save(pbad, Bad)
    rc, so, se = run("merge", pa, pbad, "-o", outx, "--alpha", "0.5")
    check(rc == 2 and not os.path.exists(outx), "different shapes refused")
    before = sha(pa)
    rc, so, se = run("merge", pa, pb, "-o", pa, "--alpha", "0.5")
    check(rc == 2 and sha(pa) == before, "OUT may not be an input")
    check(run("merge", pa, pb, "-o", outx)[0] == 2, "--alpha required")
    check(run("merge", pa, pb, "-o", outx, "--alpha", "inf")[0] == 2, "--alpha finite")
    check(run("merge", pa, pb, "-o", outx, "--alpha", "0.5x")[0] == 2, "--alpha a number")
    check(run("merge", pa, pb, pc, "-o", outx, "--alpha", "1")[0] == 2, "C needs add-diff")
    check(run("merge", pa, pb, "-o", outx, "--alpha", "1", "--mode", "add-diff")[0] == 2,
          "add-diff needs C")
    check(not [f for f in os.listdir(tmp) if f.endswith(".tmp") or ".XXXX" in f],
          "no temporary files left")


# ------------------------------------------------------------------- diff

def test_diff(tmp):
    rng = np.random.default_rng(5)
    x = f32(rng.standard_normal((64, 50)))
    y = x.copy()
    y[3, 7] += np.float32(0.25)
    z16 = (x * 1.5).astype(np.float16)
    pa, pb = os.path.join(tmp, "da.safetensors"), os.path.join(tmp, "db.safetensors")
    save(pa, {"same": np.arange(10, dtype=np.int64), "x": x, "h": x, "zero": np.zeros(4, np.float32),
              "s": np.zeros((2, 3), np.float32), "gone": x[:2]},
         {"k": "1", "only_a": "x"})
    save(pb, {"same": np.arange(10, dtype=np.int64), "x": y, "h": z16,
              "zero": np.array([0, 0, 0, 1e-30], np.float32),
              "s": np.zeros((3, 2), np.float32), "new": x[:3]},
         {"k": "2", "only_b": "y"})
    rc, so, se = run("diff", "--json", pa, pb)
    check(rc == 1, "diff of different files exits 1 (%d %s)" % (rc, se))
    try:
        d = json.loads(so)
    except ValueError:
        d = {"tensors": [], "metadata": []}
        check(False, "diff --json is JSON")
    by = {t["name"]: t for t in d["tensors"]}
    check(by.get("gone", {}).get("status") == "only_in_a", "only in A")
    check(by.get("new", {}).get("status") == "only_in_b", "only in B")
    check(by.get("s", {}).get("shape_b") == [3, 2], "shape change")
    check("same" not in by and d.get("identical_tensors") == 1, "identical tensors not listed")
    a64, b64 = x.astype(np.float64), y.astype(np.float64)
    t = by.get("x", {})
    check(abs(t.get("max_abs_diff", -1) - np.max(np.abs(a64 - b64))) <= 1e-12,
          "max|a-b| = numpy's")
    cos = np.dot(a64.ravel(), b64.ravel()) / (np.linalg.norm(a64) * np.linalg.norm(b64))
    check(abs(t.get("cosine", -1) - cos) <= 1e-12, "cosine = numpy's")
    t = by.get("h", {})
    b16 = z16.astype(np.float64)
    check(t.get("dtype_a") == "F32" and t.get("dtype_b") == "F16", "dtype change F32 -> F16")
    check(abs(t.get("max_abs_diff", -1) - np.max(np.abs(a64 - b16))) <= 1e-9,
          "max|a-b| across dtypes")
    cos = np.dot(a64.ravel(), b16.ravel()) / (np.linalg.norm(a64) * np.linalg.norm(b16))
    check(abs(t.get("cosine", -1) - cos) <= 1e-12, "cosine across dtypes")
    check(by.get("zero", {}).get("cosine", 0) is None, "cosine of a zero tensor is null")
    meta = {m["key"]: m["status"] for m in d["metadata"]}
    check(meta == {"k": "changed", "only_a": "only_in_a", "only_b": "only_in_b"},
          "metadata differences")
    check(d.get("identical") is False, "identical: false")
    rc, so, se = run("diff", pa, pb)
    check(rc == 1 and "only in A: gone" in so and "metadata changed: k" in so, "diff text")
    # BF16 against F32
    bits = bf16_bits(x)
    pbf = os.path.join(tmp, "dbf.safetensors")
    save(pbf, {"x": ("BF16", bits)})
    px = os.path.join(tmp, "dx.safetensors")
    save(px, {"x": x})
    rc, so, se = run("diff", "--json", px, pbf)
    t = json.loads(so)["tensors"][0] if rc == 1 else {}
    e = bf16_to_f32(bits).astype(np.float64)
    check(abs(t.get("max_abs_diff", -1) - np.max(np.abs(a64 - e))) <= 1e-12, "BF16 decoded")
    # the same tensors in another layout are identical
    pc = os.path.join(tmp, "dcopy.safetensors")
    check(run("convert", pa, pc)[0] == 0, "convert for diff")
    rc, so, se = run("diff", pa, pc)
    check(rc == 0 and "0 differ" in so, "a canonical copy is identical (exit 0)")
    rc, so, se = run("diff", "--json", pa, pc)
    check(rc == 0 and json.loads(so)["identical"] is True, "identical: true")
    bad = os.path.join(tmp, "bad.safetensors")
    with open(bad, "wb") as f:
        f.write(b"\x40\x00\x00\x00\x00\x00\x00\x00{}")  # header past the end
    check(run("diff", pa, bad)[0] == 2, "invalid input is an error (2)")
    check(run("diff", pa)[0] == 2, "diff needs two files")


# ------------------------------------------------------------------- meta

def test_meta(tmp):
    rng = np.random.default_rng(6)
    t = {"lora_unet_x.lora_down.weight": (rng.standard_normal((4, 8))).astype(np.float16),
         "lora_unet_x.alpha": np.array(4.0, np.float32)}
    tags = {"10_cat": {"cat": 12, "sitting": 3}, "5_dog": {"dog": 2}}
    meta = {"ss_tag_frequency": json.dumps(tags), "ss_network_dim": "4",
            "modelspec.title": "Kätzchen 🐱", "plain": "line1\nline2"}
    p = os.path.join(tmp, "lora.safetensors")
    save(p, t, meta)
    rc, so, se = run("meta", p)
    check(rc == 0 and "ss_network_dim: 4" in so, "meta text")
    check('"sitting": 3' in so and '\n      "cat": 12' in so, "JSON values pretty-printed")
    check("Kätzchen 🐱" in so and "line1\\x0aline2" in so, "unicode kept, controls escaped")
    rc, so, se = run("meta", "--json", p)
    check(rc == 0 and json.loads(so) == meta, "meta --json is the metadata")
    before = sha(p)
    out = os.path.join(tmp, "edited.safetensors")
    rc, so, se = run("meta", p, "--set", "ss_network_dim=8", "--set", "new=a=b",
                     "--unset", "plain", "--unset", "absent", "-o", out)
    check(rc == 0, "meta edit -o: exit %d %s" % (rc, se))
    _, m2 = load(out)
    exp = dict(meta)
    exp.update({"ss_network_dim": "8", "new": "a=b"})
    del exp["plain"]
    check(m2 == exp, "--set / --unset result")
    check(sha(p) == before, "input untouched by -o")
    T1, _ = load(p)
    T2, _ = load(out)
    check(all(np.array_equal(T1[k][1], T2[k][1]) and T1[k][0] == T2[k][0] for k in T1)
          and set(T1) == set(T2), "tensors copied unchanged")
    # --set-json with unicode escapes and a later --set winning
    js = os.path.join(tmp, "m.json")
    with open(js, "w", encoding="utf-8") as f:
        f.write('{"emoji": "\\ud83d\\ude00 ok", "ü": "ä\\n", "new": "from json"}')
    rc, so, se = run("meta", p, "--set-json", js, "--set", "new=later", "-o", out)
    check(rc == 0, "meta --set-json: exit %d %s" % (rc, se))
    rc, so, se = run("meta", "--json", out)
    m3 = json.loads(so)
    check(m3.get("emoji") == "\U0001F600 ok" and m3.get("ü") == "ä\n" and m3.get("new") == "later",
          "--set-json decoded, edits in command-line order")
    with open(js, "w") as f:
        f.write('{"n": 1}')
    check(run("meta", p, "--set-json", js, "-o", out)[0] == 2, "--set-json: non-string refused")
    # round trip: --json output fed back through --set-json
    with open(js, "w", encoding="utf-8") as f:
        f.write(run("meta", "--json", p)[1])
    bare = os.path.join(tmp, "bare.safetensors")
    save(bare, t)
    rc, so, se = run("meta", bare, "--set-json", js, "--in-place")
    check(rc == 0 and load(bare)[1] == meta, "--json -> --set-json round trip")
    # --in-place: a new file renamed over the old one (a hard link to the old
    # one keeps the old contents), atomic, no temporary left
    old = os.path.join(tmp, "old_link.safetensors")
    os.link(p, old)
    ino = os.stat(p).st_ino
    rc, so, se = run("meta", p, "--set", "x=1", "--in-place")
    check(rc == 0 and load(p)[1].get("x") == "1", "--in-place edits")
    check(os.stat(p).st_ino != ino and sha(old) == before, "--in-place replaces by rename")
    check(not [f for f in os.listdir(tmp) if f.startswith(".")], "no temporary file left")
    # a failing --in-place leaves the file as it was
    cur = sha(p)
    bad_key = "\udcff"  # not encodable: the argument is passed as raw bytes below
    rc = subprocess.run([BIN, "meta", p, b"--set", b"\xff=1", "--in-place"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE).returncode
    check(rc == 2 and sha(p) == cur, "invalid UTF-8 key refused, file unchanged")
    del bad_key
    # a symbolic link: its target is replaced, the link stays
    ln = os.path.join(tmp, "link.safetensors")
    os.symlink(p, ln)
    rc, so, se = run("meta", ln, "--set", "y=2", "--in-place")
    check(rc == 0 and os.path.islink(ln) and load(p)[1].get("y") == "2",
          "--in-place through a symlink edits the target")
    check(run("meta", p, "--set", "a=b")[0] == 2, "edits without -o/--in-place: usage error")
    check(run("meta", p, "-o", out, "--in-place")[0] == 2, "-o and --in-place exclude")
    check(run("meta", p, "--set", "novalue", "-o", out)[0] == 2, "--set without '='")
    rc, so, se = run("meta", p, "--set", "a=b", "-o", p)
    check(rc == 2, "-o the input refused")
    rc, so, se = run("meta", bare.replace("bare", "nothere"))
    check(rc == 2, "missing file: exit 2")
    nometa = os.path.join(tmp, "nometa.safetensors")
    save(nometa, t)
    rc, so, se = run("meta", "--json", nometa)
    check(rc == 0 and json.loads(so) == {}, "no metadata: {}")


# -------------------------------------------------------------------- EMA

def test_ema(tmp):
    rng = np.random.default_rng(7)
    t = sd1_layout(rng, ema=True)
    # one weight without an EMA twin
    del t["model_ema.diffusion_modelout0weight"]
    p = os.path.join(tmp, "ema.safetensors")
    save(p, t, {"k": "v"})
    out = os.path.join(tmp, "emaonly.safetensors")
    rc, so, se = run("convert", p, out, "--ema", "only")
    check(rc == 0, "--ema only: exit %d %s" % (rc, se))
    O, m = load(out)
    check(not [k for k in O if k.startswith("model_ema.")], "--ema only: no model_ema.* left")
    check(m == {"k": "v"}, "--ema only keeps metadata")
    k = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    twin = "model_ema.diffusion_modelinput_blocks11transformer_blocks0attn2to_kweight"
    check(np.array_equal(O[k][1], t[twin]), "EMA weight under the model's name")
    check(np.array_equal(O["model.diffusion_model.out.0.weight"][1],
                         t["model.diffusion_model.out.0.weight"]), "no twin: weight kept")
    check(np.array_equal(O["first_stage_model.decoder.conv_out.weight"][1],
                         t["first_stage_model.decoder.conv_out.weight"]), "VAE untouched")
    n_model = len([x for x in t if not x.startswith("model_ema.")])
    check(len(O) == n_model, "--ema only: one tensor per non-EMA name")
    out2 = os.path.join(tmp, "emadrop.safetensors")
    rc, so, se = run("convert", p, out2, "--ema", "drop", "--drop", "alphas_cumprod",
                     "--drop", "*position_ids")
    O2, _ = load(out2)
    check(rc == 0 and not [k for k in O2 if k.startswith("model_ema.")], "--ema drop")
    check(np.array_equal(O2[k][1], t[k]), "--ema drop keeps the model's weights")
    check("alphas_cumprod" not in O2 and
          "cond_stage_model.transformer.text_model.embeddings.position_ids" not in O2,
          "--drop GLOB")
    check(len(O2) == n_model - 2, "--drop: the others kept")
    rc, so, se = run("convert", out2, os.path.join(tmp, "x.safetensors"), "--ema", "only")
    check(rc == 2 and "no EMA" in se, "--ema only without EMA weights: error")
    check(run("convert", p, out2, "--ema", "maybe")[0] == 2, "--ema bad value")
    # the identify verdict of the pruned file
    rc, so, se = run("identify", "--json", out)
    check(rc == 0 and json.loads(so.splitlines()[0]).get("ema") is False,
          "identify: no EMA after --ema only")


# ---------------------------------------------------------------- install

def tree(root):
    out = []
    for d, dirs, files in os.walk(root):
        for f in dirs + files:
            out.append(os.path.relpath(os.path.join(d, f), root))
    return sorted(out)


def test_install(tmp):
    rng = np.random.default_rng(8)
    src = os.path.join(tmp, "src")
    os.mkdir(src)
    ckpt = os.path.join(src, "dreamy_v1.safetensors")
    save(ckpt, sd1_layout(rng, dtype=np.float16))
    for ext, data in ((".yaml", b"model:\n"), (".preview.png", b"\x89PNG"),
                      (".civitai.info", b"{}"), (".json", b'{"a": 1}')):
        with open(os.path.join(src, "dreamy_v1" + ext), "wb") as f:
            f.write(data)
    z = lambda *s: np.zeros(s, np.float16)
    lora = os.path.join(src, "style.safetensors")
    save(lora, {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": z(8, 320, 1, 1),
                "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": z(320, 8, 1, 1),
                "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": z(8, 768),
                "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": z(320, 8),
                "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": z(8, 768),
                "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": z(3072, 8)},
         {"ss_base_model_version": "sd_v1"})
    emb = os.path.join(src, "badhand.safetensors")
    save(emb, {"emb_params": z(6, 768)})
    vae = os.path.join(src, "vae-ft-mse.safetensors")
    save(vae, {"encoder.conv_in.weight": z(16, 3, 3, 3), "decoder.conv_in.weight": z(16, 4, 3, 3),
               "decoder.conv_out.weight": z(3, 16, 3, 3)})
    expect = {
        "a1111": {"ckpt": "models/Stable-diffusion", "lora": "models/Lora",
                  "emb": "embeddings", "vae": "models/VAE"},
        "forge": {"ckpt": "models/Stable-diffusion", "lora": "models/Lora",
                  "emb": "embeddings", "vae": "models/VAE"},
        "comfyui": {"ckpt": "models/checkpoints", "lora": "models/loras",
                    "emb": "models/embeddings", "vae": "models/vae"},
        "sdnext": {"ckpt": "models/Stable-diffusion", "lora": "models/Lora",
                   "emb": "models/embeddings", "vae": "models/VAE"},
    }
    files = {"ckpt": ckpt, "lora": lora, "emb": emb, "vae": vae}
    for ui, where in expect.items():
        root = os.path.join(tmp, ui)
        os.mkdir(root)
        for what, path in files.items():
            before = tree(root)
            rc, so, se = run("install", path, "--ui", ui, "--root", root, "--dry-run")
            check(rc == 0 and tree(root) == before and "would copy" in so,
                  "%s %s --dry-run changes nothing" % (ui, what))
            rc, so, se = run("install", path, "--ui", ui, "--root", root)
            dst = os.path.join(root, where[what], os.path.basename(path))
            check(rc == 0 and os.path.isfile(dst) and sha(dst) == sha(path),
                  "%s %s -> %s (%d %s)" % (ui, what, where[what], rc, se))
        d = os.path.join(root, where["ckpt"])
        check(sorted(os.listdir(d)) == ["dreamy_v1.civitai.info", "dreamy_v1.json",
                                        "dreamy_v1.preview.png", "dreamy_v1.safetensors",
                                        "dreamy_v1.yaml"], "%s sidecars carried" % ui)
        with open(os.path.join(d, "dreamy_v1.yaml"), "rb") as f:
            check(f.read() == b"model:\n", "%s sidecar content" % ui)
    # never overwrite: an existing sidecar blocks the whole install
    root = os.path.join(tmp, "clash")
    os.makedirs(os.path.join(root, "models", "checkpoints"))
    with open(os.path.join(root, "models", "checkpoints", "dreamy_v1.yaml"), "wb") as f:
        f.write(b"mine")
    rc, so, se = run("install", ckpt, "--ui", "comfyui", "--root", root)
    check(rc == 2 and "exists" in se, "existing destination: exit 2 with a message")
    check(tree(root) == ["models", "models/checkpoints", "models/checkpoints/dreamy_v1.yaml"],
          "existing destination: nothing installed")
    with open(os.path.join(root, "models", "checkpoints", "dreamy_v1.yaml"), "rb") as f:
        check(f.read() == b"mine", "existing file untouched")
    # --link: symbolic links to the absolute paths; --move: the source goes
    root = os.path.join(tmp, "linked")
    os.mkdir(root)
    rc, so, se = run("install", os.path.relpath(lora, tmp), "--ui", "comfyui", "--root", root,
                     "--link", cwd=tmp)
    dst = os.path.join(root, "models", "loras", "style.safetensors")
    check(rc == 0 and os.path.islink(dst) and os.readlink(dst) == os.path.realpath(lora),
          "--link: absolute symlink")
    moved = os.path.join(src, "moved.safetensors")
    shutil.copy(emb, moved)
    with open(os.path.join(src, "moved.preview.png"), "wb") as f:
        f.write(b"png")
    rc, so, se = run("install", moved, "--ui", "comfyui", "--root", root, "--move")
    check(rc == 0 and not os.path.exists(moved) and
          not os.path.exists(os.path.join(src, "moved.preview.png")) and
          os.path.isfile(os.path.join(root, "models", "embeddings", "moved.safetensors")) and
          os.path.isfile(os.path.join(root, "models", "embeddings", "moved.preview.png")),
          "--move takes the sidecars along")
    # refused: invalid file, unknown kind, a kind the UI has no folder for
    bad = os.path.join(src, "broken.safetensors")
    with open(bad, "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":1}        ")
    root = os.path.join(tmp, "refuse")
    os.mkdir(root)
    rc, so, se = run("install", bad, "--ui", "a1111", "--root", root)
    check(rc == 1 and tree(root) == [], "invalid file refused (exit 1), nothing created")
    odd = os.path.join(src, "odd.safetensors")
    save(odd, {"weird.tensor": z(3)})
    rc, so, se = run("install", odd, "--ui", "a1111", "--root", root)
    check(rc == 2 and tree(root) == [], "unknown kind refused")
    rc, so, se = run("install", odd, "--ui", "a1111", "--root", root, "--as", "text_encoder")
    check(rc == 2 and "no folder" in se, "a1111 has no text encoder folder")
    rc, so, se = run("install", odd, "--ui", "comfyui", "--root", root, "--as", "text_encoder")
    check(rc == 0 and os.path.isfile(os.path.join(root, "models", "text_encoders",
                                                  "odd.safetensors")), "--as KIND")
    check(run("install", odd, "--ui", "vlc", "--root", root)[0] == 2, "unknown UI")
    check(run("install", odd, "--ui", "a1111", "--root", os.path.join(tmp, "none"))[0] == 2,
          "missing root")
    check(not [f for f in tree(tmp) if os.path.basename(f).startswith(".")],
          "no temporary files left")


# ------------------------------------------------------------ memory use

def max_rss_kib(args):
    """Peak RSS of one CLI run, measured in a fresh Python process (whose
    RUSAGE_CHILDREN then covers that run only)."""
    code = ("import resource, subprocess, sys\n"
            "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)")
    p = subprocess.run([sys.executable, "-c", code, BIN] + [str(a) for a in args],
                       stdout=subprocess.PIPE)
    kib, rc = p.stdout.split()
    return int(kib), int(rc)


def test_memory(tmp):
    """merge, diff, meta and convert --drop stream: their peak memory stays
    far below the size of the files (2 x 64 MiB here)."""
    if os.environ.get("ST_SAN") == "1":
        print("# ST_SAN=1: memory bounds not measured under the sanitizers")
        return
    n = 32 << 20  # F16 elements: 64 MiB per file
    a = (np.arange(n, dtype=np.uint32) % 4096).astype(np.float16).reshape(8, -1)
    pa, pb = os.path.join(tmp, "ma.safetensors"), os.path.join(tmp, "mb.safetensors")
    save(pa, {"model.diffusion_model.big.weight": a})
    save(pb, {"model.diffusion_model.big.weight": a + np.float16(1)})
    del a
    limit = 48 * 1024
    for name, args, want in (
            ("merge", ["merge", pa, pb, "-o", os.path.join(tmp, "mo.safetensors"),
                       "--alpha", "0.5"], 0),
            ("diff", ["diff", pa, pb], 1),
            ("meta", ["meta", pa, "--set", "a=b", "-o", os.path.join(tmp, "mm.safetensors")], 0),
            ("convert --drop", ["convert", pa, os.path.join(tmp, "mc.safetensors"),
                                "--drop", "nothing"], 0)):
        t0 = time.time()
        kib, rc = max_rss_kib(args)
        print("# %s: %.2f s, peak RSS %d KiB" % (name, time.time() - t0, kib))
        check(rc == want and kib < limit,
              "%s of 2 x 64 MiB: exit %d, peak RSS %d KiB (limit %d)" % (name, rc, kib, limit))


def main():
    tmp = tempfile.mkdtemp(prefix="sdops_")
    try:
        for t in (test_merge, test_diff, test_meta, test_ema, test_install, test_memory):
            sub = os.path.join(tmp, t.__name__)
            os.mkdir(sub)
            try:
                t(sub)
            except Exception as e:  # a crash in one part fails it, not the rest
                check(False, "%s raised %r" % (t.__name__, e))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("# passed %d failed %d" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

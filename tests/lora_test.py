"""Tests of `safetensors lora` (bake, extract, resize) through the CLI
($ST_BIN) on small models with the real SD1 / SDXL key sets (tests/
sdlayouts.py, dimensions shrunk), checked against numpy reimplementations
of the upstream formulas: kohya sd-scripts merge_lora.py (W += ratio *
alpha/rank * up @ down, conv 1x1 and 3x3), LyCORIS LoHa/LoKr as ComfyUI
applies them, ComfyUI's unet_to_diffusers name map (written here from the
block layout, independently of lib/lora/names.c), kohya resize_lora.py's
rank rules, and a bake -> extract round trip. Run with $PYTHON."""
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdlayouts  # noqa: E402

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


def run(*args):
    p = subprocess.run([BIN] + [str(a) for a in args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


NP2ST = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int32): "I32"}
ST2NP = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def save(path, tensors, meta=None):
    hdr = {}
    if meta is not None:
        hdr["__metadata__"] = meta
    blobs, off = [], 0
    for k, a in tensors.items():
        b = np.ascontiguousarray(a).tobytes()
        hdr[k] = {"dtype": NP2ST[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def load(path):
    with open(path, "rb") as f:
        d = f.read()
    n = struct.unpack("<Q", d[:8])[0]
    h = json.loads(d[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        out[k] = np.frombuffer(d[8 + n + b:8 + n + e], ST2NP[v["dtype"]]).reshape(v["shape"])
    return out, h.get("__metadata__") or {}


def materialize(layout, rng, dtype):
    return {k: (rng.standard_normal(shape) * 0.05).astype(dtype)
            for k, (_, shape) in layout.tensors.items()}


# ---- small models with the real key names

def sd1_model(rng, dtype):
    L = sdlayouts.ldm_unet("model.diffusion_model.", 32, (1, 2, 4, 4), 2, (1, 1, 1, 0), 1, 64, None, 4, False)
    L.merge(sdlayouts.clip_hf("cond_stage_model.transformer.", width=64, layers=2))
    return materialize(L, rng, dtype)


SDXL_TDEPTH = (0, 2, 2)


def sd2_model(rng, dtype):
    L = sdlayouts.ldm_unet("model.diffusion_model.", 32, (1, 2, 4, 4), 2, (1, 1, 1, 0), 1, 64, None, 4, True)
    L.merge(sdlayouts.open_clip("cond_stage_model.model.", width=64, layers=2))
    return materialize(L, rng, dtype)


def sdxl_model(rng, dtype):
    L = sdlayouts.ldm_unet("model.diffusion_model.", 32, (1, 2, 4), 2, SDXL_TDEPTH, 2, 64, 96, 4, True)
    L.merge(sdlayouts.clip_hf("conditioner.embedders.0.transformer.", width=64, layers=2))
    L.merge(sdlayouts.open_clip("conditioner.embedders.1.model.", width=64, layers=2))
    return materialize(L, rng, dtype)


# ---- the diffusers <-> LDM UNet names (ComfyUI unet_to_diffusers, from the layout)

RESNET = {"in_layers.2": "conv1", "out_layers.3": "conv2", "emb_layers.1": "time_emb_proj",
          "skip_connection": "conv_shortcut"}


def diffusers_map(mult, tdepth, nres=2):
    """LDM sub-module prefix -> diffusers prefix for the resnets, attentions,
    samplers."""
    m = {}
    n = 1
    for x in range(len(mult)):
        for i in range(nres):
            m["input_blocks.%d.0." % n] = ("down_blocks.%d.resnets.%d." % (x, i), "res")
            if tdepth[x]:
                m["input_blocks.%d.1." % n] = ("down_blocks.%d.attentions.%d." % (x, i), "attn")
            n += 1
        if x != len(mult) - 1:
            m["input_blocks.%d.0.op." % n] = ("down_blocks.%d.downsamplers.0.conv." % x, "samp")
            n += 1
    m["middle_block.0."] = ("mid_block.resnets.0.", "res")
    m["middle_block.1."] = ("mid_block.attentions.0.", "attn")
    m["middle_block.2."] = ("mid_block.resnets.1.", "res")
    L = len(mult)
    for x in range(L):
        lvl = L - 1 - x
        for i in range(nres + 1):
            n = x * (nres + 1) + i
            m["output_blocks.%d.0." % n] = ("up_blocks.%d.resnets.%d." % (x, i), "res")
            if tdepth[lvl]:
                m["output_blocks.%d.1." % n] = ("up_blocks.%d.attentions.%d." % (x, i), "attn")
            if i == nres and lvl != 0:
                sub = 2 if tdepth[lvl] else 1
                m["output_blocks.%d.%d.conv." % (n, sub)] = ("up_blocks.%d.upsamplers.0.conv." % x, "samp")
    return m


DOTTED = {}  # kohya module name -> PEFT/diffusers module name


def kohya_targets(model, diffusers, mult=None, tdepth=None, conv=False):
    """kohya module name -> (model key, row0, rows) for the layers kohya's
    networks/lora.py creates (attention linear/1x1, CLIP attention+MLP; with
    conv: ResNet/sampler layers too)."""
    out = {}
    dmap = diffusers_map(mult, tdepth) if diffusers else None
    P = "model.diffusion_model."
    for k, a in model.items():
        if k.startswith(P) and k.endswith(".weight") and a.ndim in (2, 4):
            x = k[len(P):-len(".weight")]
            attn = ".transformer_blocks." in x or x.endswith(".proj_in") or x.endswith(".proj_out")
            res = any(s in x for s in ("in_layers.2", "out_layers.3", "emb_layers.1", "skip_connection",
                                       ".op", ".conv"))
            if not attn and not (conv and res):
                continue
            name = x
            if diffusers:
                for lp, (dp, kind) in dmap.items():
                    if (x + ".").startswith(lp):
                        rest = (x + ".")[len(lp):-1]
                        if kind == "res":
                            for a0, b0 in RESNET.items():
                                if rest.startswith(a0):
                                    rest = b0 + rest[len(a0):]
                        name = (dp + rest).rstrip(".")
                        break
                else:
                    continue
            out["lora_unet_" + name.replace(".", "_")] = (k, 0, a.shape[0])
            DOTTED["lora_unet_" + name.replace(".", "_")] = "unet." + name
        for te, pre in (("lora_te_", "cond_stage_model.transformer."),
                        ("lora_te1_", "conditioner.embedders.0.transformer.")):
            if k.startswith(pre) and (".self_attn." in k or ".mlp.fc" in k) and k.endswith(".weight"):
                out[te + k[len(pre):-len(".weight")].replace(".", "_")] = (k, 0, a.shape[0])
                DOTTED[te + k[len(pre):-len(".weight")].replace(".", "_")] = "text_encoder." + k[len(pre):-len(".weight")]
        for pre, te in (("conditioner.embedders.1.model.transformer.resblocks.", "lora_te2_"),
                        ("cond_stage_model.model.transformer.resblocks.", "lora_te_")):
            if not k.startswith(pre):
                continue
            i, rest = k[len(pre):].split(".", 1)
            hf = te + "text_model_encoder_layers_%s_" % i
            if rest == "attn.in_proj_weight":
                w = a.shape[0] // 3
                for j, q in enumerate("qkv"):
                    out[hf + "self_attn_%s_proj" % q] = (k, j * w, w)
            elif rest in ("attn.out_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"):
                out[hf + {"attn.out_proj.weight": "self_attn_out_proj", "mlp.c_fc.weight": "mlp_fc1",
                          "mlp.c_proj.weight": "mlp_fc2"}[rest]] = (k, 0, a.shape[0])
    return out


def make_lora(rng, model, targets, rank, dtype=np.float16, alpha=None, kinds=("lora",)):
    """A kohya LoRA over the targets; returns tensors and {module: kind}."""
    t = {}
    for i, (mod, (key, r0, rows)) in enumerate(sorted(targets.items())):
        w = model[key]
        kind = kinds[i % len(kinds)]
        cols = int(np.prod(w.shape[1:]))
        r = min(rank, rows, cols)
        a = np.array(alpha if alpha is not None else rng.uniform(1, 2 * r), dtype=dtype)
        t[mod + ".alpha"] = a
        if kind == "lora":
            if w.ndim == 4:
                t[mod + ".lora_down.weight"] = (rng.standard_normal((r,) + w.shape[1:]) * 0.1).astype(dtype)
                t[mod + ".lora_up.weight"] = (rng.standard_normal((rows, r, 1, 1)) * 0.1).astype(dtype)
            else:
                t[mod + ".lora_down.weight"] = (rng.standard_normal((r, cols)) * 0.1).astype(dtype)
                t[mod + ".lora_up.weight"] = (rng.standard_normal((rows, r)) * 0.1).astype(dtype)
    return t


def lora_delta(lt, mod, rows, shape_rest):
    """kohya merge_lora.py: scale * up @ down, as [rows, ...]."""
    dn = lt[mod + ".lora_down.weight"].astype(np.float32)
    up = lt[mod + ".lora_up.weight"].astype(np.float32)
    r = dn.shape[0]
    alpha = float(lt[mod + ".alpha"]) if mod + ".alpha" in lt else r
    if dn.ndim == 4 and dn.shape[2:] != (1, 1):
        # conv 3x3: conv2d(down.permute(1,0,2,3), up).permute(1,0,2,3)
        d = np.einsum("or,rikl->oikl", up[:, :, 0, 0], dn)
    else:
        d = (up.reshape(rows, r) @ dn.reshape(r, -1))
    return (alpha / r) * d.reshape((rows,) + shape_rest)


def loha_delta(lt, mod):
    w1 = lt[mod + ".hada_w1_a"].astype(np.float32) @ lt[mod + ".hada_w1_b"].astype(np.float32)
    w2 = lt[mod + ".hada_w2_a"].astype(np.float32) @ lt[mod + ".hada_w2_b"].astype(np.float32)
    return float(lt[mod + ".alpha"]) / lt[mod + ".hada_w1_b"].shape[0] * w1 * w2


def lokr_delta(lt, mod, wshape):
    w1 = lt[mod + ".lokr_w1"].astype(np.float32)
    w2 = lt[mod + ".lokr_w2_a"].astype(np.float32) @ lt[mod + ".lokr_w2_b"].astype(np.float32).reshape(
        lt[mod + ".lokr_w2_b"].shape[0], -1)
    dim = lt[mod + ".lokr_w2_b"].shape[0]
    if len(wshape) == 4:
        w2 = w2.reshape((w2.shape[0], wshape[1] // w1.shape[1]) + tuple(wshape[2:]))
        w1 = w1[:, :, None, None]
    return float(lt[mod + ".alpha"]) / dim * np.kron(w1, w2).reshape(wshape)


def close(ours, ref, rtol=2e-3):
    ours = ours.astype(np.float32)
    ref = ref.astype(np.float32)
    scale = max(1e-6, float(np.abs(ref).max()))
    return float(np.abs(ours - ref).max()) <= rtol * scale


def rel_err(a, b):
    return float(np.linalg.norm(a - b) / max(1e-30, np.linalg.norm(b)))


def test_bake_sd1(tmp, rng):
    model = sd1_model(rng, np.float16)
    mp = os.path.join(tmp, "sd1.safetensors")
    save(mp, model, {"modelspec.title": "tiny"})
    tg = kohya_targets(model, True, (1, 2, 4, 4), (1, 1, 1, 0), conv=True)
    check(any("down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q" in k for k in tg), "sd1 names")
    check(any(k.startswith("lora_unet_up_blocks_1_upsamplers_0_conv") for k in tg), "sd1 upsampler name")
    lt = make_lora(rng, model, tg, 4)
    lp = os.path.join(tmp, "sd1_lora.safetensors")
    save(lp, lt, {"ss_network_module": "networks.lora"})
    out = os.path.join(tmp, "sd1_baked.safetensors")
    rc, so, se = run("lora", "bake", mp, "-o", out, lp + ":0.7")
    check(rc == 0, "bake sd1 rc %d %s" % (rc, se))
    if rc:
        return
    got, meta = load(out)
    check(set(got) == set(model), "bake keeps every tensor")
    check(meta.get("modelspec.title") == "tiny", "bake keeps metadata")
    baked = json.loads(meta.get("lora_baked", "[]"))
    check(len(baked) == 1 and baked[0]["name"] == "sd1_lora.safetensors" and
          abs(baked[0]["strength"] - 0.7) < 1e-6, "lora_baked metadata")
    check(len(baked) == 1 and baked[0]["sha256"] == hashlib.sha256(open(lp, "rb").read()).hexdigest(),
          "lora_baked sha256 is the LoRA file's")
    touched = {}
    for mod, (key, r0, rows) in tg.items():
        touched.setdefault(key, []).append((mod, r0, rows))
    bad = 0
    for k, w in model.items():
        ref = w.astype(np.float32)
        for mod, r0, rows in touched.get(k, []):
            ref[r0:r0 + rows] += 0.7 * lora_delta(lt, mod, rows, w.shape[1:])
        if got[k].dtype != np.float16 or not close(got[k], ref.astype(np.float16)):
            bad += 1
            if bad < 4:
                print("mismatch", k, file=sys.stderr)
    check(bad == 0, "sd1 bake matches numpy (%d tensors differ)" % bad)
    check("into %d tensor(s)" % len(touched) in so, "bake report: " + so)

    # progress: forced into a pipe with --progress, absent without it
    out_p = os.path.join(tmp, "sd1_baked_p.safetensors")
    rc, _, se = run("lora", "bake", mp, "-o", out_p, lp + ":0.7", "--progress")
    check(rc == 0 and "lora bake" in se and "%" in se, "bake --progress: a progress line (%r)" % se[-200:])
    check(rc == 0 and open(out_p, "rb").read() == open(out, "rb").read(),
          "bake --progress writes the same file")
    rc, _, se = run("lora", "bake", mp, "-o", out_p, lp + ":0.7")
    check(rc == 0 and "lora bake" not in se, "bake into a pipe: no progress line")

    # two adapters, one named to look like the metadata's own JSON: each
    # sha256 is put in its place once computed
    odd = os.path.join(tmp, 'x",\\"sha256\\":\\"0.safetensors')
    with open(odd, "wb") as f:
        f.write(open(lp, "rb").read()[:-2] + b"\x00\x3c")  # other bytes, same tensors
    out2 = os.path.join(tmp, "sd1_baked2.safetensors")
    rc, _, se = run("lora", "bake", mp, "-o", out2, lp + ":0.3", odd + ":0.4")
    check(rc == 0, "bake of two adapters: %s" % se.strip())
    if rc == 0:
        b2 = json.loads(load(out2)[1].get("lora_baked", "[]"))
        want = [hashlib.sha256(open(x, "rb").read()).hexdigest() for x in (lp, odd)]
        check([e["sha256"] for e in b2] == want and b2[1]["name"] == os.path.basename(odd),
              "two adapters: names and digests in order (%r)" % b2)
    os.remove(odd)

    # the workers split tensors into blocks of rows: any number of them
    # writes the same bytes
    for n in ("1", "3"):
        rc, _, se = run("lora", "bake", mp, "-o", out_p, lp + ":0.7", "--threads", n)
        check(rc == 0 and open(out_p, "rb").read() == open(out, "rb").read(),
              "bake --threads %s writes the same file (%s)" % (n, se.strip()))
    rc, _, se = run("lora", "bake", mp, "-o", out_p, lp, "--threads", "0")
    check(rc == 2, "bake --threads 0: usage error (%d)" % rc)

    # --dtype f32: every float tensor converted, the untouched ones exactly
    out32 = os.path.join(tmp, "sd1_baked32.safetensors")
    rc, _, se = run("lora", "bake", mp, lp, "-o", out32, "--dtype", "f32")
    check(rc == 0, "bake --dtype rc " + se)
    if rc == 0:
        g32, _ = load(out32)
        k0 = "model.diffusion_model.time_embed.0.weight"
        check(g32[k0].dtype == np.float32 and np.array_equal(g32[k0], model[k0].astype(np.float32)),
              "untouched tensor converted exactly")
        kq = [k for k in touched][0]
        ref = model[kq].astype(np.float32)
        for mod, r0, rows in touched[kq]:
            ref[r0:r0 + rows] += lora_delta(lt, mod, rows, model[kq].shape[1:])
        check(close(g32[kq], ref, 1e-5), "f32 output of a patched tensor")
    return model, mp


def test_bake_sdxl_lycoris(tmp, rng):
    model = sdxl_model(rng, np.float16)
    mp = os.path.join(tmp, "sdxl.safetensors")
    save(mp, model)
    tg = kohya_targets(model, False)
    check(any(k.startswith("lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k") for k in tg), "sdxl names")
    check(sum(k.startswith("lora_te2_") and "_self_attn_" in k and "out_proj" not in k for k in tg) == 6,
          "te2 q/k/v split")
    lt = make_lora(rng, model, tg, 8)
    lp = os.path.join(tmp, "sdxl_lora.safetensors")
    save(lp, lt)
    # a LoHa on some attention layers, a LoKr on a linear and a conv layer
    loha, lokr = {}, {}
    hmods = sorted(m for m in tg if "attn1_to_q" in m)[:3]
    for m in hmods:
        key, r0, rows = tg[m]
        cols = model[key].shape[1]
        for s in ("1", "2"):
            loha[m + ".hada_w%s_a" % s] = (rng.standard_normal((rows, 4)) * 0.1).astype(np.float16)
            loha[m + ".hada_w%s_b" % s] = (rng.standard_normal((4, cols)) * 0.1).astype(np.float16)
        loha[m + ".alpha"] = np.array(2.0, np.float16)
    hp = os.path.join(tmp, "sdxl_loha.safetensors")
    save(hp, loha)
    kmods = {"lora_unet_input_blocks_4_1_proj_in": "model.diffusion_model.input_blocks.4.1.proj_in.weight",
             "lora_unet_input_blocks_1_0_in_layers_2": "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"}
    for m, key in kmods.items():
        w = model[key]
        lokr[m + ".lokr_w1"] = (rng.standard_normal((4, 4)) * 0.3).astype(np.float16)
        rest = (w.shape[1] // 4,) + tuple(w.shape[2:])
        lokr[m + ".lokr_w2_a"] = (rng.standard_normal((w.shape[0] // 4, 2)) * 0.3).astype(np.float16)
        lokr[m + ".lokr_w2_b"] = (rng.standard_normal((2,) + rest) * 0.3).astype(np.float16)
        lokr[m + ".alpha"] = np.array(1.0, np.float16)
    kp = os.path.join(tmp, "sdxl_lokr.safetensors")
    save(kp, lokr)
    out = os.path.join(tmp, "sdxl_baked.safetensors")
    rc, so, se = run("lora", "bake", mp, "-o", out, lp + ":0.5", hp + ":-1", kp)
    check(rc == 0, "bake sdxl rc %d %s" % (rc, se))
    if rc:
        return
    got, _ = load(out)
    refs = {k: w.astype(np.float32) for k, w in model.items()}
    for mod, (key, r0, rows) in tg.items():
        refs[key][r0:r0 + rows] += 0.5 * lora_delta(lt, mod, rows, model[key].shape[1:])
    for m in hmods:
        key, r0, rows = tg[m]
        refs[key] += -1.0 * loha_delta(loha, m)
    for m, key in kmods.items():
        refs[key] += lokr_delta(lokr, m, model[key].shape)
    bad = [k for k in model if not close(got[k], refs[k].astype(np.float16))]
    check(not bad, "sdxl LoRA + LoHa + LoKr bake matches numpy: %s" % bad[:3])

    # LoCon with a Tucker core (lora_mid), as ComfyUI rebuilds it
    key = "model.diffusion_model.input_blocks.2.0.in_layers.2.weight"
    w = model[key]
    m = "lora_unet_input_blocks_2_0_in_layers_2"
    dn = (rng.standard_normal((4, w.shape[1], 1, 1)) * 0.2).astype(np.float32)
    mid = (rng.standard_normal((3, 4, 3, 3)) * 0.2).astype(np.float32)
    up = (rng.standard_normal((w.shape[0], 3, 1, 1)) * 0.2).astype(np.float32)
    tp = os.path.join(tmp, "tucker.safetensors")
    save(tp, {m + ".lora_down.weight": dn, m + ".lora_mid.weight": mid, m + ".lora_up.weight": up,
              m + ".alpha": np.array(2.0, np.float32)})
    rc, _, se = run("lora", "bake", mp, "-o", out, tp + ":0.5")
    check(rc == 0, "bake LoCon lora_mid rc %d %s" % (rc, se))
    if rc == 0:
        got, _ = load(out)
        d2 = np.einsum("ijkl,jq->iqkl", mid, dn[:, :, 0, 0])
        want = w.astype(np.float32) + 0.5 * (2.0 / 4) * np.einsum("pi,iqkl->pqkl", up[:, :, 0, 0], d2)
        check(close(got[key], want.astype(np.float16)), "LoCon lora_mid bake matches numpy")

    # LoHa and LoKr with Tucker cores (LyCORIS use_tucker): factors [R, out] and [R, in],
    # rebuilt by the einsum "i j k l, j r, i p -> p r k l"
    def rebuild(t, b, a):
        return np.einsum("ijkl,jr,ip->prkl", t, b, a)

    hm = "lora_unet_input_blocks_2_0_in_layers_2"
    hkey = "model.diffusion_model.input_blocks.2.0.in_layers.2.weight"
    hw = model[hkey]
    lt2 = {}
    for s_ in ("1", "2"):
        lt2[hm + ".hada_t%s" % s_] = (rng.standard_normal((4, 4, 3, 3)) * 0.3).astype(np.float32)
        lt2[hm + ".hada_w%s_a" % s_] = (rng.standard_normal((4, hw.shape[0])) * 0.3).astype(np.float32)
        lt2[hm + ".hada_w%s_b" % s_] = (rng.standard_normal((4, hw.shape[1])) * 0.3).astype(np.float32)
    lt2[hm + ".alpha"] = np.array(2.0, np.float32)
    km = "lora_unet_input_blocks_1_0_in_layers_2"
    kkey = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"
    kw_ = model[kkey]
    kw1 = (rng.standard_normal((2, 4)) * 0.3).astype(np.float32)
    c0, c1 = kw_.shape[0] // 2, kw_.shape[1] // 4
    lt2[km + ".lokr_w1"] = kw1
    lt2[km + ".lokr_t2"] = (rng.standard_normal((3, 3, 3, 3)) * 0.3).astype(np.float32)
    lt2[km + ".lokr_w2_a"] = (rng.standard_normal((3, c0)) * 0.3).astype(np.float32)
    lt2[km + ".lokr_w2_b"] = (rng.standard_normal((3, c1)) * 0.3).astype(np.float32)
    lt2[km + ".alpha"] = np.array(1.5, np.float32)
    tp2 = os.path.join(tmp, "tucker_lyco.safetensors")
    save(tp2, lt2)
    rc, _, se = run("lora", "bake", mp, "-o", out, tp2 + ":0.7")
    check(rc == 0, "bake LoHa/LoKr Tucker rc %d %s" % (rc, se))
    if rc == 0:
        got, _ = load(out)
        dh = rebuild(lt2[hm + ".hada_t1"], lt2[hm + ".hada_w1_b"], lt2[hm + ".hada_w1_a"]) * rebuild(
            lt2[hm + ".hada_t2"], lt2[hm + ".hada_w2_b"], lt2[hm + ".hada_w2_a"])
        want = hw.astype(np.float32) + 0.7 * (2.0 / 4) * dh
        check(close(got[hkey], want.astype(np.float16)), "LoHa hada_t1/t2 bake matches numpy")
        w2 = rebuild(lt2[km + ".lokr_t2"], lt2[km + ".lokr_w2_b"], lt2[km + ".lokr_w2_a"])
        dk = np.kron(kw1[:, :, None, None], w2)
        check(dk.shape == kw_.shape, "LoKr Tucker reference shape")
        want = kw_.astype(np.float32) + 0.7 * (1.5 / 3) * dk
        check(close(got[kkey], want.astype(np.float16)), "LoKr lokr_t2 bake matches numpy")
    # one Tucker core without the other is refused, not half-applied
    del lt2[hm + ".hada_t2"]
    save(tp2, lt2)
    rc, _, se = run("lora", "bake", mp, "-o", out + ".x", tp2)
    check(rc == 1 and "hada_t" in se and not os.path.exists(out + ".x"), "hada_t1 alone refused: %d %s" % (rc, se))

    # DoRA (ComfyUI weight_decompose): dora_scale [1, in] normalises the columns of
    # W + s dW; [out, 1, 1, 1] divides by the ORIGINAL weight's row norms
    def dora_ref(w0, delta, mag, strength):
        w0 = w0.astype(np.float32)
        wc = w0 + delta
        if mag.shape[0] == w0.shape[0]:
            norm = np.linalg.norm(w0.reshape(w0.shape[0], -1), axis=1).reshape((-1,) + (1,) * (w0.ndim - 1))
        else:
            norm = np.linalg.norm(np.swapaxes(wc, 0, 1).reshape(w0.shape[1], -1), axis=1).reshape(
                (1, -1) + (1,) * (w0.ndim - 2))
        wc = wc * (mag / (norm + np.finfo(np.float32).eps))
        return w0 + strength * (wc - w0)

    lin_m = sorted(m for m in tg if "attn1_to_k" in m and m.startswith("lora_unet_"))[0]
    lin_key = tg[lin_m][0]
    conv_m, conv_key = hm, hkey
    dl = {}
    for m, key, mag_shape in ((lin_m, lin_key, (1, model[lin_key].shape[1])),
                              (conv_m, conv_key, (model[conv_key].shape[0], 1, 1, 1))):
        w = model[key]
        dl[m + ".lora_down.weight"] = (rng.standard_normal((4,) + w.shape[1:2] + tuple(w.shape[2:])) * 0.2).astype(np.float32)
        dl[m + ".lora_up.weight"] = (rng.standard_normal((w.shape[0], 4) + (1,) * (w.ndim - 2)) * 0.2).astype(np.float32)
        dl[m + ".alpha"] = np.array(2.0, np.float32)
        dl[m + ".dora_scale"] = (rng.random(mag_shape) + 0.5).astype(np.float32)
    dp = os.path.join(tmp, "dora.safetensors")
    save(dp, dl)
    rc, _, se = run("lora", "bake", mp, "-o", out, dp + ":0.6")
    check(rc == 0, "bake DoRA rc %d %s" % (rc, se))
    if rc == 0:
        got, _ = load(out)
        for m, key in ((lin_m, lin_key), (conv_m, conv_key)):
            w = model[key]
            up = dl[m + ".lora_up.weight"].reshape(w.shape[0], 4)
            dn = dl[m + ".lora_down.weight"].reshape(4, -1)
            delta = (2.0 / 4) * (up @ dn).reshape(w.shape)
            want = dora_ref(w, delta, dl[m + ".dora_scale"], 0.6)
            check(close(got[key], want.astype(np.float16)), "DoRA bake matches numpy: %s" % key)
    dl[lin_m + ".dora_scale"] = np.ones((3, 3), np.float32)
    save(dp, dl)
    rc, _, se = run("lora", "bake", mp, "-o", out + ".x", dp)
    check(rc == 1 and "dora_scale" in se and not os.path.exists(out + ".x"), "misfit dora_scale refused: %d %s" % (rc, se))

    # SDXL refiner: its only text encoder (OpenCLIP bigG, conditioner.embedders.0.model.)
    # takes ComfyUI's lora_te_ names; q/k/v patch the row blocks of in_proj_weight
    ref = {k.replace("conditioner.embedders.1.", "conditioner.embedders.0."): v for k, v in model.items()
           if not k.startswith("conditioner.embedders.0.")}
    rp = os.path.join(tmp, "refiner.safetensors")
    save(rp, ref)
    ipk = "conditioner.embedders.0.model.transformer.resblocks.0.attn.in_proj_weight"
    opk = "conditioner.embedders.0.model.transformer.resblocks.0.attn.out_proj.weight"
    check(ipk in ref and opk in ref, "refiner-shaped model has the bigG attention")
    if ipk in ref and opk in ref:
        dmod = ref[ipk].shape[1]
        rl = {}
        for m in ("lora_te_text_model_encoder_layers_0_self_attn_k_proj",
                  "lora_te_text_model_encoder_layers_0_self_attn_out_proj"):
            rl[m + ".lora_down.weight"] = (rng.standard_normal((2, dmod)) * 0.2).astype(np.float32)
            rl[m + ".lora_up.weight"] = (rng.standard_normal((dmod, 2)) * 0.2).astype(np.float32)
            rl[m + ".alpha"] = np.array(2.0, np.float32)
        rlp = os.path.join(tmp, "refiner_lora.safetensors")
        save(rlp, rl)
        rc, _, se = run("lora", "bake", rp, "-o", out, rlp)
        check(rc == 0, "bake refiner rc %d %s" % (rc, se))
        if rc == 0:
            got, _ = load(out)
            want = ref[ipk].astype(np.float32)
            m = "lora_te_text_model_encoder_layers_0_self_attn_k_proj"
            want[dmod:2 * dmod] += rl[m + ".lora_up.weight"] @ rl[m + ".lora_down.weight"]
            check(close(got[ipk], want.astype(ref[ipk].dtype)), "refiner k_proj patches in_proj rows [d, 2d)")
            m = "lora_te_text_model_encoder_layers_0_self_attn_out_proj"
            want = ref[opk].astype(np.float32) + rl[m + ".lora_up.weight"] @ rl[m + ".lora_down.weight"]
            check(close(got[opk], want.astype(ref[opk].dtype)), "refiner out_proj patched")


def test_bake_sd2(tmp, rng):
    """SD2: diffusers-named UNet modules, HF-named text encoder modules on
    an OpenCLIP tower (q/k/v are row blocks of in_proj_weight)."""
    model = sd2_model(rng, np.float32)
    mp = os.path.join(tmp, "sd2.safetensors")
    save(mp, model)
    tg = kohya_targets(model, True, (1, 2, 4, 4), (1, 1, 1, 0))
    check(sum(k.startswith("lora_te_") and "_self_attn_k_proj" in k for k in tg) == 2, "sd2 te names")
    lt = make_lora(rng, model, tg, 4, dtype=np.float32)
    lp = os.path.join(tmp, "sd2_lora.safetensors")
    save(lp, lt)
    out = os.path.join(tmp, "sd2_baked.safetensors")
    rc, _, se = run("lora", "bake", mp, "-o", out, lp + ":1.5", "--dtype", "f16")
    check(rc == 0, "bake sd2 rc %d %s" % (rc, se))
    if rc:
        return
    got, _ = load(out)
    refs = {k: w.astype(np.float32) for k, w in model.items()}
    for mod, (key, r0, rows) in tg.items():
        refs[key][r0:r0 + rows] += 1.5 * lora_delta(lt, mod, rows, model[key].shape[1:])
    bad = [k for k in model if got[k].dtype != np.float16 or not close(got[k], refs[k].astype(np.float16))]
    check(not bad, "sd2 bake matches numpy: %s" % bad[:3])


def test_bake_peft(tmp, rng, sd1, mp):
    """PEFT (unet./text_encoder. + lora_A/lora_B, no alpha) and diffusers'
    attention-processor layout (to_q_lora.down ...), read as kohya names."""
    tg = kohya_targets(sd1, True, (1, 2, 4, 4), (1, 1, 1, 0))
    lin = {m: v for m, v in tg.items() if sd1[v[0]].ndim == 2}
    peft, refs = {}, {k: w.astype(np.float32) for k, w in sd1.items()}
    for m, (key, r0, rows) in sorted(lin.items()):
        cols = sd1[key].shape[1]
        a = (rng.standard_normal((4, cols)) * 0.1).astype(np.float16)
        b = (rng.standard_normal((rows, 4)) * 0.1).astype(np.float16)
        peft[DOTTED[m] + ".lora_A.weight"], peft[DOTTED[m] + ".lora_B.weight"] = a, b
        refs[key] += 0.8 * (b.astype(np.float32) @ a.astype(np.float32))
    pp = os.path.join(tmp, "peft.safetensors")
    save(pp, peft)
    out = os.path.join(tmp, "peft_baked.safetensors")
    rc, _, se = run("lora", "bake", mp, "-o", out, pp + ":0.8")
    check(rc == 0, "bake PEFT rc %d %s" % (rc, se))
    if rc == 0:
        got, _ = load(out)
        bad = [k for k in sd1 if not close(got[k], refs[k].astype(np.float16))]
        check(not bad, "PEFT bake matches numpy: %s" % bad[:3])
    # attention processors: attn1.processor.to_q_lora / to_out_lora (no unet. prefix)
    proc, refs = {}, {k: w.astype(np.float32) for k, w in sd1.items()}
    n = 0
    for m, (key, r0, rows) in sorted(lin.items()):
        d = DOTTED[m]
        if ".attn1.to_" not in d or not d.startswith("unet."):
            continue
        head, q = d[len("unet."):].rsplit(".attn1.", 1)
        q = q.replace("to_out.0", "to_out")
        base = head + ".attn1.processor." + q + "_lora"
        cols = sd1[key].shape[1]
        a = (rng.standard_normal((2, cols)) * 0.1).astype(np.float16)
        b = (rng.standard_normal((rows, 2)) * 0.1).astype(np.float16)
        proc[base + ".down.weight"], proc[base + ".up.weight"] = a, b
        refs[key] += b.astype(np.float32) @ a.astype(np.float32)
        n += 1
    check(n >= 8 and any("to_out_lora" in k for k in proc), "processor layout built (%d)" % n)
    pp = os.path.join(tmp, "procs.safetensors")
    save(pp, proc)
    rc, _, se = run("lora", "bake", mp, "-o", out, pp)
    check(rc == 0, "bake attention-processor LoRA rc %d %s" % (rc, se))
    if rc == 0:
        got, _ = load(out)
        bad = [k for k in sd1 if not close(got[k], refs[k].astype(np.float16))]
        check(not bad, "processor-layout bake matches numpy: %s" % bad[:3])


def flux_model(rng, H=32, mlp=4, double=2, single=2, prefix="model.diffusion_model."):
    t = {}
    def w(k, *shape):
        t[prefix + k] = (rng.standard_normal(shape) * 0.05).astype(np.float32)
    w("img_in.weight", H, 16); w("txt_in.weight", H, 24)
    w("time_in.in_layer.weight", H, 8); w("time_in.out_layer.weight", H, H)
    w("vector_in.in_layer.weight", H, 12); w("vector_in.out_layer.weight", H, H)
    w("guidance_in.in_layer.weight", H, 8); w("guidance_in.out_layer.weight", H, H)
    for b in range(double):
        for s in ("img", "txt"):
            p = "double_blocks.%d.%s_" % (b, s)
            w(p + "attn.qkv.weight", 3 * H, H); w(p + "attn.proj.weight", H, H)
            w(p + "mlp.0.weight", mlp * H, H); w(p + "mlp.2.weight", H, mlp * H)
            w(p + "mod.lin.weight", 6 * H, H)
            t[prefix + p + "attn.norm.query_norm.scale"] = np.ones(H // 2, np.float32)
    for b in range(single):
        p = "single_blocks.%d." % b
        w(p + "linear1.weight", 3 * H + mlp * H, H); w(p + "linear2.weight", H, H + mlp * H)
        w(p + "modulation.lin.weight", 3 * H, H)
    w("final_layer.linear.weight", 16, H)
    w("final_layer.adaLN_modulation.1.weight", 2 * H, H)
    return t


def test_bake_flux_text_encoders(tmp, rng):
    """ComfyUI's all-in-one Flux file: CLIP-L takes lora_te1_, T5-XXL kohya's
    lora_te3_ and OneTrainer's lora_te2_ (ComfyUI model_lora_keys_clip)."""
    model = flux_model(rng)
    ck = "text_encoders.clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
    tk = "text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight"
    model[ck] = (rng.standard_normal((16, 16)) * 0.1).astype(np.float16)
    model[tk] = (rng.standard_normal((24, 24)) * 0.1).astype(np.float16)
    mp = os.path.join(tmp, "flux_te.safetensors")
    save(mp, model)
    for t5name in ("lora_te3_", "lora_te2_"):
        lt, want = {}, {}
        for key, stem in ((ck, "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"),
                          (tk, t5name + "encoder_block_0_layer_0_SelfAttention_q")):
            n = model[key].shape[0]
            lt[stem + ".lora_down.weight"] = (rng.standard_normal((2, n)) * 0.2).astype(np.float32)
            lt[stem + ".lora_up.weight"] = (rng.standard_normal((n, 2)) * 0.2).astype(np.float32)
            want[key] = model[key].astype(np.float32) + 0.5 * (
                lt[stem + ".lora_up.weight"] @ lt[stem + ".lora_down.weight"])
        lp = os.path.join(tmp, "flux_te_lora.safetensors")
        save(lp, lt)
        out = os.path.join(tmp, "flux_te_baked.safetensors")
        rc, _, se = run("lora", "bake", mp, "-o", out, lp + ":0.5")
        check(rc == 0, "bake Flux text encoders (%s) rc %d %s" % (t5name, rc, se))
        if rc == 0:
            got, _ = load(out)
            for key in (ck, tk):
                check(close(got[key], want[key].astype(np.float16)), "Flux %s patched (%s)" % (key, t5name))


def test_bake_flux(tmp, rng):
    """Flux: kohya (BFL names), diffusers/PEFT (split of fused qkv and
    linear1 into row blocks, as flux_merge_lora.py / ComfyUI) and XLabs."""
    H = 32
    for prefix in ("model.diffusion_model.", ""):
        model = flux_model(rng, prefix=prefix)
        mp = os.path.join(tmp, "flux.safetensors")
        save(mp, model)
        refs = {k: w.copy() for k, w in model.items()}
        lt = {}

        def pair(name, key, r0, rows, rank=4, alpha=None, down="lora_down.weight", up="lora_up.weight",
                 strength=1.0):
            cols = model[prefix + key].shape[1]
            d = (rng.standard_normal((rank, cols)) * 0.1).astype(np.float32)
            u = (rng.standard_normal((rows, rank)) * 0.1).astype(np.float32)
            lt[name + "." + down], lt[name + "." + up] = d, u
            sc = 1.0
            if alpha is not None:
                lt[name + ".alpha"] = np.array(alpha, np.float32)
                sc = alpha / rank
            refs[prefix + key][r0:r0 + rows] += strength * sc * (u @ d)

        # kohya: whole fused weights
        pair("lora_unet_double_blocks_0_img_attn_qkv", "double_blocks.0.img_attn.qkv.weight", 0, 3 * H, alpha=2.0)
        pair("lora_unet_single_blocks_1_linear1", "single_blocks.1.linear1.weight", 0, 7 * H, alpha=8.0)
        pair("lora_unet_final_layer_adaLN_modulation_1", "final_layer.adaLN_modulation.1.weight", 0, 2 * H)
        kp = os.path.join(tmp, "flux_kohya.safetensors")
        save(kp, lt)
        k_lt = dict(lt)
        lt.clear()
        # PEFT diffusers names
        for i, q in enumerate(("to_q", "to_k", "to_v")):
            pair("transformer.transformer_blocks.1.attn." + q, "double_blocks.1.img_attn.qkv.weight",
                 i * H, H, down="lora_A.weight", up="lora_B.weight")
            pair("transformer.single_transformer_blocks.0.attn." + q, "single_blocks.0.linear1.weight",
                 i * H, H, down="lora_A.weight", up="lora_B.weight")
        pair("transformer.transformer_blocks.0.attn.add_k_proj", "double_blocks.0.txt_attn.qkv.weight", H, H,
             down="lora_A.weight", up="lora_B.weight")
        pair("transformer.single_transformer_blocks.0.proj_mlp", "single_blocks.0.linear1.weight", 3 * H, 4 * H,
             down="lora_A.weight", up="lora_B.weight")
        pair("transformer.single_transformer_blocks.1.proj_out", "single_blocks.1.linear2.weight", 0, H,
             down="lora_A.weight", up="lora_B.weight")
        pair("transformer.transformer_blocks.0.ff_context.net.2", "double_blocks.0.txt_mlp.2.weight", 0, H,
             down="lora_A.weight", up="lora_B.weight")
        pair("transformer.x_embedder", "img_in.weight", 0, H, down="lora_A.weight", up="lora_B.weight")
        # diffusers' norm_out.linear is [scale; shift], BFL's final AdaLN
        # [shift; scale]: the delta's halves go back swapped
        d = (rng.standard_normal((4, H)) * 0.1).astype(np.float32)
        u = (rng.standard_normal((2 * H, 4)) * 0.1).astype(np.float32)
        lt["transformer.norm_out.linear.lora_A.weight"], lt["transformer.norm_out.linear.lora_B.weight"] = d, u
        delta = u @ d
        refs[prefix + "final_layer.adaLN_modulation.1.weight"] += np.concatenate([delta[H:], delta[:H]])
        pp = os.path.join(tmp, "flux_peft.safetensors")
        save(pp, lt)
        lt.clear()
        # XLabs
        pair("double_blocks.1.processor.qkv_lora2", "double_blocks.1.txt_attn.qkv.weight", 0, 3 * H,
             down="down.weight", up="up.weight")
        pair("double_blocks.0.processor.proj_lora1", "double_blocks.0.img_attn.proj.weight", 0, H,
             down="down.weight", up="up.weight")
        xp = os.path.join(tmp, "flux_xlabs.safetensors")
        save(xp, lt)
        out = os.path.join(tmp, "flux_baked.safetensors")
        rc, _, se = run("lora", "bake", mp, "-o", out, kp, pp, xp)
        check(rc == 0, "bake flux (%r) rc %d %s" % (prefix, rc, se))
        if rc == 0:
            got, _ = load(out)
            bad = [k for k in model if not close(got[k], refs[k], 1e-5)]
            check(not bad, "flux bake (%r) matches numpy: %s" % (prefix, bad[:3]))
        # a LoHa on the same weight: computed whole by one worker, the swapped
        # LoRA with it
        hm = "lora_unet_final_layer_adaLN_modulation_1"
        ht = {hm + ".hada_w1_a": (rng.standard_normal((2 * H, 2)) * 0.3).astype(np.float32),
              hm + ".hada_w1_b": (rng.standard_normal((2, H)) * 0.3).astype(np.float32),
              hm + ".hada_w2_a": (rng.standard_normal((2 * H, 2)) * 0.3).astype(np.float32),
              hm + ".hada_w2_b": (rng.standard_normal((2, H)) * 0.3).astype(np.float32),
              hm + ".alpha": np.array(2.0, np.float32)}
        hp = os.path.join(tmp, "flux_loha.safetensors")
        save(hp, ht)
        fk = prefix + "final_layer.adaLN_modulation.1.weight"
        want = refs[fk] + loha_delta(ht, hm)
        rc, _, se = run("lora", "bake", mp, "-o", out, kp, pp, xp, hp)
        check(rc == 0, "bake flux with a LoHa on the swapped weight (%r) rc %d %s" % (prefix, rc, se))
        if rc == 0:
            got, _ = load(out)
            check(close(got[fk], want, 1e-5), "flux: LoHa and swapped LoRA on one weight (%r)" % prefix)
        del k_lt


def test_errors(tmp, rng, sd1, mp):
    out = os.path.join(tmp, "err_out.safetensors")
    key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    mod = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    rows, cols = sd1[key].shape

    def lora(down, up, alpha=1.0, extra=None):
        t = {mod + ".lora_down.weight": down.astype(np.float16), mod + ".lora_up.weight": up.astype(np.float16),
             mod + ".alpha": np.array(alpha, np.float16)}
        t.update(extra or {})
        p = os.path.join(tmp, "bad.safetensors")
        save(p, t)
        return p

    cases = {
        "shape mismatch": lora(np.ones((4, cols + 1)), np.ones((rows, 4))),
        "up rows": lora(np.ones((4, cols)), np.ones((rows - 1, 4))),
        "rank 0": lora(np.ones((0, cols)), np.ones((rows, 0))),
        "NaN alpha": lora(np.ones((4, cols)), np.ones((rows, 4)), float("nan")),
        "rank above dims": lora(np.ones((cols + 1, cols)), np.ones((rows, cols + 1))),
    }
    for what, p in cases.items():
        rc, _, se = run("lora", "bake", mp, "-o", out, p)
        check(rc == 1, "%s: exit 1, got %d: %s" % (what, rc, se.strip()))
        check("lora" in se, "%s: error names the code: %s" % (what, se.strip()))
        check(not os.path.exists(out), "%s: no output" % what)
    # a factor that is not a float is found by the worker reading it, after
    # other tensors are in the output file: exit 1, no output, no temp file
    late = "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_out_0"
    lk = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.attn2.to_out.0.weight"
    if lk in sd1:
        lr, lc = sd1[lk].shape
        p = lora(np.ones((4, cols)), np.ones((rows, 4)), 1.0,
                 {late + ".lora_down.weight": np.ones((4, lc), np.float16),
                  late + ".lora_up.weight": np.ones((lr, 4), np.int32)})
        rc, _, se = run("lora", "bake", mp, "-o", out, p)
        check(rc == 1 and "not a float" in se, "an integer factor: exit 1 naming it (%d %s)" % (rc, se.strip()))
        check(not os.path.exists(out), "an integer factor: no output")
        check(not [f for f in os.listdir(tmp) if f.startswith(".err_out")], "an integer factor: no temp file")
    else:
        check(False, "the sd1 model has " + lk)
    # unmatched modules: error listing them, or a warning with a count
    good = lora(np.ones((4, cols)), np.ones((rows, 4)), 1.0,
                {"lora_unet_no_such_layer.lora_down.weight": np.ones((4, 8), np.float16),
                 "lora_unet_no_such_layer.lora_up.weight": np.ones((8, 4), np.float16)})
    rc, _, se = run("lora", "bake", mp, "-o", out, good)
    check(rc == 1 and "lora_unet_no_such_layer" in se, "unmatched is an error naming it: %d %s" % (rc, se))
    check(not os.path.exists(out), "unmatched: no output")
    rc, so, se = run("lora", "bake", mp, "-o", out, good, "--allow-unmatched")
    check(rc == 0 and "1 LoRA module(s) matched no model weight" in se, "--allow-unmatched warns: " + se)
    check(os.path.exists(out), "--allow-unmatched writes")
    # not a LoRA, missing file, bad strength, usage
    rc, _, se = run("lora", "bake", mp, "-o", out, mp)
    check(rc == 1, "a checkpoint as LoRA: exit 1 (%d) %s" % (rc, se))
    rc, _, _ = run("lora", "bake", mp, "-o", out, os.path.join(tmp, "missing.safetensors"))
    check(rc == 2, "missing LoRA: exit 2")
    rc, _, _ = run("lora", "bake", mp)
    check(rc == 2, "usage error: exit 2")
    rc, _, _ = run("lora", "frobnicate")
    check(rc == 2, "unknown subcommand: exit 2")
    rc, so, _ = run("lora", "--help")
    check(rc == 0 and "extract" in so, "--help")


def test_roundtrip(tmp, rng, family):
    """bake a random rank-r LoRA into an f32 model, extract it back."""
    if family == "sd1":
        model = sd1_model(rng, np.float32)
        tg = kohya_targets(model, True, (1, 2, 4, 4), (1, 1, 1, 0), conv=True)
    else:
        model = sdxl_model(rng, np.float32)
        tg = kohya_targets(model, False, conv=False)
    base = os.path.join(tmp, family + "_base.safetensors")
    save(base, model)
    every = tg
    tg = {k: v for i, (k, v) in enumerate(sorted(every.items())) if i % 5}
    lt = make_lora(rng, model, tg, 4, dtype=np.float32)
    lp = os.path.join(tmp, family + "_rt_lora.safetensors")
    save(lp, lt)
    tuned = os.path.join(tmp, family + "_tuned.safetensors")
    rc, _, se = run("lora", "bake", base, "-o", tuned, lp)
    check(rc == 0, "roundtrip bake " + se)
    out = os.path.join(tmp, family + "_extracted.safetensors")
    args = ["lora", "extract", base, tuned, "-o", out, "--rank", 4, "--min-diff", "1e-7"]
    if family == "sd1":
        args += ["--conv-rank", 4]
    rc, so, se = run(*args)
    check(rc == 0, "extract rc %d %s" % (rc, se))
    if rc:
        return
    ex, meta = load(out)
    mods = {k[:-len(".lora_down.weight")] for k in ex if k.endswith(".lora_down.weight")}
    check(mods == set(tg), "%s extract names = the LoRA's (%d vs %d; extra %s missing %s)" % (
        family, len(mods), len(tg), sorted(mods - set(tg))[:3], sorted(set(tg) - mods)[:3]))
    check(meta.get("ss_network_module") == "networks.lora" and meta.get("ss_network_dim") == "4" and
          meta.get("ss_network_alpha") == "4.0", "ss_ metadata %s" % meta)
    check(meta.get("ss_base_model_version") == ("sd_v1" if family == "sd1" else "sdxl_base_v1-0"),
          "ss_base_model_version")
    worst = 0.0
    for m in mods & set(tg):
        key, r0, rows = tg[m]
        shape_rest = model[key].shape[1:]
        want = lora_delta(lt, m, rows, shape_rest).reshape(rows, -1)
        dn, up = ex[m + ".lora_down.weight"], ex[m + ".lora_up.weight"]
        check(dn.ndim == model[key].ndim and up.shape[0] == rows, "%s shapes" % m)
        a = float(ex[m + ".alpha"])
        got = (a / dn.shape[0]) * (up.reshape(rows, -1) @ dn.reshape(dn.shape[0], -1))
        worst = max(worst, rel_err(got, want))
    check(worst < 1e-3, "%s round trip relative error %.2e < 1e-3" % (family, worst))
    n_skipped = int(so.split(" left out")[0].split(", ")[-1].split()[0]) if " left out" in so else -1
    check(n_skipped == len(every) - len(tg), "layers without a difference are counted: " + so)

    # a full-rank difference: randomized SVD close to the best rank-r error
    key = [k for k in model if k.endswith("attn1.to_q.weight")][0]
    t2 = dict(model)
    rs = np.random.default_rng(7)
    u = rs.standard_normal((model[key].shape[0], model[key].shape[0]))
    decay = np.diag(0.9 ** np.arange(model[key].shape[0]))
    t2[key] = model[key] + (u @ decay @ rs.standard_normal(model[key].shape) * 0.01).astype(np.float32)
    tuned2 = os.path.join(tmp, family + "_tuned2.safetensors")
    save(tuned2, t2)
    out2 = os.path.join(tmp, family + "_ex2.safetensors")
    rc, _, se = run("lora", "extract", base, tuned2, "-o", out2, "--rank", 8, "--min-diff", "0.0001",
                    "--progress")
    check(rc == 0, "extract full-rank diff " + se)
    check("lora extract" in se and "layers" in se, "extract --progress counts layers (%r)" % se[-160:])
    if rc == 0:
        ex2, _ = load(out2)
        m = [k for k in ex2 if k.endswith(".lora_down.weight")]
        check(len(m) == 1, "only the changed layer is extracted: %d" % len(m))
        d = (t2[key] - model[key]).astype(np.float64)
        U, S, Vt = np.linalg.svd(d)
        best = np.linalg.norm(d - (U[:, :8] * S[:8]) @ Vt[:8])
        stem = m[0][:-len(".lora_down.weight")]
        got = ex2[stem + ".lora_up.weight"] @ ex2[stem + ".lora_down.weight"]
        ours = np.linalg.norm(d - got)
        check(ours <= best * 1.02 + 1e-7, "rank-8 error %.4g vs optimal %.4g" % (ours, best))


def kohya_rank(S, rank, method, param, full):
    S = np.concatenate([S, np.zeros(full - len(S))])
    if method == "sv_ratio":
        idx = int(np.sum(S > S[0] / param)) - 1
    elif method == "sv_cumulative":
        idx = int(np.searchsorted(np.cumsum(S) / np.sum(S), param))
    elif method == "sv_fro":
        idx = int(np.searchsorted(np.cumsum(S ** 2) / np.sum(S ** 2), param ** 2))
    else:
        idx = rank - 1
    idx = max(0, min(idx, len(S) - 1))
    new = idx + 1
    if S[0] <= 1e-6:
        new = 1
    elif new > rank:
        new = rank
    return new


def test_resize(tmp, rng, sd1):
    tg = kohya_targets(sd1, True, (1, 2, 4, 4), (1, 1, 1, 0), conv=True)
    tg = dict(sorted(tg.items())[:40])
    lt = make_lora(rng, sd1, tg, 8, dtype=np.float32, alpha=4.0)
    # give the layers a decaying spectrum so the dynamic rules differ per layer
    for m in tg:
        up = lt[m + ".lora_up.weight"]
        r = up.shape[1]
        lt[m + ".lora_up.weight"] = (up * (rng.uniform(0.3, 0.9) ** np.arange(r)).reshape(
            (1, r) + (1,) * (up.ndim - 2))).astype(np.float32)
    lp = os.path.join(tmp, "rs_lora.safetensors")
    save(lp, lt, {"ss_training_comment": "hi", "sshs_model_hash": "stale"})
    out = os.path.join(tmp, "rs_out.safetensors")
    rc, so, se = run("lora", "resize", lp, "-o", out, "--rank", 4)
    check(rc == 0, "resize rc " + se)
    check("lora resize" not in se, "resize into a pipe: no progress line")
    out_p = os.path.join(tmp, "rs_out_p.safetensors")
    rc, so_p, se_p = run("lora", "resize", lp, "-o", out_p, "--rank", 4, "--progress")
    check(rc == 0 and "lora resize" in se_p and "40 / 40 layers" in se_p,
          "resize --progress: a line counting layers (%r)" % se_p[-160:])
    check(rc == 0 and so_p == so and open(out_p, "rb").read() == open(out, "rb").read(),
          "resize --progress: same output and layer lines")
    if rc == 0:
        got, meta = load(out)
        worst = 0.0
        for m, (key, r0, rows) in tg.items():
            M = lt[m + ".lora_up.weight"].reshape(rows, -1) @ lt[m + ".lora_down.weight"].reshape(
                lt[m + ".lora_down.weight"].shape[0], -1)
            U, S, Vt = np.linalg.svd(M.astype(np.float64), full_matrices=False)
            want = (U[:, :4] * S[:4]) @ Vt[:4]
            dn, up = got[m + ".lora_down.weight"], got[m + ".lora_up.weight"]
            check(dn.shape[0] == 4 and dn.ndim == lt[m + ".lora_down.weight"].ndim, "resized shape " + m)
            check(abs(float(got[m + ".alpha"]) - 4.0 / 8 * 4) < 1e-6, "alpha scaled")
            worst = max(worst, rel_err(up.reshape(rows, -1) @ dn.reshape(4, -1), want))
        check(worst < 1e-3, "resize matches numpy SVD (%.2e)" % worst)
        check(meta.get("ss_network_dim") == "4" and meta.get("ss_network_alpha") == "2.0" and
              meta.get("ss_training_comment") == "dimension is resized from 8 to 4; hi" and
              "sshs_model_hash" not in meta, "resize metadata %s" % meta)
        check(so.count("fro retained") == len(tg), "a line per layer")
    for method, param in (("sv_ratio", 3.0), ("sv_fro", 0.9), ("sv_cumulative", 0.7)):
        rc, so, se = run("lora", "resize", lp, "-o", out, "--rank", 6, "--dynamic", "%s=%g" % (method, param))
        check(rc == 0, "resize %s rc %s" % (method, se))
        if rc:
            continue
        got, meta = load(out)
        bad = 0
        for m, (key, r0, rows) in tg.items():
            dn0 = lt[m + ".lora_down.weight"]
            M = lt[m + ".lora_up.weight"].reshape(rows, -1) @ dn0.reshape(dn0.shape[0], -1)
            S = np.linalg.svd(M.astype(np.float64), compute_uv=False)[:dn0.shape[0]]
            want = min(kohya_rank(S, 6, method, param, min(M.shape)), dn0.shape[0])
            if got[m + ".lora_down.weight"].shape[0] != want:
                bad += 1
        check(bad == 0, "%s ranks as kohya's rules (%d differ)" % (method, bad))
        check(meta.get("ss_network_dim") == "Dynamic", "dynamic metadata")
    rc, _, _ = run("lora", "resize", lp, "-o", out, "--rank", 4, "--dynamic", "sv_bogus=1")
    check(rc == 2, "bad --dynamic: exit 2")


def main():
    rng = np.random.default_rng(1234)
    with tempfile.TemporaryDirectory() as tmp:
        r = test_bake_sd1(tmp, rng)
        test_bake_sdxl_lycoris(tmp, rng)
        test_bake_sd2(tmp, rng)
        test_bake_flux(tmp, rng)
        test_bake_flux_text_encoders(tmp, rng)
        if r:
            test_bake_peft(tmp, rng, *r)
            test_errors(tmp, rng, *r)
            test_resize(tmp, rng, r[0])
        test_roundtrip(tmp, rng, "sd1")
        test_roundtrip(tmp, rng, "sdxl")
    print("# passed %d failed %d" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

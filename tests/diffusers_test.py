"""`safetensors convert --to diffusers|single-file` for Stable Diffusion 1.x.

The key sets are built here from the architectures' real module names
(LDM's UNetModel / AutoencoderKL / HF CLIPTextModel as SD1 checkpoints hold
them, and diffusers' UNet2DConditionModel / AutoencoderKL), generated in
lockstep so the test knows which name maps to which without asking the
library. Shapes are the real ones for the tensors the conversion inspects
(the UNet's cross-attention and proj_in, conv_in, the VAE attention 1x1
convolutions) and shrunk elsewhere, so the files stay small; every tensor
has its own random bytes. Checks: every key of each model is mapped (the
output key sets are exactly the expected ones), bytes follow their tensor,
the VAE attention weights change rank, the schedule buffers are counted as
left out, single -> diffusers -> single is byte-identical to `convert` of
the source, old diffusers VAE names and a sharded UNet are read, and
unmapped keys, EMA weights, SD2 and incomplete folders are errors naming
the key or file, with no output left.

Runs the CLI given by $ST_BIN; data is generated in a temp dir."""
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

BIN = os.environ.get("ST_BIN") or os.path.join(os.path.dirname(__file__), "..", "build", "safetensors")
passed = failed = 0
rng = random.Random(7)


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


# ---- the two namings, generated together ----
# each entry: (ldm_name, component, diffusers_name, ldm_shape, diffusers_shape)

def small(shape):
    return [min(d, 3) for d in shape]


class Pairs:
    def __init__(self):
        self.items = []

    def add(self, ldm, comp, diff, shape, dshape=None, real=False):
        s = list(shape) if real else small(shape)
        if dshape is None:
            d = s
        else:
            d = list(dshape) if real else small(dshape)
        self.items.append((ldm, comp, diff, s, d))

    def wb(self, ldm, comp, diff, shape, bias=True, real=False):
        self.add(ldm + "weight", comp, diff + "weight", shape, real=real)
        if bias:
            self.add(ldm + "bias", comp, diff + "bias", [shape[0]])


def unet(P, in_ch=4, context=768, linear_proj=False):
    U = "model.diffusion_model."
    mc, mult, temb = 320, (1, 2, 4, 4), 1280
    P.wb(U + "time_embed.0.", "unet", "time_embedding.linear_1.", [temb, mc])
    P.wb(U + "time_embed.2.", "unet", "time_embedding.linear_2.", [temb, temb])
    P.wb(U + "input_blocks.0.0.", "unet", "conv_in.", [mc, in_ch, 3, 3])
    P.items[-2] = (U + "input_blocks.0.0.weight", "unet", "conv_in.weight", [3, in_ch, 3, 3], [3, in_ch, 3, 3])

    def res(lp, dp, cin, cout):
        P.wb(U + lp + "in_layers.0.", "unet", dp + "norm1.", [cin])
        P.wb(U + lp + "in_layers.2.", "unet", dp + "conv1.", [cout, cin, 3, 3])
        P.wb(U + lp + "emb_layers.1.", "unet", dp + "time_emb_proj.", [cout, temb])
        P.wb(U + lp + "out_layers.0.", "unet", dp + "norm2.", [cout])
        P.wb(U + lp + "out_layers.3.", "unet", dp + "conv2.", [cout, cout, 3, 3])
        if cin != cout:
            P.wb(U + lp + "skip_connection.", "unet", dp + "conv_shortcut.", [cout, cin, 1, 1])

    def attn(lp, dp, ch, probe=False):
        P.wb(U + lp + "norm.", "unet", dp + "norm.", [ch])
        proj = [ch, ch] if linear_proj else [ch, ch, 1, 1]
        P.wb(U + lp + "proj_in.", "unet", dp + "proj_in.", proj, real=probe)
        b = "transformer_blocks.0."
        for a in ("attn1", "attn2"):
            kv = context if a == "attn2" else ch
            P.wb(U + lp + b + a + ".to_q.", "unet", dp + b + a + ".to_q.", [ch, ch], bias=False)
            P.wb(U + lp + b + a + ".to_k.", "unet", dp + b + a + ".to_k.", [ch, kv], bias=False,
                 real=probe and a == "attn2")
            P.wb(U + lp + b + a + ".to_v.", "unet", dp + b + a + ".to_v.", [ch, kv], bias=False)
            P.wb(U + lp + b + a + ".to_out.0.", "unet", dp + b + a + ".to_out.0.", [ch, ch])
        P.wb(U + lp + b + "ff.net.0.proj.", "unet", dp + b + "ff.net.0.proj.", [ch * 8, ch])
        P.wb(U + lp + b + "ff.net.2.", "unet", dp + b + "ff.net.2.", [ch, ch * 4])
        for n in ("norm1", "norm2", "norm3"):
            P.wb(U + lp + b + n + ".", "unet", dp + b + n + ".", [ch])
        P.wb(U + lp + "proj_out.", "unet", dp + "proj_out.", proj)

    idx, ch, chans = 1, mc, [mc]
    for i, m in enumerate(mult):
        for j in range(2):
            res("input_blocks.%d.0." % idx, "down_blocks.%d.resnets.%d." % (i, j), ch, m * mc)
            ch = m * mc
            if i < 3:
                attn("input_blocks.%d.1." % idx, "down_blocks.%d.attentions.%d." % (i, j), ch, probe=idx == 1)
            chans.append(ch)
            idx += 1
        if i < 3:
            P.wb(U + "input_blocks.%d.0.op." % idx, "unet", "down_blocks.%d.downsamplers.0.conv." % i, [ch, ch, 3, 3])
            chans.append(ch)
            idx += 1
    res("middle_block.0.", "mid_block.resnets.0.", ch, ch)
    attn("middle_block.1.", "mid_block.attentions.0.", ch)
    res("middle_block.2.", "mid_block.resnets.1.", ch, ch)
    idx = 0
    for i in range(4):  # diffusers' up_blocks.i is LDM level 3 - i
        m = mult[3 - i]
        for j in range(3):
            skip = chans.pop()
            res("output_blocks.%d.0." % idx, "up_blocks.%d.resnets.%d." % (i, j), ch + skip, m * mc)
            ch = m * mc
            if i > 0:
                attn("output_blocks.%d.1." % idx, "up_blocks.%d.attentions.%d." % (i, j), ch)
            if i < 3 and j == 2:
                P.wb(U + "output_blocks.%d.%d.conv." % (idx, 1 if i == 0 else 2), "unet",
                     "up_blocks.%d.upsamplers.0.conv." % i, [ch, ch, 3, 3])
            idx += 1
    P.wb(U + "out.0.", "unet", "conv_norm_out.", [mc])
    P.wb(U + "out.2.", "unet", "conv_out.", [4, mc, 3, 3])


def vae(P, old_names=False):
    V = "first_stage_model."
    P.wb(V + "encoder.conv_in.", "vae", "encoder.conv_in.", [128, 3, 3, 3])

    def res(lp, dp, cin, cout):
        for n, shape in (("norm1", [cin]), ("conv1", [cout, cin, 3, 3]), ("norm2", [cout]),
                         ("conv2", [cout, cout, 3, 3])):
            P.wb(V + lp + n + ".", "vae", dp + n + ".", shape)
        if cin != cout:
            P.wb(V + lp + "nin_shortcut.", "vae", dp + "conv_shortcut.", [cout, cin, 1, 1])

    def attn(side):
        lp, dp = V + side + ".mid.attn_1.", side + ".mid_block.attentions.0."
        P.wb(lp + "norm.", "vae", dp + "group_norm.", [512])
        names = (("q", "query"), ("k", "key"), ("v", "value"), ("proj_out", "proj_attn")) if old_names else \
            (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("proj_out", "to_out.0"))
        for l, d in names:
            P.add(lp + l + ".weight", "vae", dp + d + ".weight", [3, 3, 1, 1], [3, 3])
            P.add(lp + l + ".bias", "vae", dp + d + ".bias", [3])

    ch = [128, 256, 512, 512]
    cin = 128
    for i, c in enumerate(ch):
        for j in range(2):
            res("encoder.down.%d.block.%d." % (i, j), "encoder.down_blocks.%d.resnets.%d." % (i, j), cin, c)
            cin = c
        if i < 3:
            P.wb(V + "encoder.down.%d.downsample.conv." % i, "vae", "encoder.down_blocks.%d.downsamplers.0.conv." % i, [c, c, 3, 3])
    res("encoder.mid.block_1.", "encoder.mid_block.resnets.0.", 512, 512)
    attn("encoder")
    res("encoder.mid.block_2.", "encoder.mid_block.resnets.1.", 512, 512)
    P.wb(V + "encoder.norm_out.", "vae", "encoder.conv_norm_out.", [512])
    P.wb(V + "encoder.conv_out.", "vae", "encoder.conv_out.", [8, 512, 3, 3])
    P.wb(V + "decoder.conv_in.", "vae", "decoder.conv_in.", [512, 4, 3, 3])
    res("decoder.mid.block_1.", "decoder.mid_block.resnets.0.", 512, 512)
    attn("decoder")
    res("decoder.mid.block_2.", "decoder.mid_block.resnets.1.", 512, 512)
    cin = 512
    for i in range(4):  # diffusers' up_blocks.i is LDM up.(3 - i)
        c = ch[3 - i]
        for j in range(3):
            res("decoder.up.%d.block.%d." % (3 - i, j), "decoder.up_blocks.%d.resnets.%d." % (i, j), cin, c)
            cin = c
        if i < 3:
            P.wb(V + "decoder.up.%d.upsample.conv." % (3 - i), "vae", "decoder.up_blocks.%d.upsamplers.0.conv." % i, [c, c, 3, 3])
    P.wb(V + "decoder.norm_out.", "vae", "decoder.conv_norm_out.", [128])
    P.wb(V + "decoder.conv_out.", "vae", "decoder.conv_out.", [3, 128, 3, 3])
    P.wb(V + "quant_conv.", "vae", "quant_conv.", [8, 8, 1, 1])
    P.wb(V + "post_quant_conv.", "vae", "post_quant_conv.", [4, 4, 1, 1])


def text_encoder(P, position_ids=True, T="cond_stage_model.transformer."):
    t = "text_model."
    P.add(T + t + "embeddings.token_embedding.weight", "text_encoder", t + "embeddings.token_embedding.weight", [49408, 768])
    P.add(T + t + "embeddings.position_embedding.weight", "text_encoder", t + "embeddings.position_embedding.weight", [77, 768])
    if position_ids:
        P.add(T + t + "embeddings.position_ids", "text_encoder", t + "embeddings.position_ids", [1, 77])
    for i in range(12):
        p = t + "encoder.layers.%d." % i
        for q in ("q", "k", "v", "out"):
            P.wb(T + p + "self_attn.%s_proj." % q, "text_encoder", p + "self_attn.%s_proj." % q, [768, 768])
        for n in ("layer_norm1", "layer_norm2"):
            P.wb(T + p + n + ".", "text_encoder", p + n + ".", [768])
        P.wb(T + p + "mlp.fc1.", "text_encoder", p + "mlp.fc1.", [3072, 768])
        P.wb(T + p + "mlp.fc2.", "text_encoder", p + "mlp.fc2.", [768, 3072])
    P.wb(T + t + "final_layer_norm.", "text_encoder", t + "final_layer_norm.", [768])


SCHEDULE = ["betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
            "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
            "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
            "posterior_mean_coef1", "posterior_mean_coef2"]


def sd1(**kw):
    P = Pairs()
    unet(P, **{k: v for k, v in kw.items() if k in ("in_ch", "context", "linear_proj")})
    vae(P, old_names=kw.get("old_names", False))
    text_encoder(P)
    return P


# ---- files ----

def nbytes(dt, shape):
    n = {"F16": 2, "F32": 4, "I64": 8}[dt]
    for d in shape:
        n *= d
    return n


def write_st(path, tensors, metadata=None):
    """tensors: name -> (dtype, shape, bytes), written in the given order."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    off = 0
    for name, (dt, shape, data) in tensors.items():
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(v[2] for v in tensors.values()))


def read_st(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in header.items()}, meta


def make_data(P):
    """ldm name -> (dtype, shape, bytes); unique bytes per tensor."""
    out = {}
    for ldm, comp, diff, s, d in P.items:
        dt = "I64" if ldm.endswith("position_ids") else ("F32" if comp == "text_encoder" else "F16")
        out[ldm] = (dt, s, rng.randbytes(nbytes(dt, s)))
    return out


def main():
    tmp = tempfile.mkdtemp()
    try:
        P = sd1()
        counts = {}
        for _, comp, _, _, _ in P.items:
            counts[comp] = counts.get(comp, 0) + 1
        # the real models' tensor counts
        check(counts == {"unet": 686, "vae": 248, "text_encoder": 197}, "key counts %r" % counts)
        data = make_data(P)
        single = dict(data)
        items = list(single.items())
        rng.shuffle(items)
        single = dict(items)
        for s in SCHEDULE:
            single[s] = ("F32", [1000], rng.randbytes(4000))
        src = os.path.join(tmp, "sd15.safetensors")
        write_st(src, single)
        out = os.path.join(tmp, "diff")
        rc, so, se = run("convert", "-q", src, out, "--to", "diffusers")
        check(rc == 0, "to diffusers: %d %s" % (rc, se))
        check("left out %d" % len(SCHEDULE) in so, "left out count: %s" % so)
        files = {"unet": "unet/diffusion_pytorch_model.safetensors",
                 "vae": "vae/diffusion_pytorch_model.safetensors",
                 "text_encoder": "text_encoder/model.safetensors"}
        for comp, rel in files.items():
            path = os.path.join(out, rel)
            if not os.path.exists(path):
                check(False, "missing " + rel)
                continue
            got, meta = read_st(path)
            want = {diff: (ldm, d) for ldm, c, diff, s, d in P.items if c == comp}
            check(set(got) == set(want), "%s: key set (%d vs %d; extra %s, missing %s)" % (
                comp, len(got), len(want), sorted(set(got) - set(want))[:3], sorted(set(want) - set(got))[:3]))
            check(meta == {"format": "pt"}, "%s metadata %r" % (comp, meta))
            bad = 0
            for diff, (ldm, d) in want.items():
                if diff not in got:
                    continue
                dt, shape, b = got[diff]
                if b != data[ldm][2] or shape != d or dt != data[ldm][0]:
                    bad += 1
            check(bad == 0, "%s: %d tensors with wrong bytes or shape" % (comp, bad))
        for rel in ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
                    "scheduler/scheduler_config.json"):
            p = os.path.join(out, rel)
            ok = os.path.exists(p)
            if ok:
                try:
                    json.load(open(p))
                except ValueError:
                    ok = False
            check(ok, "config %s written and valid JSON" % rel)
        cfg = json.load(open(os.path.join(out, "unet/config.json")))
        check(cfg.get("in_channels") == 4 and cfg.get("cross_attention_dim") == 768, "unet config %r" % cfg)
        check(json.load(open(os.path.join(out, "model_index.json")))["_class_name"] == "StableDiffusionPipeline", "model_index")
        check(not [f for f in os.listdir(out) if f.startswith(".")], "no staged files left")

        # back: byte-identical to convert of the source without the schedule
        back = os.path.join(tmp, "back.safetensors")
        rc, so, se = run("convert", "-q", out, back, "--to", "single-file")
        check(rc == 0, "to single-file: %d %s" % (rc, se))
        plain = os.path.join(tmp, "plain.safetensors")
        write_st(plain, data)
        canon = os.path.join(tmp, "canon.safetensors")
        rc, so, se = run("convert", plain, canon)
        check(rc == 0 and open(back, "rb").read() == open(canon, "rb").read(),
              "single -> diffusers -> single is byte-identical to convert of the source")
        # again from there: diffusers output identical too
        out2 = os.path.join(tmp, "diff2")
        rc, _, se = run("convert", "-q", back, out2, "--to", "diffusers")
        same = rc == 0 and all(open(os.path.join(out, r), "rb").read() == open(os.path.join(out2, r), "rb").read()
                               for r in list(files.values()) + ["unet/config.json"])
        check(same, "second round trip identical: %s" % se)

        # a diffusers folder as diffusers wrote it long ago: old VAE names,
        # and a sharded UNet
        P2 = sd1(old_names=True, in_ch=9)
        data2 = make_data(P2)
        d2 = os.path.join(tmp, "old")
        for sub in ("unet", "vae", "text_encoder"):
            os.makedirs(os.path.join(d2, sub))
        with open(os.path.join(d2, "model_index.json"), "w") as f:
            f.write('{"_class_name": "StableDiffusionInpaintPipeline"}')
        comps = {"unet": {}, "vae": {}, "text_encoder": {}}
        for ldm, comp, diff, s, d in P2.items:
            dt, _, b = data2[ldm]
            comps[comp][diff] = (dt, d, b)
        write_st(os.path.join(d2, "vae", "diffusion_pytorch_model.safetensors"), comps["vae"], {"format": "pt"})
        write_st(os.path.join(d2, "text_encoder", "model.safetensors"), comps["text_encoder"], {"format": "pt"})
        un = os.path.join(d2, "unet")
        rc, _, se = run("convert", "-q", os.path.join(tmp, "dummy-missing"), un, "--to", "diffusers")
        check(rc == 2 and not os.listdir(un), "missing input: %d" % rc)
        whole = os.path.join(tmp, "unet-whole.safetensors")
        write_st(whole, comps["unet"], {"format": "pt"})
        rc, _, se = run("split", "-q", "--max-shard-size", "200KB", "--prefix", "diffusion_pytorch_model", whole, un)
        check(rc == 0 and os.path.exists(os.path.join(un, "diffusion_pytorch_model.safetensors.index.json")),
              "sharded unet: %s" % se)
        back2 = os.path.join(tmp, "back2.safetensors")
        rc, so, se = run("convert", "-q", d2, back2, "--to", "single-file")
        check(rc == 0, "old-style folder to single-file: %d %s" % (rc, se))
        if rc == 0:
            got, meta = read_st(back2)
            check(set(got) == {x[0] for x in P2.items}, "old-style: LDM key set")
            check(all(got[l][2] == data2[l][2] and got[l][1] == s for l, c, d, s, ds in P2.items), "old-style: bytes and shapes")
            check(meta is None, "single file without metadata")
            rc, so, se = run("identify", "--json", back2)
            j = json.loads(so) if rc == 0 else {}
            check(j.get("family") == "sd1" and "inpainting" in j.get("variant", []), "identify the result: %s" % so[:300])
        rc, _, se = run("convert", "-q", back2, os.path.join(tmp, "d3"), "--to", "diffusers")
        cfg = json.load(open(os.path.join(tmp, "d3", "unet", "config.json"))) if rc == 0 else {}
        check(cfg.get("in_channels") == 9, "inpainting in_channels: %r %s" % (cfg.get("in_channels"), se))

        # errors
        def expect_fail(tensors, what, needle, to="diffusers", folder=None):
            p = os.path.join(tmp, "bad.safetensors")
            o = os.path.join(tmp, "bad-out")
            shutil.rmtree(o, ignore_errors=True)
            if folder is None:
                write_st(p, tensors)
                rc, so, se = run("convert", "-q", p, o, "--to", to)
            else:
                rc, so, se = run("convert", "-q", folder, o, "--to", to)
            left = os.path.exists(o)
            check(rc == 2 and needle in se and not left, "%s: rc %d, %r, output left %s" % (what, rc, se.strip()[:300], left))

        t = dict(data)
        t["model.diffusion_model.input_blocks.1.0.extra.weight"] = ("F16", [2], b"abcd")
        expect_fail(t, "unmapped UNet key", "input_blocks.1.0.extra.weight")
        t = dict(data)
        t["model_ema.diffusion_modelinput_blocks00weight"] = ("F16", [2], b"abcd")
        expect_fail(t, "EMA weights", "EMA")
        t = dict(data)
        t["cond_stage_model.transformer.text_model.pooler.weight"] = ("F16", [2], b"abcd")
        expect_fail(t, "unmapped text encoder key", "pooler")
        t = {k: v for k, v in data.items() if not k.startswith("first_stage_model.")}
        expect_fail(t, "no VAE", "vae")
        P3 = sd1(context=1024, linear_proj=True)
        expect_fail(make_data(P3), "SD2", "1.x")
        # a folder with an unknown key, or without model_index.json
        bad = os.path.join(tmp, "badfolder")
        shutil.copytree(d2, bad)
        ex = os.path.join(bad, "vae", "diffusion_pytorch_model.safetensors")
        tv = dict(comps["vae"])
        tv["encoder.mid_block.attentions.0.rel_pos.weight"] = ("F16", [2], b"abcd")
        write_st(ex, tv)
        o = os.path.join(tmp, "bad-single.safetensors")
        rc, so, se = run("convert", "-q", bad, o, "--to", "single-file")
        check(rc == 2 and "rel_pos" in se and "vae" in se and not os.path.exists(o), "unknown folder key: %d %s" % (rc, se))
        os.remove(os.path.join(bad, "model_index.json"))
        rc, so, se = run("convert", "-q", bad, o, "--to", "single-file")
        check(rc == 2 and "model_index.json" in se and not os.path.exists(o), "no model_index: %d %s" % (rc, se))
        rc, so, se = run("convert", src, out, "--to", "nothing")
        check(rc == 2, "bad --to")
        rc, so, se = run("convert", src, out, "--to", "diffusers", "--dtype", "f16")
        check(rc == 2, "--to with --dtype")
    finally:
        shutil.rmtree(tmp)
    print("# passed %d failed %d" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

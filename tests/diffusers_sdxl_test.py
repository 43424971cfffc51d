"""`safetensors convert --to diffusers|single-file` for SDXL base and refiner
and SD 2.x (OpenCLIP-H text encoder, linear proj_in, v-prediction in the
scheduler config when identify says so).

The key sets are built from the architectures' real module names: SGM's
UNetModel as SDXL checkpoints hold it (no attention at the first level,
transformer depth 2/10 for the base and 4 for the refiner, label_emb), the
VAE, CLIP-L under conditioner.embedders.0.transformer. and OpenCLIP ViT-bigG
under conditioner.embedders.N.model. (resblocks, fused in_proj,
text_projection, logit_scale), against diffusers' UNet2DConditionModel and
transformers' CLIPTextModel(WithProjection) names. The expected diffusers
tensors are computed here with numpy (in_proj rows split into q/k/v,
text_projection transposed), independently of the library. Checks: the
output key sets are exactly the expected ones (the real models' counts),
bytes and shapes follow their tensors, logit_scale is counted as left out,
single -> diffusers -> single is byte-identical to `convert` of the source
without the left-out buffers, the config stubs carry SDXL's values, and an
unmapped key, a q_proj without its k_proj and an SD1-layout UNet under SDXL
text encoders are errors naming the key, with no output left.

Runs the CLI given by $ST_BIN; data is generated in a temp dir."""
import json
import os
import random
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from testlib import check, finish  # noqa: E402
from diffusers_test import Pairs, read_st, run, text_encoder, unet, vae, write_st  # noqa: E402

rng = random.Random(12)



def unet_xl(P, refiner=False):
    """SGM UNetModel of SDXL (base or refiner) and its diffusers names."""
    U = "model.diffusion_model."
    if refiner:
        mc, mult, attn, depth, context, adm = 384, (1, 2, 4, 4), (False, True, True, False), (0, 4, 4, 0), 1280, 2560
        mid_depth = 4
    else:
        mc, mult, attn, depth, context, adm = 320, (1, 2, 4), (False, True, True), (0, 2, 10), 2048, 2816
        mid_depth = 10
    L = len(mult)
    temb = 4 * mc
    P.wb(U + "time_embed.0.", "unet", "time_embedding.linear_1.", [temb, mc])
    P.wb(U + "time_embed.2.", "unet", "time_embedding.linear_2.", [temb, temb])
    P.wb(U + "label_emb.0.0.", "unet", "add_embedding.linear_1.", [temb, adm])
    P.wb(U + "label_emb.0.2.", "unet", "add_embedding.linear_2.", [temb, temb])
    P.add(U + "input_blocks.0.0.weight", "unet", "conv_in.weight", [3, 4, 3, 3], real=True)  # in_channels
    P.add(U + "input_blocks.0.0.bias", "unet", "conv_in.bias", [mc])

    def res(lp, dp, cin, cout):
        P.wb(U + lp + "in_layers.0.", "unet", dp + "norm1.", [cin])
        P.wb(U + lp + "in_layers.2.", "unet", dp + "conv1.", [cout, cin, 3, 3])
        P.wb(U + lp + "emb_layers.1.", "unet", dp + "time_emb_proj.", [cout, temb])
        P.wb(U + lp + "out_layers.0.", "unet", dp + "norm2.", [cout])
        P.wb(U + lp + "out_layers.3.", "unet", dp + "conv2.", [cout, cout, 3, 3])
        if cin != cout:
            P.wb(U + lp + "skip_connection.", "unet", dp + "conv_shortcut.", [cout, cin, 1, 1])

    def tr(lp, dp, ch, n, probe=False):
        P.wb(U + lp + "norm.", "unet", dp + "norm.", [ch])
        P.wb(U + lp + "proj_in.", "unet", dp + "proj_in.", [ch, ch])  # linear in SDXL
        for k in range(n):
            b = "transformer_blocks.%d." % k
            for a in ("attn1", "attn2"):
                kv = context if a == "attn2" else ch
                P.wb(U + lp + b + a + ".to_q.", "unet", dp + b + a + ".to_q.", [ch, ch], bias=False)
                if probe and k == 0 and a == "attn2":  # the width the library checks: real
                    P.add(U + lp + b + a + ".to_k.weight", "unet", dp + b + a + ".to_k.weight", [3, kv], [3, kv], real=True)
                else:
                    P.wb(U + lp + b + a + ".to_k.", "unet", dp + b + a + ".to_k.", [ch, kv], bias=False)
                P.wb(U + lp + b + a + ".to_v.", "unet", dp + b + a + ".to_v.", [ch, kv], bias=False)
                P.wb(U + lp + b + a + ".to_out.0.", "unet", dp + b + a + ".to_out.0.", [ch, ch])
            P.wb(U + lp + b + "ff.net.0.proj.", "unet", dp + b + "ff.net.0.proj.", [ch * 8, ch])
            P.wb(U + lp + b + "ff.net.2.", "unet", dp + b + "ff.net.2.", [ch, ch * 4])
            for nn in ("norm1", "norm2", "norm3"):
                P.wb(U + lp + b + nn + ".", "unet", dp + b + nn + ".", [ch])
        P.wb(U + lp + "proj_out.", "unet", dp + "proj_out.", [ch, ch])

    idx, ch, chans = 1, mc, [mc]
    for i, m in enumerate(mult):
        for j in range(2):
            res("input_blocks.%d.0." % idx, "down_blocks.%d.resnets.%d." % (i, j), ch, m * mc)
            ch = m * mc
            if attn[i]:
                tr("input_blocks.%d.1." % idx, "down_blocks.%d.attentions.%d." % (i, j), ch, depth[i],
                   probe=(i == 1 and j == 0))
            chans.append(ch)
            idx += 1
        if i < L - 1:
            P.wb(U + "input_blocks.%d.0.op." % idx, "unet", "down_blocks.%d.downsamplers.0.conv." % i, [ch, ch, 3, 3])
            chans.append(ch)
            idx += 1
    res("middle_block.0.", "mid_block.resnets.0.", ch, ch)
    tr("middle_block.1.", "mid_block.attentions.0.", ch, mid_depth)
    res("middle_block.2.", "mid_block.resnets.1.", ch, ch)
    idx = 0
    for i in range(L):  # diffusers' up_blocks.i is SGM level L-1-i
        lvl = L - 1 - i
        for j in range(3):
            skip = chans.pop()
            res("output_blocks.%d.0." % idx, "up_blocks.%d.resnets.%d." % (i, j), ch + skip, mult[lvl] * mc)
            ch = mult[lvl] * mc
            if attn[lvl]:
                tr("output_blocks.%d.1." % idx, "up_blocks.%d.attentions.%d." % (i, j), ch, depth[lvl])
            if i < L - 1 and j == 2:
                P.wb(U + "output_blocks.%d.%d.conv." % (idx, 2 if attn[lvl] else 1), "unet",
                     "up_blocks.%d.upsamplers.0.conv." % i, [ch, ch, 3, 3])
            idx += 1
    P.wb(U + "out.0.", "unet", "conv_norm_out.", [mc])
    P.wb(U + "out.2.", "unet", "conv_out.", [4, mc, 3, 3])


def openclip(P, prefix, comp, layers=32):
    """OpenCLIP ViT-bigG text tower. One-to-one names go in P.items; the rest in
    P.special as (ldm, comp, op, diffusers names, shape)."""
    t = "text_model."
    P.add(prefix + "token_embedding.weight", comp, t + "embeddings.token_embedding.weight", [49408, 1280])
    P.add(prefix + "positional_embedding", comp, t + "embeddings.position_embedding.weight", [77, 1280])
    P.wb(prefix + "ln_final.", comp, t + "final_layer_norm.", [1280])
    P.special.append((prefix + "text_projection", comp, "transpose", ["text_projection.weight"], [2, 3]))
    P.special.append((prefix + "logit_scale", comp, "drop", [], []))
    for i in range(layers):
        lp = prefix + "transformer.resblocks.%d." % i
        dp = t + "encoder.layers.%d." % i
        P.wb(lp + "ln_1.", comp, dp + "layer_norm1.", [1280])
        P.wb(lp + "ln_2.", comp, dp + "layer_norm2.", [1280])
        P.wb(lp + "mlp.c_fc.", comp, dp + "mlp.fc1.", [5120, 1280])
        P.wb(lp + "mlp.c_proj.", comp, dp + "mlp.fc2.", [1280, 5120])
        P.wb(lp + "attn.out_proj.", comp, dp + "self_attn.out_proj.", [1280, 1280])
        for w, shape in (("weight", [6, 3]), ("bias", [6])):
            P.special.append((lp + "attn.in_proj_" + w, comp, "split",
                              [dp + "self_attn.%s_proj.%s" % (q, w) for q in "qkv"], shape))


def family(refiner=False):
    P = Pairs()
    P.special = []
    unet_xl(P, refiner)
    vae(P)
    if refiner:
        openclip(P, "conditioner.embedders.0.model.", "text_encoder_2")
    else:
        text_encoder(P, T="conditioner.embedders.0.transformer.")
        openclip(P, "conditioner.embedders.1.model.", "text_encoder_2")
    return P


def make(P):
    """single: ldm name -> (dtype, shape, bytes); expected: comp -> diffusers
    name -> (dtype, shape, bytes), computed with numpy; dropped names."""
    single, expected, dropped = {}, {}, []
    for ldm, comp, diff, s, d in P.items:
        dt = "I64" if ldm.endswith("position_ids") else "F16"
        b = rng.randbytes(int(np.prod(s, dtype=np.int64)) * (8 if dt == "I64" else 2))
        single[ldm] = (dt, s, b)
        expected.setdefault(comp, {})[diff] = (dt, d, b)
    for ldm, comp, op, diffs, shape in P.special:
        if op == "drop":
            single[ldm] = ("F32", [], rng.randbytes(4))
            dropped.append(ldm)
            continue
        dt = "F32" if op == "transpose" else "F16"
        a = np.frombuffer(rng.randbytes(int(np.prod(shape)) * (4 if dt == "F32" else 2)),
                          dtype="<u4" if dt == "F32" else "<u2").reshape(shape)
        single[ldm] = (dt, shape, a.tobytes())
        if op == "transpose":
            expected.setdefault(comp, {})[diffs[0]] = (dt, [shape[1], shape[0]], np.ascontiguousarray(a.T).tobytes())
        else:
            for name, part in zip(diffs, np.split(a, 3, axis=0)):
                expected.setdefault(comp, {})[name] = (dt, list(part.shape), part.tobytes())
    return single, expected, dropped


FILES = {"unet": "unet/diffusion_pytorch_model.safetensors", "vae": "vae/diffusion_pytorch_model.safetensors",
         "text_encoder": "text_encoder/model.safetensors", "text_encoder_2": "text_encoder_2/model.safetensors"}


def sd2():
    P = Pairs()
    P.special = []
    unet(P, context=1024, linear_proj=True)
    vae(P)
    openclip(P, "cond_stage_model.model.", "text_encoder", layers=24)
    return P


def round_trip(tmp, refiner, sd2_v=None):
    tag = "sd2" if sd2_v is not None else "refiner" if refiner else "base"
    P = sd2() if sd2_v is not None else family(refiner)
    single, expected, dropped = make(P)
    counts = {c: len(v) for c, v in expected.items()}
    # base: the count of stabilityai's release; refiner: 880 transformer-block,
    # 66 attention-module and 274 ResBlock/embedding/conv tensors of its config;
    # SD2: SD1's UNet and VAE, OpenCLIP-H with all 24 layers and text_projection
    if sd2_v is not None:
        want = {"unet": 686, "vae": 248, "text_encoder": 389}
        # identify's SD2 test (std of this bias) must see epsilon unless a marker says v
        k = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"
        single[k] = (single[k][0], single[k][1], bytes(len(single[k][2])))
        expected["unet"]["up_blocks.3.attentions.2.transformer_blocks.0.norm1.bias"] = single[k]
        if sd2_v:
            single["v_pred"] = ("F32", [0], b"")
            dropped.append("v_pred")
    else:
        want = {"unet": 1680 if not refiner else 1220, "vae": 248, "text_encoder_2": 517}
        if not refiner:
            want["text_encoder"] = 197
    check(counts == want, "%s: diffusers key counts %r" % (tag, counts))
    items = list(single.items())
    rng.shuffle(items)
    src = os.path.join(tmp, tag + ".safetensors")
    write_st(src, dict(items))
    out = os.path.join(tmp, tag + "-diff")
    rc, so, se = run("convert", "-q", src, out, "--to", "diffusers")
    check(rc == 0, "%s to diffusers: %d %s" % (tag, rc, se))
    check("left out %d" % len(dropped) in so, "%s: left-out count: %s" % (tag, so))
    for comp, rel in FILES.items():
        path = os.path.join(out, rel)
        if comp not in expected:
            check(not os.path.exists(path), "%s: no %s" % (tag, rel))
            continue
        if not os.path.exists(path):
            check(False, "%s: missing %s" % (tag, rel))
            continue
        got, meta = read_st(path)
        w = expected[comp]
        check(set(got) == set(w), "%s %s: key set (%d vs %d; extra %s, missing %s)" % (
            tag, comp, len(got), len(w), sorted(set(got) - set(w))[:3], sorted(set(w) - set(got))[:3]))
        bad = [k for k in w if k in got and got[k] != (w[k][0], w[k][1], w[k][2])]
        check(not bad, "%s %s: %d tensors with wrong bytes/shape/dtype, e.g. %s" % (tag, comp, len(bad), bad[:2]))
        check(meta == {"format": "pt"}, "%s %s metadata" % (tag, comp))
        cfg = os.path.join(out, os.path.dirname(rel), "config.json")
        check(os.path.exists(cfg) and isinstance(json.load(open(cfg)), dict), "%s: %s config" % (tag, comp))
    mi = json.load(open(os.path.join(out, "model_index.json")))
    sc = json.load(open(os.path.join(out, "scheduler", "scheduler_config.json")))
    check(sc["prediction_type"] == ("v_prediction" if sd2_v else "epsilon"), "%s prediction_type %r" % (tag, sc))
    check(("v-prediction" in so) == bool(sd2_v), "%s: v-prediction said: %r" % (tag, so))
    if sd2_v is not None:
        uc = json.load(open(os.path.join(out, "unet", "config.json")))
        te = json.load(open(os.path.join(out, "text_encoder", "config.json")))
        check(mi["_class_name"] == "StableDiffusionPipeline" and uc["cross_attention_dim"] == 1024
              and uc["use_linear_projection"] is True and te["hidden_size"] == 1024
              and te["num_hidden_layers"] == 23 and sc["_class_name"] == "DDIMScheduler", "sd2 configs")
        return back_again(tmp, tag, out, single, dropped)
    check(mi["_class_name"] == ("StableDiffusionXLImg2ImgPipeline" if refiner else "StableDiffusionXLPipeline"),
          "%s model_index %r" % (tag, mi.get("_class_name")))
    uc = json.load(open(os.path.join(out, "unet", "config.json")))
    check(uc["cross_attention_dim"] == (1280 if refiner else 2048) and uc["use_linear_projection"] is True
          and uc["addition_embed_type"] == "text_time" and uc["in_channels"] == 4, "%s unet config %r" % (tag, uc))
    te2 = json.load(open(os.path.join(out, "text_encoder_2", "config.json")))
    check(te2["architectures"] == ["CLIPTextModelWithProjection"] and te2["hidden_size"] == 1280
          and te2["num_hidden_layers"] == 32, "%s text_encoder_2 config" % tag)
    sc = json.load(open(os.path.join(out, "scheduler", "scheduler_config.json")))
    check(sc["_class_name"] == "EulerDiscreteScheduler", "%s scheduler" % tag)
    check(not [f for r, _, fs in os.walk(out) for f in fs if f.startswith(".")], "%s: no staged files left" % tag)
    return back_again(tmp, tag, out, single, dropped) + (P,)


def back_again(tmp, tag, out, single, dropped):
    back = os.path.join(tmp, tag + "-back.safetensors")
    rc, so, se = run("convert", "-q", out, back, "--to", "single-file")
    check(rc == 0, "%s to single-file: %d %s" % (tag, rc, se))
    plain = os.path.join(tmp, tag + "-plain.safetensors")
    write_st(plain, {k: v for k, v in single.items() if k not in dropped})
    canon = os.path.join(tmp, tag + "-canon.safetensors")
    rc2, _, se2 = run("convert", plain, canon)
    same = rc == 0 and rc2 == 0 and open(back, "rb").read() == open(canon, "rb").read()
    check(same, "%s: single -> diffusers -> single is byte-identical to convert of the source (%s)" % (tag, se2))
    for p in (plain, canon, back):
        if os.path.exists(p):
            os.remove(p)
    return single, out


def main():
    tmp = tempfile.mkdtemp()
    try:
        single, out, P = round_trip(tmp, refiner=False)
        round_trip(tmp, refiner=True)
        round_trip(tmp, False, sd2_v=False)
        round_trip(tmp, False, sd2_v=True)

        def expect_fail(tensors, what, needle):
            p = os.path.join(tmp, "bad.safetensors")
            o = os.path.join(tmp, "bad-out")
            shutil.rmtree(o, ignore_errors=True)
            write_st(p, tensors)
            rc, so, se = run("convert", "-q", p, o, "--to", "diffusers")
            check(rc == 2 and needle in se and not os.path.exists(o),
                  "%s: rc %d, %r, output left %s" % (what, rc, se.strip()[:300], os.path.exists(o)))

        t = dict(single)
        t["conditioner.embedders.1.model.transformer.resblocks.3.attn.extra"] = ("F16", [2], b"abcd")
        expect_fail(t, "unmapped OpenCLIP key", "resblocks.3.attn.extra")
        t = dict(single)
        t["model.diffusion_model.input_blocks.1.1.norm.weight"] = ("F16", [3], b"abcdef")
        expect_fail(t, "attention at SDXL's first level", "input_blocks.1.1.norm.weight")
        t = dict(single)
        t["conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"] = ("F16", [4, 3], bytes(24))
        expect_fail(t, "in_proj that does not split in three", "in_proj")
        t = {k: v for k, v in single.items() if not k.startswith("conditioner.embedders.0.")}
        expect_fail(t, "SDXL base without CLIP-L", "text_encoder")
        t = dict(single)
        t["cond_stage_model.model.ln_final.weight"] = ("F16", [3], b"abcdef")
        t = {k: v for k, v in t.items() if not k.startswith("conditioner.")}
        expect_fail(t, "SDXL UNet under an SD2 text encoder", "label_emb.0.0.weight")

        # a folder whose text_encoder_2 lacks a k_proj: an error naming it
        bad = os.path.join(tmp, "badfolder")
        shutil.copytree(out, bad)
        te2 = os.path.join(bad, FILES["text_encoder_2"])
        got, meta = read_st(te2)
        del got["text_model.encoder.layers.5.self_attn.k_proj.weight"]
        write_st(te2, got, meta)
        o = os.path.join(tmp, "bad-single.safetensors")
        rc, so, se = run("convert", "-q", bad, o, "--to", "single-file")
        check(rc == 2 and "layers.5.self_attn.q_proj.weight" in se and not os.path.exists(o),
              "missing k_proj: %d %s" % (rc, se))
        got["text_model.encoder.layers.5.self_attn.k_proj.weight"] = ("F16", [2, 3], bytes(12))
        del got["text_model.encoder.layers.7.self_attn.q_proj.bias"]
        write_st(te2, got, meta)
        rc, so, se = run("convert", "-q", bad, o, "--to", "single-file")
        check(rc == 2 and "layers.7.self_attn." in se and "q_proj" in se and not os.path.exists(o),
              "k_proj without q_proj: %d %s" % (rc, se))
    finally:
        shutil.rmtree(tmp)
    return finish()


if __name__ == "__main__":
    sys.exit(main())

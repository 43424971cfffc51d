"""`safetensors convert --to diffusers|single-file` for the Flux transformer.

The BFL key set (flux1-dev: img_in, txt_in, time_in, vector_in, guidance_in,
19 double_blocks, 38 single_blocks, final_layer) is built from the model's
module names and its diffusers names from FluxTransformer2DModel's; the
expected diffusers tensors are computed with numpy, independently of the
library: qkv split 1:1:1 into to_q/k/v (add_q/k/v_proj for text), a single
block's linear1 split 1:1:1:4 into to_q/k/v and proj_mlp, the final adaLN
modulation's (shift, scale) halves swapped to (scale, shift). Checks: exact
key sets, bytes and shapes, transformer/config.json from the weights
(layers, guidance), single -> diffusers -> single byte-identical to
`convert` of the source, the ComfyUI prefix (model.diffusion_model.), and
unmapped keys, a split that does not divide and a missing part are errors
with no output left.

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
from diffusers_test import read_st, run, write_st  # noqa: E402

rng = random.Random(5)



def arr(shape):
    n = int(np.prod(shape, dtype=np.int64))
    return np.frombuffer(rng.randbytes(2 * n), dtype="<u2").reshape(shape)


def flux(double=19, single=38, guidance=True):
    """bfl name -> array; expected diffusers name -> array."""
    src, exp = {}, {}

    def wb(b, d, shape, bias=True):
        w = arr(shape)
        src[b + "weight"], exp[d + "weight"] = w, w
        if bias:
            v = arr([shape[0]])
            src[b + "bias"], exp[d + "bias"] = v, v

    def one(b, d, shape):
        a = arr(shape)
        src[b], exp[d] = a, a

    def split(b, ds, parts, rows):
        for leaf, shape in (("weight", [rows, 3]), ("bias", [rows])):
            a = arr(shape)
            src[b + leaf] = a
            unit = rows // sum(parts)
            r = 0
            for d, p in zip(ds, parts):
                exp[d + leaf] = a[r:r + p * unit]
                r += p * unit

    wb("img_in.", "x_embedder.", [3, 64])
    wb("txt_in.", "context_embedder.", [3, 4096])
    wb("time_in.in_layer.", "time_text_embed.timestep_embedder.linear_1.", [3, 256])
    wb("time_in.out_layer.", "time_text_embed.timestep_embedder.linear_2.", [3, 3])
    wb("vector_in.in_layer.", "time_text_embed.text_embedder.linear_1.", [3, 768])
    wb("vector_in.out_layer.", "time_text_embed.text_embedder.linear_2.", [3, 3])
    if guidance:
        wb("guidance_in.in_layer.", "time_text_embed.guidance_embedder.linear_1.", [3, 256])
        wb("guidance_in.out_layer.", "time_text_embed.guidance_embedder.linear_2.", [3, 3])
    for i in range(double):
        b, d = "double_blocks.%d." % i, "transformer_blocks.%d." % i
        wb(b + "img_mod.lin.", d + "norm1.linear.", [18, 3])
        wb(b + "txt_mod.lin.", d + "norm1_context.linear.", [18, 3])
        split(b + "img_attn.qkv.", [d + "attn.to_q.", d + "attn.to_k.", d + "attn.to_v."], [1, 1, 1], 6)
        split(b + "txt_attn.qkv.", [d + "attn.add_q_proj.", d + "attn.add_k_proj.", d + "attn.add_v_proj."], [1, 1, 1], 9)
        one(b + "img_attn.norm.query_norm.scale", d + "attn.norm_q.weight", [3])
        one(b + "img_attn.norm.key_norm.scale", d + "attn.norm_k.weight", [3])
        one(b + "txt_attn.norm.query_norm.scale", d + "attn.norm_added_q.weight", [3])
        one(b + "txt_attn.norm.key_norm.scale", d + "attn.norm_added_k.weight", [3])
        wb(b + "img_attn.proj.", d + "attn.to_out.0.", [3, 3])
        wb(b + "txt_attn.proj.", d + "attn.to_add_out.", [3, 3])
        wb(b + "img_mlp.0.", d + "ff.net.0.proj.", [12, 3])
        wb(b + "img_mlp.2.", d + "ff.net.2.", [3, 12])
        wb(b + "txt_mlp.0.", d + "ff_context.net.0.proj.", [12, 3])
        wb(b + "txt_mlp.2.", d + "ff_context.net.2.", [3, 12])
    for i in range(single):
        b, d = "single_blocks.%d." % i, "single_transformer_blocks.%d." % i
        split(b + "linear1.", [d + "attn.to_q.", d + "attn.to_k.", d + "attn.to_v.", d + "proj_mlp."], [1, 1, 1, 4], 14)
        wb(b + "linear2.", d + "proj_out.", [3, 15])
        one(b + "norm.query_norm.scale", d + "attn.norm_q.weight", [3])
        one(b + "norm.key_norm.scale", d + "attn.norm_k.weight", [3])
        wb(b + "modulation.lin.", d + "norm.linear.", [9, 3])
    wb("final_layer.linear.", "proj_out.", [64, 3])
    for leaf, shape in (("weight", [4, 3]), ("bias", [4])):
        a = arr(shape)
        src["final_layer.adaLN_modulation.1." + leaf] = a
        exp["norm_out.linear." + leaf] = np.concatenate([a[shape[0] // 2:], a[:shape[0] // 2]])
    return src, exp


def st_dict(d, prefix=""):
    return {prefix + k: ("BF16", list(a.shape), np.ascontiguousarray(a).tobytes()) for k, a in d.items()}


def main():
    tmp = tempfile.mkdtemp()
    try:
        src, exp = flux()
        # flux1-dev: 780 BFL tensors; diffusers has 2 more per double block (q/k/v x2
        # for 2 qkv) and 6 more per single block (linear1 -> 4 tensors x2)
        check((len(src), len(exp)) == (780, 780 + 19 * 8 + 38 * 6), "key counts %d %d" % (len(src), len(exp)))
        for prefix, tag in (("", "bfl"), ("model.diffusion_model.", "comfy")):
            single = os.path.join(tmp, tag + ".safetensors")
            items = list(st_dict(src, prefix).items())
            rng.shuffle(items)
            write_st(single, dict(items))
            out = os.path.join(tmp, tag + "-diff")
            rc, so, se = run("convert", "-q", single, out, "--to", "diffusers")
            check(rc == 0, "%s to diffusers: %d %s" % (tag, rc, se))
            wpath = os.path.join(out, "transformer", "diffusion_pytorch_model.safetensors")
            got, meta = read_st(wpath) if rc == 0 else ({}, None)
            want = st_dict(exp)
            check(set(got) == set(want), "%s key set: extra %s missing %s" % (
                tag, sorted(set(got) - set(want))[:3], sorted(set(want) - set(got))[:3]))
            bad = [k for k in want if k in got and got[k] != tuple(want[k])]
            check(not bad, "%s: %d wrong tensors, e.g. %s" % (tag, len(bad), bad[:3]))
            cfg = json.load(open(os.path.join(out, "transformer", "config.json"))) if rc == 0 else {}
            check(cfg.get("_class_name") == "FluxTransformer2DModel" and cfg.get("num_layers") == 19
                  and cfg.get("num_single_layers") == 38 and cfg.get("guidance_embeds") is True
                  and cfg.get("in_channels") == 64 and cfg.get("joint_attention_dim") == 4096,
                  "%s config %r" % (tag, cfg))
            check(sorted(os.listdir(out)) == ["transformer"], "%s: transformer/ only: %s" % (tag, os.listdir(out)))
            back = os.path.join(tmp, tag + "-back.safetensors")
            rc, so, se = run("convert", "-q", out, back, "--to", "single-file")
            check(rc == 0, "%s to single-file: %d %s" % (tag, rc, se))
            plain = os.path.join(tmp, "plain.safetensors")
            write_st(plain, st_dict(src))
            canon = os.path.join(tmp, "canon.safetensors")
            rc2, _, _ = run("convert", plain, canon)
            check(rc == 0 and rc2 == 0 and open(back, "rb").read() == open(canon, "rb").read(),
                  "%s: single -> diffusers -> single byte-identical (BFL names)" % tag)

        # schnell: no guidance_in
        s2, _ = flux(double=2, single=3, guidance=False)
        p = os.path.join(tmp, "schnell.safetensors")
        write_st(p, st_dict(s2))
        o = os.path.join(tmp, "schnell-diff")
        rc, so, se = run("convert", "-q", p, o, "--to", "diffusers")
        cfg = json.load(open(os.path.join(o, "transformer", "config.json"))) if rc == 0 else {}
        check(cfg.get("guidance_embeds") is False and cfg.get("num_layers") == 2 and cfg.get("num_single_layers") == 3,
              "schnell config %r %s" % (cfg, se))

        def expect_fail(tensors, what, needle, to="diffusers", path=None):
            p = path or os.path.join(tmp, "bad.safetensors")
            o = os.path.join(tmp, "bad-out")
            shutil.rmtree(o, ignore_errors=True)
            if path is None:
                write_st(p, tensors)
            rc, so, se = run("convert", "-q", p, o, "--to", to)
            check(rc == 2 and needle in se and not os.path.exists(o),
                  "%s: rc %d %r left %s" % (what, rc, se.strip()[:300], os.path.exists(o)))

        t = st_dict(src)
        t["double_blocks.3.img_attn.extra.weight"] = ("BF16", [2], b"abcd")
        expect_fail(t, "unmapped Flux key", "double_blocks.3.img_attn.extra.weight")
        t = st_dict(src)
        t["single_blocks.0.linear1.weight"] = ("BF16", [13, 3], bytes(78))
        expect_fail(t, "linear1 rows not 7 parts", "single_blocks.0.linear1.weight")
        # a diffusers folder missing proj_mlp of one single block
        bad = os.path.join(tmp, "badfolder")
        shutil.copytree(os.path.join(tmp, "bfl-diff"), bad)
        wpath = os.path.join(bad, "transformer", "diffusion_pytorch_model.safetensors")
        got, meta = read_st(wpath)
        del got["single_transformer_blocks.4.proj_mlp.weight"]
        write_st(wpath, got, meta)
        expect_fail(None, "missing proj_mlp", "single_transformer_blocks.4.proj_mlp.weight", "single-file", bad)
        got["single_transformer_blocks.4.proj_mlp.weight"] = ("BF16", [8, 3], bytes(48))
        del got["transformer_blocks.1.attn.to_q.bias"]
        write_st(wpath, got, meta)
        expect_fail(None, "k without q", "transformer_blocks.1.attn.to_", "single-file", bad)
    finally:
        shutil.rmtree(tmp)
    return finish()


if __name__ == "__main__":
    sys.exit(main())

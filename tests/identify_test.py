"""`safetensors identify` on realistic layouts (tests/sdlayouts.py) of every
kind x family: real key names and shapes, zero data in sparse files."""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdlayouts as sl  # noqa: E402

BIN = os.environ.get("ST_BIN", "build/safetensors")
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what)


def L(*parts, metadata=None):
    out = sl.Layout()
    for p in parts:
        out.merge(p)
    out.metadata = metadata
    return out


def sd1_ckpt(in_ch=4, ema=False):
    l = L(sl.sd1_unet(in_ch=in_ch), sl.vae(), sl.clip_hf("cond_stage_model.transformer."))
    if ema:
        e = sl.Layout()
        e.add("model_ema.decay", [], "F32")
        e.add("model_ema.num_updates", [], "I64")
        for k, (dt, shape) in list(l.tensors.items()):
            if k.startswith("model.diffusion_model."):
                e.add("model_ema." + k[len("model.diffusion_model."):].replace(".", ""), shape, dt)
        l.merge(e)
    return l


def sd2_ckpt(in_ch=4, vpred=None):
    l = L(sl.sd2_unet(in_ch=in_ch), sl.vae(), sl.open_clip("cond_stage_model.model.", 1024, 24))
    if vpred is not None:
        # ComfyUI's SD2 test reads this bias: std > 0.09 means v-prediction.
        name = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"
        n = l.tensors[name][1][0]
        amp = 0.2 if vpred else 0.01
        l.data[name] = b"".join(struct.pack("<e", amp if i % 2 else -amp) for i in range(n))
    return l


def sdxl_ckpt(extra=None):
    l = L(sl.sdxl_unet(), sl.vae(),
          sl.clip_hf("conditioner.embedders.0.transformer.", 768, 12),
          sl.open_clip("conditioner.embedders.1.model.", 1280, 32))
    if extra:
        l.merge(extra)
    return l


def refiner_ckpt():
    return L(sl.refiner_unet(), sl.vae(), sl.open_clip("conditioner.embedders.0.model.", 1280, 32))


def sd3_ckpt():
    return L(sl.mmdit(), sl.vae(z=16), sl.clip_hf("text_encoders.clip_l.transformer.", 768, 12),
             sl.clip_hf("text_encoders.clip_g.transformer.", 1280, 32, True),
             sl.t5xxl("text_encoders.t5xxl.transformer.", 2))


def flux_ckpt():
    return L(sl.flux(), sl.vae("vae.", 16), sl.clip_hf("text_encoders.clip_l.transformer.", 768, 12),
             sl.t5xxl("text_encoders.t5xxl.transformer.", 2))


def vpred_key():
    l = sl.Layout()
    l.add("v_pred", [0], "F32")
    return l


def controlnet_flux():
    l = sl.Layout()
    l.add("controlnet_x_embedder.weight", [3072, 64], "BF16")
    l.add("x_embedder.weight", [3072, 64], "BF16")
    for i in range(2):
        l.add("transformer_blocks.%d.attn.to_q.weight" % i, [3072, 3072], "BF16")
        l.add("controlnet_blocks.%d.weight" % i, [3072, 3072], "BF16")
    l.add("single_transformer_blocks.0.attn.to_k.weight", [3072, 3072], "BF16")
    return l


def diffusers_controlnet_sdxl():
    l = sl.diffusers_sdxl_unet()
    l.add("controlnet_cond_embedding.conv_in.weight", [16, 3, 3, 3])
    l.add("controlnet_down_blocks.0.weight", [320, 320, 1, 1])
    return l


def emb(name_shapes):
    l = sl.Layout()
    for n, s in name_shapes:
        l.add(n, s, "F32")
    return l


def other(metadata=None):
    l = sl.Layout()
    l.add("layer.weight", [16, 16], "F32")
    l.add("layer.bias", [16], "F32")
    l.metadata = metadata
    return l


def flux_kohya_lora():
    mods = [("lora_unet_double_blocks_%d_img_attn_qkv" % i, 3072, 9216) for i in range(19)]
    mods += [("lora_unet_single_blocks_%d_linear1" % i, 3072, 21504) for i in range(38)]
    return sl.kohya_lora(mods, 16, "BF16")


def flux_peft_lora():
    mods = []
    for i in range(19):
        for q in ("to_q", "to_k", "add_k_proj"):
            mods.append(("transformer.transformer_blocks.%d.attn.%s" % (i, q), 3072, 3072))
    for i in range(38):
        mods.append(("transformer.single_transformer_blocks.%d.attn.to_k" % i, 3072, 3072))
    return sl.peft_lora(mods)


def sdxl_peft_lora():
    mods = []
    for blk, ch, n in ((1, 640, 2), (2, 1280, 10)):
        for t in range(n):
            p = "unet.down_blocks.%d.attentions.0.transformer_blocks.%d." % (blk, t)
            mods += [(p + "attn1.to_q", ch, ch), (p + "attn2.to_k", 2048, ch)]
    return sl.peft_lora(mods, 32, "F32")


def sd3_kohya_lora():
    mods = [("lora_unet_joint_blocks_%d_context_block_attn_qkv" % i, 1536, 4608) for i in range(24)]
    return sl.kohya_lora(mods, 16, "BF16")


def sd1_diffusers_lora():
    mods = []
    for blk, ch in ((0, 320), (1, 640)):
        p = "unet.down_blocks.%d.attentions.0.transformer_blocks.0.attn2.processor." % blk
        mods += [(p + "to_q", ch, ch), (p + "to_k", 768, ch)]
    return sl.diffusers_old_lora(mods)


def flux_xlabs_lora():
    l = sl.Layout()
    for i in range(19):
        for m in ("proj_lora1", "proj_lora2", "qkv_lora1", "qkv_lora2"):
            p = "double_blocks.%d.processor.%s." % (i, m)
            l.add(p + "down.weight", [16, 3072], "BF16")
            l.add(p + "up.weight", [3072 if "proj" in m else 9216, 16], "BF16")
    return l


def svd_unet():
    l = sl.ldm_unet("model.diffusion_model.", 320, (1, 2, 4, 4), 2, (1, 1, 1, 0), 1, 1024, None, 8, True)
    l.add("model.diffusion_model.input_blocks.1.1.time_stack.0.attn1.to_q.weight", [320, 320])
    l.add("model.diffusion_model.input_blocks.1.0.time_stack.in_layers.2.weight", [320, 320, 3, 1, 1])
    return l


def te_only_sd2_lora():
    return sl.kohya_lora([("lora_te_text_model_encoder_layers_%d_self_attn_q_proj" % i, 1024, 1024)
                          for i in range(23)])


def conv_only_sdxl_lora():
    return sl.kohya_lora([("lora_unet_input_blocks_%d_0_in_layers_2" % i, 640, 640) for i in (4, 5)])


# (file name, builder, expected fields; "params" maps component -> prefix)
CASES = [
    ("sd1_checkpoint", lambda: sd1_ckpt(),
     dict(kind="checkpoint", family="sd1", variant=[], ema=False, precision="F16", confidence="high")),
    ("sd1_checkpoint_ema", lambda: sd1_ckpt(ema=True),
     dict(kind="checkpoint", family="sd1", ema=True)),
    ("sd1_inpainting", lambda: sd1_ckpt(in_ch=9),
     dict(kind="checkpoint", family="sd1", variant=["inpainting"])),
    ("sd1_ip2p", lambda: sd1_ckpt(in_ch=8),
     dict(kind="checkpoint", family="sd1", variant=["instruct_pix2pix"])),
    ("sd2_checkpoint", lambda: sd2_ckpt(vpred=False),
     dict(kind="checkpoint", family="sd2", variant=[], confidence="high")),
    ("sd2_checkpoint_v", lambda: sd2_ckpt(vpred=True),
     dict(kind="checkpoint", family="sd2", variant=["v_prediction"])),
    ("sd2_depth", lambda: sd2_ckpt(in_ch=5),
     dict(kind="checkpoint", family="sd2", variant=["depth"])),
    ("sd2_inpainting", lambda: sd2_ckpt(in_ch=9),
     dict(kind="checkpoint", family="sd2", variant=["inpainting"])),
    ("sdxl_checkpoint", lambda: sdxl_ckpt(),
     dict(kind="checkpoint", family="sdxl", variant=[], confidence="high")),
    ("sdxl_vpred", lambda: sdxl_ckpt(vpred_key()),
     dict(kind="checkpoint", family="sdxl", variant=["v_prediction"])),
    ("sdxl_refiner_checkpoint", refiner_ckpt,
     dict(kind="checkpoint", family="sdxl_refiner", confidence="high")),
    ("sd3_checkpoint", sd3_ckpt, dict(kind="checkpoint", family="sd3", confidence="high")),
    ("flux_checkpoint", flux_ckpt,
     dict(kind="checkpoint", family="flux", variant=["dev"], precision="BF16")),
    # diffusion models alone
    ("sd1_unet", lambda: sd1_unet_bare(), dict(kind="diffusion_model", family="sd1")),
    ("sdxl_unet_prefixed", lambda: sl.sdxl_unet(),
     dict(kind="diffusion_model", family="sdxl", confidence="high")),
    ("sdxl_unet", lambda: sl.sdxl_unet(""), dict(kind="diffusion_model", family="sdxl")),
    ("sdxl_inpaint_unet", lambda: sl.sdxl_unet("", 9),
     dict(kind="diffusion_model", family="sdxl", variant=["inpainting"])),
    ("refiner_unet", lambda: sl.refiner_unet(""), dict(kind="diffusion_model", family="sdxl_refiner")),
    ("sd3_medium", lambda: sl.mmdit(""), dict(kind="diffusion_model", family="sd3")),
    ("sd35_large", lambda: sl.mmdit("", 38), dict(kind="diffusion_model", family="sd3")),
    ("flux_dev", lambda: sl.flux(""), dict(kind="diffusion_model", family="flux", variant=["dev"],
                                           precision="BF16")),
    ("flux_schnell", lambda: sl.flux("", guidance=False),
     dict(kind="diffusion_model", family="flux", variant=["schnell"])),
    ("flux_fill", lambda: sl.flux("", img_in=384), dict(kind="diffusion_model", family="flux",
                                                        variant=["fill"])),
    ("flux_fp8", lambda: sl.flux("", dtype="F8_E4M3"),
     dict(kind="diffusion_model", family="flux", precision="F8_E4M3")),
    ("cascade_c", sl.cascade_c, dict(kind="diffusion_model", family="stable_cascade")),
    ("cascade_b", sl.cascade_b, dict(kind="diffusion_model", family="stable_cascade")),
    ("diffusers_sdxl_unet", sl.diffusers_sdxl_unet, dict(kind="diffusion_model", family="sdxl")),
    ("diffusers_flux_schnell", lambda: sl.diffusers_flux(False),
     dict(kind="diffusion_model", family="flux", variant=["schnell"])),
    # VAEs
    ("vae_sd", lambda: sl.vae(""), dict(kind="vae", family="sd1", confidence="medium")),
    ("vae_sdxl_meta", lambda: L(sl.vae(""), metadata={"modelspec.architecture": "stable-diffusion-xl-v1-base/vae"}),
     dict(kind="vae", family="sdxl")),
    ("vae_flux", lambda: sl.vae("", 16), dict(kind="vae", family="flux")),
    ("vae_sd3_meta", lambda: L(sl.vae("", 16), metadata={"modelspec.architecture": "stable-diffusion-3-medium"}),
     dict(kind="vae", family="sd3")),
    ("cascade_a", sl.cascade_a, dict(kind="vae", family="stable_cascade")),
    # text encoders
    ("clip_l", lambda: sl.clip_hf("", 768, 12), dict(kind="text_encoder", family="clip_l",
                                                    confidence="high")),
    ("clip_g", lambda: sl.clip_hf("", 1280, 32, True), dict(kind="text_encoder", family="clip_g")),
    ("clip_g_openclip", lambda: sl.open_clip("", 1280, 32), dict(kind="text_encoder", family="clip_g")),
    ("clip_h_sd2", lambda: sl.open_clip("", 1024, 24), dict(kind="text_encoder", family="sd2")),
    ("t5xxl", lambda: sl.t5xxl("", 24), dict(kind="text_encoder", family="t5xxl")),
    # LoRAs
    ("lora_sd1_kohya", lambda: sl.kohya_lora(sl.sd1_lora_modules()),
     dict(kind="lora", family="sd1", format="kohya", confidence="high")),
    ("lora_sd2_kohya", lambda: sl.kohya_lora(sl.sd1_lora_modules(1024, 1024)),
     dict(kind="lora", family="sd2", format="kohya")),
    ("lora_sd2_te_only", te_only_sd2_lora, dict(kind="lora", family="sd2")),
    ("lora_sdxl_kohya", lambda: L(sl.kohya_lora(sl.sdxl_lora_modules()),
                                  metadata={"ss_base_model_version": "sdxl_base_v1-0",
                                            "ss_v_parameterization": "False"}),
     dict(kind="lora", family="sdxl", format="kohya", variant=[], confidence="high")),
    ("lora_sdxl_te_only", lambda: sl.kohya_lora(sl.sdxl_lora_modules(unet=False)),
     dict(kind="lora", family="sdxl")),
    ("lora_sdxl_conv_only", conv_only_sdxl_lora, dict(kind="lora", family="sdxl", confidence="low")),
    ("lora_sdxl_loha", lambda: sl.loha(sl.sdxl_lora_modules(te=False)),
     dict(kind="lora", family="sdxl", format="lycoris_loha")),
    ("lora_sd1_lokr", lambda: sl.lokr(sl.sd1_lora_modules()),
     dict(kind="lora", family="sd1", format="lycoris_lokr")),
    ("lora_sdxl_peft", sdxl_peft_lora, dict(kind="lora", family="sdxl", format="peft",
                                            precision="F32")),
    ("lora_flux_kohya", flux_kohya_lora, dict(kind="lora", family="flux", format="kohya")),
    ("lora_flux_peft", flux_peft_lora, dict(kind="lora", family="flux", format="peft")),
    ("lora_flux_xlabs", flux_xlabs_lora, dict(kind="lora", family="flux", format="diffusers")),
    ("svd_unet", svd_unet, dict(kind="diffusion_model", family="unknown", variant=[], confidence="low")),
    ("lora_sd3_kohya", sd3_kohya_lora, dict(kind="lora", family="sd3", format="kohya")),
    ("lora_sd1_diffusers", sd1_diffusers_lora, dict(kind="lora", family="sd1", format="diffusers")),
    ("lora_sd2_v", lambda: L(sl.kohya_lora(sl.sd1_lora_modules(1024, 1024)),
                             metadata={"ss_v_parameterization": "True",
                                       "modelspec.architecture": "stable-diffusion-v2-768-v/lora"}),
     dict(kind="lora", family="sd2", variant=["v_prediction"], confidence="high")),
    ("lora_meta_disagrees", lambda: L(sl.kohya_lora(sl.sd1_lora_modules()),
                                      metadata={"ss_base_model_version": "sdxl_base_v1-0"}),
     dict(kind="lora", family="sd1", confidence="medium")),
    # embeddings
    ("emb_sd1", lambda: emb([("emb_params", [4, 768])]),
     dict(kind="embedding", family="sd1", confidence="high")),
    ("emb_sd2", lambda: emb([("emb_params", [2, 1024])]), dict(kind="embedding", family="sd2")),
    ("emb_sd1_pt_style", lambda: emb([("string_to_param.*", [3, 768])]),
     dict(kind="embedding", family="sd1")),
    ("emb_sdxl", lambda: emb([("clip_g", [2, 1280]), ("clip_l", [2, 768])]),
     dict(kind="embedding", family="sdxl", confidence="high")),
    # ControlNets
    ("cn_sd1", lambda: sl.ldm_unet("control_model.", context=768, outputs=False, control=True),
     dict(kind="controlnet", family="sd1", confidence="high")),
    ("cn_sd1_bare", lambda: sl.ldm_unet("", context=768, outputs=False, control=True),
     dict(kind="controlnet", family="sd1")),
    ("cn_sd2", lambda: sl.ldm_unet("", context=1024, linear=True, outputs=False, control=True),
     dict(kind="controlnet", family="sd2")),
    ("cn_sdxl", lambda: sl.ldm_unet("", 320, (1, 2, 4), 2, (0, 2, 10), 10, 2048, 2816, 4, True,
                                    outputs=False, control=True),
     dict(kind="controlnet", family="sdxl")),
    ("cn_sdxl_diffusers", diffusers_controlnet_sdxl, dict(kind="controlnet", family="sdxl")),
    ("cn_flux", controlnet_flux, dict(kind="controlnet", family="flux")),
    # nothing to go on / metadata only
    ("unknown", lambda: other(), dict(kind="unknown", family="unknown", confidence="none")),
    ("meta_only_lora", lambda: other({"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}),
     dict(kind="lora", family="sdxl", confidence="low")),
    ("meta_only_flux", lambda: other({"ss_base_model_version": "flux1"}),
     dict(kind="unknown", family="flux", confidence="low")),
]


def sd1_unet_bare():
    return sl.sd1_unet("")


def main():
    tmp = tempfile.mkdtemp()
    try:
        layouts = {}
        paths = []
        for name, build, _ in CASES:
            lay = build()
            path = os.path.join(tmp, name + ".safetensors")
            lay.write(path)
            layouts[name] = lay
            paths.append(path)
        out = subprocess.run([BIN, "identify", "--json"] + paths, capture_output=True, text=True)
        check(out.returncode == 0, "identify exit %d: %s" % (out.returncode, out.stderr[-500:]))
        lines = out.stdout.splitlines()
        check(len(lines) == len(CASES), "one JSON line per file (%d)" % len(lines))
        results = {}
        for line in lines:
            j = json.loads(line)
            results[os.path.basename(j["file"])[: -len(".safetensors")]] = j
        for name, _, want in CASES:
            got = results.get(name)
            if got is None:
                check(False, name + ": no result")
                continue
            for k, v in want.items():
                check(got.get(k) == v, "%s: %s = %r, want %r (reasons: %s)"
                      % (name, k, got.get(k), v, "; ".join(got.get("reasons", []))))
            check(len(got["reasons"]) > 0, name + ": gives reasons")
            lay = layouts[name]
            check(got["parameters"]["total"] == lay.params(), name + ": total parameters")
            comp = sum(v for k, v in got["parameters"].items() if k != "total")
            check(comp == got["parameters"]["total"], name + ": components add up")
            if got["kind"] == "lora":
                check(got["format"] is not None, name + ": a LoRA has a format")
            else:
                check(got["format"] is None, name + ": format only for LoRAs")
        # Component counts of a checkpoint, against the layout.
        ck = results["sd1_checkpoint_ema"]["parameters"]
        lay = layouts["sd1_checkpoint_ema"]
        check(ck["diffusion_model"] == lay.params("model.diffusion_model."), "unet params")
        check(ck["vae"] == lay.params("first_stage_model."), "vae params")
        check(ck["text_encoder"] == lay.params("cond_stage_model."), "text encoder params")
        check(ck["ema"] == lay.params("model_ema."), "ema params")
        lo = results["lora_sdxl_kohya"]["parameters"]
        lay = layouts["lora_sdxl_kohya"]
        te = lay.params("lora_te")
        alphas = sum(1 for k in lay.tensors if k.endswith(".alpha"))
        check(lo["text_encoder"] == te - sum(1 for k in lay.tensors
                                             if k.startswith("lora_te") and k.endswith(".alpha")),
              "lora text encoder params")
        check(lo.get("other", 0) == alphas, "lora alphas counted apart")
        # Text output names the same verdict.
        t = subprocess.run([BIN, "identify", paths[0]], capture_output=True, text=True)
        check(t.returncode == 0 and "checkpoint" in t.stdout and "sd1" in t.stdout
              and "reasons" in t.stdout, "text output")
        # Invalid files: exit 1 and an error line.
        bad = os.path.join(tmp, "bad.safetensors")
        with open(bad, "wb") as f:
            f.write(b"\x04\x00\x00\x00\x00\x00\x00\x00{bad")
        b = subprocess.run([BIN, "identify", "--json", bad], capture_output=True, text=True)
        check(b.returncode == 1, "invalid file exits 1 (%d)" % b.returncode)
        check(b.stdout.strip() and json.loads(b.stdout)["error"] == "header_json", "error JSON")
        m = subprocess.run([BIN, "identify", os.path.join(tmp, "missing")], capture_output=True, text=True)
        check(m.returncode == 2, "missing file exits 2")
        u = subprocess.run([BIN, "identify"], capture_output=True, text=True)
        check(u.returncode == 2, "no file is a usage error")
    finally:
        shutil.rmtree(tmp)
    print("# passed %d failed %d" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

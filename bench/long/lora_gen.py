"""Inputs for bench/long/lora.sh: an SDXL-shaped fp16 checkpoint (the real
key names and shapes, about 6.9 GB), an SD1.5-shaped pair (base, tuned) and
a kohya LoRA of rank 32 on every attention and conv layer of SDXL (and the
text encoders). Values are random (a 64 MiB pool repeated at a per-file
offset, so two files differ everywhere).

    python3 bench/long/lora_gen.py DIR sdxl|sd15|lora
"""
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests"))
import sdlayouts  # noqa: E402

POOL = (np.random.default_rng(1).standard_normal(32 << 20) * 0.02).astype(np.float16).tobytes()


def write(path, tensors, shift):
    """tensors: name -> (dtype, shape); data from the pool at `shift`."""
    hdr, off = {}, 0
    for k, (dt, shape) in tensors.items():
        n = 2 * int(np.prod(shape)) if shape else 2
        hdr[k] = {"dtype": "F16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    pos = shift % len(POOL)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        left = off
        while left:
            piece = min(left, len(POOL) - pos)
            f.write(POOL[pos:pos + piece])
            left -= piece
            pos = (pos + piece) % len(POOL)


def sdxl():
    L = sdlayouts.sdxl_unet("model.diffusion_model.")
    L.merge(sdlayouts.clip_hf("conditioner.embedders.0.transformer.", 768, 12))
    L.merge(sdlayouts.open_clip("conditioner.embedders.1.model.", 1280, 32))
    L.merge(sdlayouts.vae("first_stage_model."))
    return L


def sd15():
    L = sdlayouts.sd1_unet("model.diffusion_model.")
    L.merge(sdlayouts.clip_hf("cond_stage_model.transformer.", 768, 12))
    L.merge(sdlayouts.vae("first_stage_model."))
    return L


def sdxl_lora(rank=32):
    """kohya SDXL LoRA/LoCon names (LDM keys) for every attention linear and
    conv layer of the UNet and every CLIP attention/MLP layer."""
    out = {}
    P = "model.diffusion_model."
    for k, (_, shape) in sdxl().tensors.items():
        if not k.endswith(".weight") and not k.endswith("in_proj_weight"):
            continue
        if k.startswith(P) and len(shape) in (2, 4):
            x = k[len(P):-len(".weight")]
            attn = ".transformer_blocks." in x or x.endswith("proj_in") or x.endswith("proj_out")
            conv = len(shape) == 4 and x.startswith(("input_blocks", "middle_block", "output_blocks"))
            if not (attn or conv) or x.startswith("input_blocks.0."):
                continue
            m = "lora_unet_" + x.replace(".", "_")
            r = min(rank, shape[0])
            out[m + ".lora_down.weight"] = ("F16", [r] + list(shape[1:]))
            out[m + ".lora_up.weight"] = ("F16", [shape[0], r] + ([1, 1] if len(shape) == 4 else []))
            out[m + ".alpha"] = ("F16", [])
    for i in range(12):
        for q in ("self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj"):
            m = "lora_te1_text_model_encoder_layers_%d_%s" % (i, q)
            out[m + ".lora_down.weight"] = ("F16", [rank, 768])
            out[m + ".lora_up.weight"] = ("F16", [768, rank])
            out[m + ".alpha"] = ("F16", [])
    for i in range(32):
        for q in ("self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj"):
            m = "lora_te2_text_model_encoder_layers_%d_%s" % (i, q)
            out[m + ".lora_down.weight"] = ("F16", [rank, 1280])
            out[m + ".lora_up.weight"] = ("F16", [1280, rank])
            out[m + ".alpha"] = ("F16", [])
    return out


def main():
    d, what = sys.argv[1], sys.argv[2]
    if what == "sdxl":
        write(os.path.join(d, "sdxl.safetensors"), sdxl().tensors, 0)
    elif what == "sd15":
        t = sd15().tensors
        write(os.path.join(d, "sd15_base.safetensors"), t, 0)
        write(os.path.join(d, "sd15_tuned.safetensors"), t, 2 * 7919)
    elif what == "lora":
        write(os.path.join(d, "sdxl_lora.safetensors"), sdxl_lora(), 4 * 104729)


main()

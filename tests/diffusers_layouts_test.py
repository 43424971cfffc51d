"""Cross-check of `convert --to diffusers|single-file` against the key sets of
tests/sdlayouts.py, written independently for identify from the models'
published hyper-parameters: SD1.x, SD2.x, SDXL base and refiner checkpoints
(UNet + VAE + CLIP-L / OpenCLIP) and the Flux transformer (BFL names, bare and
under ComfyUI's prefix). Shapes are shrunk (the first two dimensions capped
at 2, 3) except where the conversion reads them (conv_in, the probed
cross-attention and proj_in keep their rank and width; fused q/k/v rows stay
divisible), so the files are small. Every key must convert, the diffusers
keys sdlayouts lists (diffusers_sdxl_unet, diffusers_flux) must be among the
output's with their real names, and the way back must give the source's
tensors again, byte for byte.

Runs the CLI given by $ST_BIN; data is generated in a temp dir."""
import os
import random
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from testlib import check, finish  # noqa: E402
import sdlayouts as S  # noqa: E402
from diffusers_test import read_st, run, write_st  # noqa: E402

rng = random.Random(3)



def shrink(name, shape):
    if name.endswith("input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"):
        return list(shape)  # SD1/SD2's probe: [320, context] as it is
    if name.endswith(("attn2.to_k.weight", "input_blocks.0.0.weight", "img_in.weight", "txt_in.weight")):
        return [min(shape[0], 3)] + list(shape[1:])
    if "in_proj" in name or name.endswith("qkv.weight"):
        return [6] + [min(d, 2) for d in shape[1:]]
    if name.endswith("linear1.weight"):
        return [14] + [min(d, 2) for d in shape[1:]]
    if name.endswith("adaLN_modulation.1.weight"):
        return [4] + [min(d, 2) for d in shape[1:]]
    return [min(d, 3) for d in shape]


def materialise(L):
    out = {}
    for name, (dt, shape) in L.tensors.items():
        s = shrink(name, shape)
        n = S.DTYPE_SIZE[dt]
        for d in s:
            n *= d
        out[name] = (dt, s, rng.randbytes(n))
    return out


def case(tmp, tag, L, want_keys=None, comp="unet"):
    data = materialise(L)
    src = os.path.join(tmp, tag + ".safetensors")
    write_st(src, data)
    out = os.path.join(tmp, tag + "-diff")
    rc, so, se = run("convert", "-q", src, out, "--to", "diffusers")
    check(rc == 0, "%s: every key converts: %d %s" % (tag, rc, se.strip()[:300]))
    if rc != 0:
        return
    if want_keys is not None:
        got, _ = read_st(os.path.join(out, comp, "diffusion_pytorch_model.safetensors"))
        missing = sorted(set(want_keys) - set(got))
        check(not missing, "%s: diffusers names missing: %s" % (tag, missing[:4]))
    back = os.path.join(tmp, tag + "-back.safetensors")
    rc, so, se = run("convert", "-q", out, back, "--to", "single-file")
    check(rc == 0, "%s: back: %d %s" % (tag, rc, se.strip()[:300]))
    if rc == 0:
        got, _ = read_st(back)
        # a ComfyUI-prefixed Flux comes back with BFL's bare names
        strip = "model.diffusion_model." if tag == "flux-comfy" else ""
        want = {k[len(strip):] if strip and k.startswith(strip) else k: v for k, v in data.items()}
        want = {k: v for k, v in want.items() if not k.endswith("logit_scale")}
        bad = [k for k in want if got.get(k) != (want[k][0], want[k][1], want[k][2])]
        check(set(got) == set(want) and not bad, "%s: the way back gives the source's tensors (%d differ, extra %s)"
              % (tag, len(bad), sorted(set(got) - set(want))[:3]))
    shutil.rmtree(out, ignore_errors=True)


def main():
    tmp = tempfile.mkdtemp()
    try:
        case(tmp, "sd1", S.sd1_unet().merge(S.vae()).merge(S.clip_hf("cond_stage_model.transformer.")))
        case(tmp, "sd2", S.sd2_unet().merge(S.vae()).merge(S.open_clip("cond_stage_model.model.")))
        xl = S.sdxl_unet().merge(S.vae()).merge(S.clip_hf("conditioner.embedders.0.transformer."))
        xl.merge(S.open_clip("conditioner.embedders.1.model.", 1280, 32))
        case(tmp, "sdxl", xl, list(S.diffusers_sdxl_unet().tensors))
        case(tmp, "refiner", S.refiner_unet().merge(S.vae()).merge(S.open_clip("conditioner.embedders.0.model.", 1280, 32)))
        case(tmp, "flux", S.flux(""), list(S.diffusers_flux().tensors), "transformer")
        case(tmp, "flux-schnell", S.flux("", guidance=False), list(S.diffusers_flux(False).tensors), "transformer")
        case(tmp, "flux-comfy", S.flux(), list(S.diffusers_flux().tensors), "transformer")
    finally:
        shutil.rmtree(tmp)
    return finish()


if __name__ == "__main__":
    sys.exit(main())

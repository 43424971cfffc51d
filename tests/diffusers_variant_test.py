"""Weight variants in diffusers folders (`--variant`, st_model_open_variant).

A Hub snapshot of a diffusers pipeline holds, per component, the plain
weights and variants of them: diffusion_pytorch_model.fp16.safetensors,
.non_ema., sharded fp16 with diffusion_pytorch_model.safetensors.index.fp16.json
(or the older spellings), model.fp16.safetensors for the text encoder. The
file names are those diffusers' _add_variant and variant_compatible_siblings
give. Generated here: an SD1-shaped pipeline (diffusers_test's real key
sets) in F32, its fp16 variants made with `convert --dtype f16`. Checks:
without --variant the plain F32 weights are read and the variants ignored;
--variant fp16 reads F16 bytes equal to the f16 conversion; a component
without the variant falls back to its plain weights (diffusers' pipeline
loading); sharded variants in today's and the older naming; a variant
present nowhere, two unrelated files, a folder of variants only and a bad
variant name are errors naming them, with no output left; check, ls,
info, identify and hash take --variant on a component folder.

Runs the CLI given by $ST_BIN; data is generated in a temp dir."""
import json
import os
import random
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from testlib import check, finish  # noqa: E402
from diffusers_test import nbytes, read_st, run, sd1, write_st  # noqa: E402

rng = random.Random(31)
FILES = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model"}


def make_pipeline(tmp):
    """An SD1 diffusers folder in F32 with fp16 and non_ema variants beside
    the plain weights; returns (folder, {ldm name: (dtype, shape, bytes)})."""
    P = sd1()
    data = {}
    for ldm, comp, diff, s, d in P.items:
        dt = "I64" if ldm.endswith("position_ids") else "F32"
        data[ldm] = (dt, s, rng.randbytes(nbytes(dt, s)))
    single = os.path.join(tmp, "sd15.safetensors")
    write_st(single, data)
    folder = os.path.join(tmp, "pipe")
    rc, _, se = run("convert", "-q", single, folder, "--to", "diffusers")
    check(rc == 0, "to diffusers: %d %s" % (rc, se))
    for comp, stem in FILES.items():
        plain = os.path.join(folder, comp, stem + ".safetensors")
        rc, _, se = run("convert", "-q", plain, os.path.join(folder, comp, stem + ".fp16.safetensors"),
                        "--dtype", "f16")
        check(rc == 0, "%s fp16 variant: %s" % (comp, se))
    shutil.copy(os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors"),
                os.path.join(folder, "unet", "diffusion_pytorch_model.non_ema.safetensors"))
    return folder, data


def dtypes(path):
    got, _ = read_st(path)
    return {k: v[0] for k, v in got.items()}, got


def to_single(folder, out, *extra):
    if os.path.exists(out):
        os.remove(out)
    return run("convert", "-q", folder, out, "--to", "single-file", *extra)


def shard_variant(folder, tmp, legacy):
    """Replaces unet's fp16 file with shards: today's names
    (STEM.fp16-00001-of-0000N.safetensors, STEM.safetensors.index.fp16.json)
    or the older ones (STEM-00001-of-0000N.fp16.safetensors,
    STEM.safetensors.fp16.index.json)."""
    un = os.path.join(folder, "unet")
    for f in os.listdir(un):
        if "fp16" in f:
            os.remove(os.path.join(un, f))
    parts = os.path.join(tmp, "parts-%d" % legacy)
    src = os.path.join(tmp, "unet16.safetensors")
    rc, _, se = run("split", "-q", "--max-shard-size", "300KB", "--prefix", "diffusion_pytorch_model", src, parts)
    check(rc == 0, "split: %s" % se)
    index = json.load(open(os.path.join(parts, "diffusion_pytorch_model.safetensors.index.json")))
    names = {}
    for f in sorted(os.listdir(parts)):
        if f.endswith(".safetensors"):
            base = f[:-len(".safetensors")]
            names[f] = (base + ".fp16.safetensors" if legacy
                        else base.replace("diffusion_pytorch_model-", "diffusion_pytorch_model.fp16-") + ".safetensors")
            shutil.move(os.path.join(parts, f), os.path.join(un, names[f]))
    check(len(names) >= 2, "unet split into %d shards" % len(names))
    index["weight_map"] = {k: names[v] for k, v in index["weight_map"].items()}
    iname = ("diffusion_pytorch_model.safetensors.fp16.index.json" if legacy
             else "diffusion_pytorch_model.safetensors.index.fp16.json")
    with open(os.path.join(un, iname), "w") as f:
        json.dump(index, f)
    shutil.rmtree(parts)


def main():
    tmp = tempfile.mkdtemp()
    try:
        folder, data = make_pipeline(tmp)
        # the fp16 unet as one file, for the sharded cases
        shutil.copy(os.path.join(folder, "unet", "diffusion_pytorch_model.fp16.safetensors"),
                    os.path.join(tmp, "unet16.safetensors"))
        out = os.path.join(tmp, "out.safetensors")

        # no variant asked: the plain F32 weights, variants ignored
        rc, _, se = to_single(folder, out)
        check(rc == 0, "default to single-file: %d %s" % (rc, se))
        base, got = dtypes(out) if rc == 0 else ({}, {})
        check(set(base) == set(data), "default: LDM key set")
        check(all(v == data[k][0] for k, v in base.items()), "default: every tensor as written (F32)")
        check(all(got[k][2] == data[k][2] for k in got), "default: the plain weights' bytes")

        # --variant fp16: every component's fp16 file
        rc, _, se = to_single(folder, out, "--variant", "fp16")
        check(rc == 0, "fp16 to single-file: %d %s" % (rc, se))
        v16, got16 = dtypes(out) if rc == 0 else ({}, {})
        check(set(v16) == set(data), "fp16: LDM key set")
        check(all(v == ("I64" if data[k][0] == "I64" else "F16") for k, v in v16.items()),
              "fp16: floating tensors F16")
        # the bytes are convert --dtype f16's, whichever component
        ref = os.path.join(tmp, "ref16.safetensors")
        run("convert", "-q", os.path.join(tmp, "sd15.safetensors"), ref, "--dtype", "f16")
        want16, _ = read_st(ref)
        check(all(got16[k][2] == want16[k][2] for k in got16), "fp16: bytes of the fp16 variant files")

        # the CLI on a component folder
        un = os.path.join(folder, "unet")
        rc, so, se = run("ls", "--json", un)
        check(rc == 0 and {t["dtype"] for t in json.loads(so)} == {"F32"}, "ls unet: plain F32 (%d %s)" % (rc, se))
        rc, so, se = run("ls", "--json", "--variant", "fp16", un)
        check(rc == 0 and {t["dtype"] for t in json.loads(so)} == {"F16"}, "ls --variant fp16 unet: F16 (%s)" % se)
        rc, so, se = run("check", "--variant", "non_ema", un)
        check(rc == 0 and "OK" in so, "check --variant non_ema: %d %s" % (rc, se))
        rc, so, se = run("info", "--json", "--variant", "fp16", os.path.join(folder, "text_encoder"))
        check(rc == 0 and "F16" in so and "F32" not in so, "info --variant fp16 text_encoder: %s" % se)
        rc, so, se = run("hash", "-q", "--json", "--algo", "sha256", "--variant", "fp16", un)
        check(rc == 0 and "diffusion_pytorch_model.fp16.safetensors" in so, "hash --variant fp16: %s %s" % (so, se))
        rc, so, se = run("hash", "-q", "--json", "--algo", "sha256", un)
        check(rc == 0 and "fp16" not in so and "diffusion_pytorch_model.safetensors" in so, "hash default: %s" % so)
        rc, so, se = run("identify", "--json", "--variant", "fp16", un)
        check(rc == 0, "identify --variant fp16 unet: %d %s" % (rc, se))
        # join, split and convert with options take the variant too
        f16 = os.path.join(un, "diffusion_pytorch_model.fp16.safetensors")
        jo = os.path.join(tmp, "joined16.safetensors")
        rc, so, se = run("join", "-q", "--variant", "fp16", un, jo)
        check(rc == 0 and open(jo, "rb").read() == open(f16, "rb").read(),
              "join --variant fp16: the fp16 file's bytes (%d %s)" % (rc, se))
        sp = os.path.join(tmp, "split16")
        rc, so, se = run("split", "-q", "--variant", "fp16", "--max-shard-size", "64KB", un, sp)
        rc2, _, se2 = run("join", "-q", sp, jo)
        check(rc == 0 and rc2 == 0 and open(jo, "rb").read() == open(f16, "rb").read(),
              "split --variant fp16, joined again: the fp16 file (%s %s)" % (se, se2))
        shutil.rmtree(sp, ignore_errors=True)
        c1, c2 = os.path.join(tmp, "c1.safetensors"), os.path.join(tmp, "c2.safetensors")
        rc, so, se = run("convert", "-q", "--variant", "fp16", un, c1, "--dtype", "bf16")
        rc2, _, se2 = run("convert", "-q", f16, c2, "--dtype", "bf16")
        check(rc == 0 and rc2 == 0 and open(c1, "rb").read() == open(c2, "rb").read(),
              "convert --variant fp16 --dtype bf16 = convert of the fp16 file (%s %s)" % (se, se2))
        for f in (jo, c1, c2):
            os.remove(f)
        rc, so, se = run("check", "--variant", "bf16", un)
        check(rc == 2 and "bf16" in se and "fp16" in se and "non_ema" in se,
              "check --variant bf16: absent, naming it and the variants present (%d %s)" % (rc, se))
        rc, so, se = run("ls", "--variant", "../fp16", un)
        check(rc == 2 and "variant" in se, "bad variant name refused: %d %s" % (rc, se))

        # a component without the variant falls back to its plain weights
        os.remove(os.path.join(folder, "text_encoder", "model.fp16.safetensors"))
        rc, _, se = to_single(folder, out, "--variant", "fp16")
        check(rc == 0, "mixed to single-file: %d %s" % (rc, se))
        mix, _ = dtypes(out) if rc == 0 else ({}, {})
        te = [k for k in mix if k.startswith("cond_stage_model.")]
        rest = [k for k in mix if not k.startswith("cond_stage_model.")]
        check(te and all(mix[k] == data[k][0] for k in te), "mixed: text encoder plain (F32)")
        check(rest and all(mix[k] == "F16" for k in rest), "mixed: unet and vae F16")
        rc, so, se = run("ls", "--variant", "fp16", os.path.join(folder, "text_encoder"))
        check(rc == 2 and "fp16" in se, "one component without the variant, opened alone: error (%s)" % se)

        # sharded variants, today's naming and the older one
        for legacy in (False, True):
            shard_variant(folder, tmp, legacy)
            what = "older" if legacy else "current"
            rc, _, se = to_single(folder, out, "--variant", "fp16")
            check(rc == 0, "sharded %s fp16 unet: %d %s" % (what, rc, se))
            sh, gsh = dtypes(out) if rc == 0 else ({}, {})
            unet_keys = [k for k in sh if k.startswith("model.diffusion_model.")]
            check(unet_keys and all(sh[k] == "F16" and gsh[k][2] == want16[k][2] for k in unet_keys),
                  "sharded %s: unet F16 bytes from the shards" % what)
            rc, _, se = to_single(folder, out)
            ok = rc == 0 and all(v == data[k][0] for k, v in dtypes(out)[0].items())
            check(ok, "sharded %s variant ignored by default: %d %s" % (what, rc, se))
            rc, so, se = run("check", "--variant", "fp16", un)
            check(rc == 0 and "OK" in so, "check of the sharded %s variant: %s" % (what, se))

        # a variant present nowhere: an error naming it, no output
        rc, _, se = to_single(folder, out, "--variant", "bf16")
        check(rc == 2 and "bf16" in se and not os.path.exists(out), "absent variant: %d %s" % (rc, se))
        check(not [f for f in os.listdir(tmp) if f.startswith(".")], "no temp file left")

        # a component holding only variants: diffusers without a variant
        # finds no weights there, nor does this
        os.remove(os.path.join(un, "diffusion_pytorch_model.safetensors"))
        os.remove(os.path.join(un, "diffusion_pytorch_model.non_ema.safetensors"))
        rc, _, se = to_single(folder, out)
        check(rc == 2 and "unet" in se and "fp16" in se and "--variant" in se and not os.path.exists(out),
              "unet of variants only, no --variant: %d %s" % (rc, se))
        rc, _, se = to_single(folder, out, "--variant", "fp16")
        check(rc == 0, "unet of variants only, --variant fp16: %d %s" % (rc, se))

        # only variants, no plain weights: --variant chooses
        vo = os.path.join(tmp, "variants-only")
        os.makedirs(vo)
        shutil.copy(os.path.join(tmp, "unet16.safetensors"), os.path.join(vo, "diffusion_pytorch_model.fp16.safetensors"))
        rc, _, se = run("check", vo)
        check(rc == 2 and "fp16" in se and "--variant" in se, "only variants: %d %s" % (rc, se))
        rc, so, se = run("check", "--variant", "fp16", vo)
        check(rc == 0, "only variants, --variant fp16: %s" % se)

        # two unrelated files: still ambiguous, both listed, the way out said
        amb = os.path.join(tmp, "plain")
        os.makedirs(amb)
        shutil.copy(os.path.join(tmp, "unet16.safetensors"), os.path.join(amb, "a.safetensors"))
        shutil.copy(os.path.join(tmp, "ref16.safetensors"), os.path.join(amb, "b.safetensors"))
        rc, _, se = run("check", amb)
        check(rc == 2 and "a.safetensors" in se and "b.safetensors" in se and "--variant" in se,
              "two unrelated files: %d %s" % (rc, se))
        rc, _, se = run("check", "--variant", "fp16", amb)
        check(rc == 2 and "fp16" in se, "two unrelated files, --variant fp16: %d %s" % (rc, se))
        # names that only look like variants are not: sd_xl_base_1.0 is one file
        lone = os.path.join(tmp, "lone")
        os.makedirs(lone)
        shutil.copy(os.path.join(tmp, "ref16.safetensors"), os.path.join(lone, "sd_xl_base_1.0.safetensors"))
        rc, so, se = run("check", lone)
        check(rc == 0, "a dotted plain name is no variant: %d %s" % (rc, se))
        # a variant file named directly is opened as named
        rc, so, se = run("ls", "--json", os.path.join(vo, "diffusion_pytorch_model.fp16.safetensors"))
        check(rc == 0 and json.loads(so), "a variant file named directly: %s" % se)
        rc, _, se = run("convert", "-q", os.path.join(tmp, "ref16.safetensors"), out, "--variant", "fp16")
        check(rc == 2 and "variant" in se, "convert of a file with --variant refused: %d %s" % (rc, se))
    finally:
        shutil.rmtree(tmp)
    return finish()


if __name__ == "__main__":
    sys.exit(main())

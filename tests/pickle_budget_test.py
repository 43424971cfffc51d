"""Pickle budgets proportional to the input (lib/ckpt/pickle.c
pk_scaled_limit): a 1 KB "billion laughs" checkpoint (40 levels of a list
holding the previous level twice) fails with pickle_limit at a small,
fixed cost, while the largest realistic pickles still load: full SD1.5 and
SDXL state_dicts with EMA twins, and a training checkpoint with optimizer
state, made by Debian's torch with tiny tensors (the pickle's size and
structure are the real ones)."""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdlayouts  # noqa: E402

BIN = os.environ["ST_BIN"]
SAN = os.environ.get("ST_SAN") == "1"
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what)


try:
    import torch
except ImportError:
    print("torch not importable: skipped")
    print("# passed 0 failed 0")
    sys.exit(0)


def convert(src, dst):
    """Exit code, stderr and the CLI's peak RSS in KiB (GNU time: a fork of
    this process, torch loaded, would count in RUSAGE_CHILDREN)."""
    rss = os.path.join(os.path.dirname(dst), "rss")
    p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss, BIN, "convert", src, dst, "-q"],
                       capture_output=True, text=True)
    with open(rss) as f:
        peak = int(f.read().split()[-1])
    return p.returncode, p.stderr, peak


def names(layout):
    return list(layout.tensors)


with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "out.safetensors")
    # the bombs, zip and legacy
    a = [torch.zeros(1)]
    for _ in range(40):
        a = [a, a]
    for legacy in (False, True):
        p = os.path.join(tmp, "bomb%d.ckpt" % legacy)
        torch.save({"state_dict": {"x": a}}, p, _use_new_zipfile_serialization=not legacy)
        rc, err, peak = convert(p, out)
        kind = "legacy" if legacy else "zip"
        check(rc == 1 and "pickle_limit" in err, "%s bomb: exit %d, %s" % (kind, rc, err.strip()))
        if not SAN:
            check(peak < 48 * 1024, "%s bomb: peak RSS %d KiB, want < 48 MiB" % (kind, peak))
        check(not os.path.exists(out), "%s bomb: no output" % kind)

    # realistic checkpoints still load
    L = sdlayouts.sd1_unet().merge(sdlayouts.vae()).merge(sdlayouts.clip_hf("cond_stage_model.transformer."))
    sd = {k: torch.zeros(1) for k in names(L)}
    for k in names(L):
        if k.startswith("model."):
            sd["model_ema." + k[len("model."):].replace(".", "")] = torch.zeros(1)
    sd["model_ema.decay"] = torch.tensor(0.9999)
    sd["model_ema.num_updates"] = torch.tensor(1000)
    cases = [("sd15_ema", {"state_dict": sd, "global_step": 470000, "epoch": 6})]
    X = sdlayouts.sdxl_unet().merge(sdlayouts.vae())
    cases.append(("sdxl", {"state_dict": {k: torch.zeros(1) for k in names(X)}}))
    params = list(sd)[:1500]
    opt_state = {"state": {i: {"step": torch.tensor(10.0), "exp_avg": torch.zeros(1),
                               "exp_avg_sq": torch.zeros(1)} for i in range(len(params))},
                 "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8,
                                   "weight_decay": 0.01, "params": list(range(len(params)))}]}
    cases.append(("optimizer", {"state_dict": sd, "optimizer_states": [opt_state],
                                "lr_schedulers": [{"last_epoch": 3}]}))
    for name, obj in cases:
        for legacy in (False, True):
            p = os.path.join(tmp, "%s%d.ckpt" % (name, legacy))
            torch.save(obj, p, _use_new_zipfile_serialization=not legacy)
            rc, err, _ = convert(p, out)
            check(rc == 0, "%s (%s, %d KB) loads: exit %d %s" % (
                name, "legacy" if legacy else "zip", os.path.getsize(p) // 1024, rc, err[-300:]))
            if os.path.exists(out):
                os.unlink(out)

print("# passed %d failed %d" % (passed, failed))
sys.exit(1 if failed else 0)

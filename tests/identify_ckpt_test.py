"""`safetensors identify` on PyTorch checkpoints: the same verdicts as for the
equivalent safetensors file, reached through the inert pickle reader
(torch.save writes the checkpoints; nothing in them is ever executed)."""
import json
import os
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdlayouts as sl  # noqa: E402

BIN = os.environ.get("ST_BIN", "build/safetensors")
passed = failed = 0

TORCH_DTYPES = {"F16": torch.float16, "F32": torch.float32, "BF16": torch.bfloat16,
                "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8}


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what)


def identify(path):
    r = subprocess.run([BIN, "identify", "--json", path], capture_output=True, text=True)
    check(r.returncode == 0, f"identify {path}: exit {r.returncode} {r.stderr}")
    try:
        return json.loads(r.stdout)
    except ValueError:
        check(False, f"identify {path}: not JSON: {r.stdout!r}")
        return {}


def state_dict(layout):
    # The layout's real names, shapes and dtypes; each a one-element zero
    # storage expanded (stride 0), so a full SD1 checkpoint stays tiny.
    out = {}
    for name, (dtype, shape) in layout.tensors.items():
        one = torch.zeros((), dtype=TORCH_DTYPES[dtype])
        out[name] = one.expand(*shape) if shape else one
    return out


def main():
    sd1 = sl.Layout()
    for part in (sl.sd1_unet(), sl.vae(), sl.clip_hf("cond_stage_model.transformer.")):
        sd1.merge(part)
    lora = sl.kohya_lora(sl.sd1_lora_modules())
    cases = [("sd1 checkpoint", sd1, {"state_dict": None, "global_step": 1000}),
             ("sd1 lora", lora, None)]
    with tempfile.TemporaryDirectory() as tmp:
        for label, layout, wrapper in cases:
            sd = state_dict(layout)
            obj = sd
            if wrapper is not None:
                obj = dict(wrapper)
                obj["state_dict"] = sd
            ckpt = os.path.join(tmp, "model.ckpt")
            torch.save(obj, ckpt)
            st = os.path.join(tmp, "model.safetensors")
            layout.write(st)
            a, b = identify(ckpt), identify(st)
            for key in ("kind", "family", "variant", "format", "precision", "parameters"):
                check(a.get(key) == b.get(key),
                      f"{label}: {key}: checkpoint {a.get(key)!r} vs safetensors {b.get(key)!r}")
            check(a.get("kind") in ("checkpoint", "lora"), f"{label}: kind {a.get('kind')!r}")
        # A file that is neither: an I/O-level error, exit 2, no crash.
        junk = os.path.join(tmp, "junk.ckpt")
        with open(junk, "wb") as f:
            f.write(b"PK\x03\x04 not really a zip")
        r = subprocess.run([BIN, "identify", junk], capture_output=True, text=True)
        check(r.returncode in (1, 2), f"junk: exit {r.returncode}")
    print(f"# passed {passed} failed {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

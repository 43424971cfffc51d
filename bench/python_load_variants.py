"""How load_file reads a file, against the ways it could, cat and the
reference package (emulated: it is not installed here).

    make python && PYTHONPATH=build/python /usr/bin/python3 bench/python_load_variants.py \
        [--mib 1024] [--dir TMPDIR] [--runs 5] [--fresh 3]

One set of weights (bench/python_load.py's make_weights) is written with
safetensors_c.torch.save_file and torch.save into --dir, read once so it is
in the page cache, then each way below loads it and reads one byte of
every 4 KiB page of every tensor (so every page is really there):

  cat                 cat FILE > /dev/null
  load_file           safetensors_c.torch.load_file (mmap backend): views of
                      a private mapping of the file, every page populated
                      (MADV_POPULATE_READ) then first read by up to 4 threads
  load_file pread     backend="pread": the data section read at once
                      (parallel pread) into one buffer of its own on huge
                      pages, tensors views of it
  mapping views       the mapping populated, not touched (load_file before)
  reference (emul.)   what safetensors.torch.load_file does on torch < 2:
                      ByteStorage.from_file(shared=False), storage[a:b],
                      torch.asarray(uint8).view(dtype).reshape(shape)
  torch.load          torch.load of the torch.save file

"best of --runs" repeats each in this process; "first call" is the median
of --fresh new processes doing it once, which includes what fresh memory
costs the first time a process touches it. Both files are deleted at the
end.

--dir matters: on a disk file system with large folios (ext4 on Linux
6.x) the mapping comes 2 MiB at a time and load_file beats cat; on tmpfs
without huge pages (/dev/shm, shmem_enabled=never) every 4 KiB page costs
its own first access. Measured on the shared 2-core VM (noisy), 2 GiB:
ext4 load_file 1.52x cat (first call 0.08 s), pread 0.42x (3.7 s),
reference emulated 1.39x, torch.load 0.02x; tmpfs load_file 0.26x-0.36x,
pread 0.64x-0.99x (first call 0.5-2.4 s), reference 0.19x.
"""
import argparse
import gc
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from python_load import best, make_weights, touch  # noqa: E402

from safetensors_c import safe_open  # noqa: E402
from safetensors_c import torch as stpt  # noqa: E402
from safetensors_c._open import VIEW_RW  # noqa: E402

_TORCH = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
          "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32,
          "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def reference_load_file(path):
    """The reference's torch load_file path on torch 1.13, step for step
    (its header parsing is Rust; json.loads stands in for it)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    storage = torch.ByteStorage.from_file(path, shared=False, size=size)
    storage = storage.untyped() if hasattr(storage, "untyped") else storage._untyped()
    out = {}
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        a, b = info["data_offsets"]
        t = torch.asarray(storage[8 + n + a:8 + n + b], dtype=torch.uint8, device="cpu")
        out[name] = t.view(dtype=_TORCH[info["dtype"]]).reshape(info["shape"])
    return out


def mapping_views(path):
    with safe_open(path, framework="pt", _populate=True) as f:
        f._mode = VIEW_RW
        return f.get_tensors()


WAYS = {
    "load_file": lambda sf, pt: stpt.load_file(sf),
    "load_file pread": lambda sf, pt: stpt.load_file(sf, backend="pread"),
    "mapping views": lambda sf, pt: mapping_views(sf),
    "reference (emul.)": lambda sf, pt: reference_load_file(sf),
    "torch.load": lambda sf, pt: torch.load(pt),
}


def first_call(way, sf, pt):
    """Seconds of one load + touch in a new process."""
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--one", way, sf, pt],
        check=True, capture_output=True, text=True)
    return float(out.stdout.split()[-1])


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--one":
        way, sf, pt = sys.argv[2:]
        t0 = time.perf_counter()
        touch(WAYS[way](sf, pt))
        print(time.perf_counter() - t0)
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--fresh", type=int, default=3)
    args = ap.parse_args()
    sf = os.path.join(args.dir, f"st-py-variants-{os.getpid()}.safetensors")
    pt = os.path.join(args.dir, f"st-py-variants-{os.getpid()}.pt")
    rows = []
    try:
        weights = make_weights(args.mib)
        stpt.save_file(weights, sf)
        torch.save(weights, pt)
        check = touch(weights)
        del weights
        gc.collect()
        for p in (sf, pt):
            with open(p, "rb") as f:
                while f.read(64 << 20):
                    pass
        size = os.path.getsize(sf)

        def cat():
            subprocess.run(["cat", sf], stdout=subprocess.DEVNULL, check=True)
        rows.append(("cat", best(cat, args.runs), None))
        for way, fn in WAYS.items():
            def run(fn=fn):
                assert touch(fn(sf, pt)) == check
            fresh = statistics.median(first_call(way, sf, pt) for _ in range(args.fresh))
            rows.append((way, best(run, args.runs), fresh))
    finally:
        for p in (sf, pt):
            if os.path.exists(p):
                os.remove(p)
    cat_t = rows[0][1]
    torch_t = dict((r[0], r) for r in rows)["torch.load"]
    print(f"# {size / 2**20:.0f} MiB in {args.dir}, best of {args.runs} / first call: median "
          f"of {args.fresh} new processes; torch {torch.__version__}")
    print(f"{'way':<18} {'best s':>8} {'GiB/s':>6} {'vs cat':>7} {'vs torch.load':>13}"
          f" {'first s':>8} {'vs torch.load':>13}")
    for way, t, fresh in rows:
        line = (f"{way:<18} {t:8.4f} {size / 2**30 / t:6.2f} {cat_t / t:6.2f}x"
                f" {torch_t[1] / t:12.2f}x")
        if fresh is not None:
            line += f" {fresh:8.4f} {torch_t[2] / fresh:12.2f}x"
        print(line)


if __name__ == "__main__":
    main()

"""Load throughput of the Python package against `cat` and torch.load.

    make python && PYTHONPATH=build/python /usr/bin/python3 bench/python_load.py \
        [--mib 2048] [--dir /dev/shm] [--runs 5]

Writes one set of weights (F32 and F16 tensors, --mib in all) twice into
--dir: with safetensors_c.torch.save_file and with torch.save, then times,
best of --runs, with the files in the page cache (tmpfs is the page cache):

  cat                  cat FILE > /dev/null
  load_file            safetensors_c.torch.load_file: zero-copy tensors over
                       a private mapping, then one byte of every 4 KiB page
                       read (so every page is really mapped in)
  load_file (lazy)     the call alone
  load_file pread      backend="pread": every tensor copied into its own memory
  numpy load_file      safetensors_c.numpy.load_file, pages touched
  torch.load           torch.load of the torch.save file (torch 1.13 copies
                       every storage out of the zip), pages touched

Standalone (not part of `make bench`): it needs about 3x --mib of memory
and a minute. Both files are deleted at the end.
"""
import argparse
import gc
import os
import subprocess
import sys
import time

import numpy as np
import torch

import safetensors_c
from safetensors_c import numpy as stnp
from safetensors_c import torch as stpt


def make_weights(mib):
    g = torch.Generator().manual_seed(0)
    weights, left, i = {}, mib << 20, 0
    while left > 0:
        # Large projection-like tensors with some small ones between them.
        nbytes = min(left, (48 << 20) if i % 4 else (1 << 16))
        if i % 3 == 0 and nbytes >= 8:
            t = torch.empty(nbytes // 2, dtype=torch.float16)
        else:
            t = torch.empty(nbytes // 4, dtype=torch.float32)
        t.view(-1).copy_(torch.randn(min(t.numel(), 1 << 20), generator=g).repeat(
            (t.numel() + (1 << 20) - 1) // (1 << 20))[: t.numel()])
        weights[f"model.layers.{i}.weight"] = t.reshape(-1, 256) if t.numel() % 256 == 0 else t
        left -= t.numel() * t.element_size()
        i += 1
    return weights


def touch(tensors):
    """Reads one byte per 4 KiB page of every tensor; returns their sum."""
    total = 0
    for t in tensors.values():
        if isinstance(t, torch.Tensor):
            if t.dtype == torch.bfloat16:
                t = t.view(torch.int16)
            a = t.numpy()
        else:
            a = t
        if a.size:
            total += int(a.reshape(-1).view(np.uint8)[::4096].sum())
    return total


def best(fn, runs):
    times = []
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=2048)
    ap.add_argument("--dir", default="/dev/shm")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    sf = os.path.join(args.dir, f"st-py-bench-{os.getpid()}.safetensors")
    pt = os.path.join(args.dir, f"st-py-bench-{os.getpid()}.pt")
    try:
        weights = make_weights(args.mib)
        stpt.save_file(weights, sf)
        torch.save(weights, pt)
        size = os.path.getsize(sf)
        check = touch(weights)
        del weights
        gc.collect()
        with open(sf, "rb") as f:  # into the page cache (a no-op on tmpfs)
            while f.read(64 << 20):
                pass
        with open(pt, "rb") as f:
            while f.read(64 << 20):
                pass

        def cat():
            subprocess.run(["cat", sf], stdout=subprocess.DEVNULL, check=True)

        def st_touch():
            assert touch(stpt.load_file(sf)) == check

        def st_lazy():
            stpt.load_file(sf)

        def st_pread():
            assert touch(stpt.load_file(sf, backend="pread")) == check

        def np_touch():
            assert touch(stnp.load_file(sf)) == check

        def torch_load():
            assert touch(torch.load(pt)) == check

        rows = [
            ("cat", best(cat, args.runs)),
            ("load_file", best(st_touch, args.runs)),
            ("load_file (lazy)", best(st_lazy, args.runs)),
            ("load_file pread", best(st_pread, args.runs)),
            ("numpy load_file", best(np_touch, args.runs)),
            ("torch.load", best(torch_load, args.runs)),
        ]
    finally:
        for p in (sf, pt):
            if os.path.exists(p):
                os.remove(p)
    times = dict(rows)
    print(f"# {size / 2**20:.0f} MiB, best of {args.runs}, torch {torch.__version__}, "
          f"safetensors_c {safetensors_c.__version__}, python {sys.version.split()[0]}")
    print(f"{'what':<20} {'seconds':>9} {'GiB/s':>8} {'vs cat':>8} {'vs torch.load':>14}")
    for name, t in rows:
        print(f"{name:<20} {t:9.4f} {size / 2**30 / t:8.2f} {times['cat'] / t:7.2f}x "
              f"{times['torch.load'] / t:13.2f}x")


if __name__ == "__main__":
    main()

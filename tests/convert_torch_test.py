"""st_convert against PyTorch (Debian's python3-torch, run with $PYTHON),
bit for bit: F32 -> F16, F32 -> BF16 and back, on millions of random bit
patterns of every class (normals, subnormals, zeros, Inf, NaN payloads,
halfway points) and on every 16-bit code.

Known, documented difference: for F32 -> BF16, torch 1.13's vectorised CPU
kernel writes 0xFFFF for every NaN; the library writes 0x7FC0 | sign. NaN
inputs are therefore compared as "both NaN, sign kept" there, and counted.

The library is loaded with ctypes from $ST_BUILD/libsafetensors.so; under
the sanitizer build (ST_SAN=1) that is not possible, so the part is skipped
(said in a printed line) and only the summary is printed."""
import ctypes
import os
import sys

passed = 0
failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL", what, file=sys.stderr)


def main():
    if os.environ.get("ST_SAN") == "1":
        print("# ST_SAN=1: sanitizer build, libsafetensors.so not loaded with ctypes; "
              "torch comparison skipped")
        return
    try:
        import numpy as np
        import torch
    except ImportError as e:  # pragma: no cover - the suite's $PYTHON has both
        print("# numpy/torch not importable (%s); torch comparison skipped" % e)
        return
    build = os.environ.get("ST_BUILD", "build")
    lib = ctypes.CDLL(os.path.join(build, "libsafetensors.so"))
    lib.st_convert.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                               ctypes.c_uint64, ctypes.c_uint, ctypes.c_void_p]
    lib.st_convert.restype = ctypes.c_int
    lib.st_convert_simd_name.restype = ctypes.c_char_p
    F16, BF16, F32 = 13, 14, 17

    def conv(to, from_, arr, out_dtype):
        out = np.empty(arr.shape, dtype=out_dtype)
        rc = lib.st_convert(to, out.ctypes.data, from_, arr.ctypes.data, arr.size, 0, None)
        check(rc == 0, "st_convert rc %d" % rc)
        return out

    rng = np.random.default_rng(20261126)
    n = 4_000_000
    bits = rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32)
    # a quarter near the F16 range (exponents 2^-30 .. 2^17), incl. subnormals
    q = n // 4
    exp = rng.integers(0x61, 0x91, size=q, dtype=np.uint32)
    bits[:q] = (bits[:q] & np.uint32(0x807FFFFF)) | (exp << np.uint32(23))
    # an eighth exact F16 / BF16 halfway points and their neighbours
    e = n // 8
    h = rng.integers(0, 2**16, size=e, dtype=np.uint32)
    mid16 = (h << np.uint32(13)) + np.uint32(0x38000000) + np.uint32(0x1000)
    mid16 += rng.integers(-1, 2, size=e).astype(np.int64).astype(np.uint32)
    bits[q:q + e] = mid16
    midb = (h << np.uint32(16)) | np.uint32(0x8000)
    midb += rng.integers(-1, 2, size=e).astype(np.int64).astype(np.uint32)
    bits[q + e:q + 2 * e] = midb
    specials = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000,
                         0x7F800001, 0xFFBFFFFF, 0x7FFFFFFF, 1, 0x80000001, 0x007FFFFF,
                         0x33000000, 0x33000001, 0x477FEFFF, 0x477FF000, 0x477FFFFF,
                         0x7F7F7FFF, 0x7F7F8000, 0x7F7FFFFF, 0x38800000, 0x387FFFFF],
                        dtype=np.uint32)
    bits[-len(specials):] = specials
    f = torch.from_numpy(bits.view(np.float32))
    isnan = np.isnan(bits.view(np.float32))
    print("# %d random F32 values (%d NaN); library SIMD path: %s; torch %s"
          % (n, int(isnan.sum()), lib.st_convert_simd_name().decode(), torch.__version__))

    # F32 -> F16: bit for bit, NaN included
    ours = conv(F16, F32, bits, np.uint16)
    theirs = f.to(torch.float16).view(torch.int16).numpy().view(np.uint16)
    diff = int((ours != theirs).sum())
    check(diff == 0, "F32->F16: %d of %d differ" % (diff, n))
    print("# F32->F16: %d of %d differ from torch" % (diff, n))

    # F32 -> BF16: non-NaN bit for bit; NaN -> 0x7FC0 | sign (torch: 0xFFFF)
    ours = conv(BF16, F32, bits, np.uint16)
    theirs = f.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    diff = int((ours[~isnan] != theirs[~isnan]).sum())
    check(diff == 0, "F32->BF16 (non-NaN): %d differ" % diff)
    want_nan = ((bits[isnan] >> np.uint32(16)) & np.uint32(0x8000)) | np.uint32(0x7FC0)
    check(bool((ours[isnan] == want_nan).all()), "F32->BF16 NaN -> 0x7FC0|sign")
    torch_nan = theirs[isnan]
    check(bool(((torch_nan & 0x7F80) == 0x7F80).all() and (torch_nan & 0x7F).all()),
          "torch BF16 NaN still NaN")
    print("# F32->BF16: %d of %d non-NaN differ; %d NaN inputs: ours 0x7FC0|sign, torch 0x%04X"
          % (diff, n - int(isnan.sum()), int(isnan.sum()),
             int(torch_nan[0]) if len(torch_nan) else 0))

    # back: every 16-bit code, then the random results
    codes = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    for name, code, tdt in (("F16", F16, torch.float16), ("BF16", BF16, torch.bfloat16)):
        for label, arr in (("all codes", codes),
                           ("random", bits.astype(np.uint16) ^ (bits >> 16).astype(np.uint16))):
            ours = conv(F32, code, arr, np.uint32)
            t = torch.from_numpy(arr.view(np.int16)).view(tdt)
            theirs = t.to(torch.float32).view(torch.int32).numpy().view(np.uint32)
            diff = int((ours != theirs).sum())
            check(diff == 0, "%s->F32 %s: %d differ" % (name, label, diff))
            print("# %s->F32 (%s, %d): %d differ from torch" % (name, label, arr.size, diff))

    # round trip F32 -> F16 -> F32 equals torch's round trip
    rt = conv(F32, F16, conv(F16, F32, bits, np.uint16), np.uint32)
    trt = f.to(torch.float16).to(torch.float32).view(torch.int32).numpy().view(np.uint32)
    check(bool((rt == trt).all()), "F32->F16->F32 round trip")


main()
print("# passed %d failed %d" % (passed, failed))
sys.exit(1 if failed else 0)

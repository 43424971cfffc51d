#!/usr/bin/env python3
"""Pickle bombs and lying containers through the CLI (`convert` and `scan`).

Each hostile checkpoint is generated here (pickle opcodes by hand, zips with
Python's zipfile, a legacy file with torch.save when torch is importable) and
must fail with the right error code (or, for the two legal-but-odd ones,
succeed), with no output or temporary file left, in bounded time and peak
RSS (/usr/bin/time %M): at most the pickle graph limit (512 MiB) + 8 bytes
per value of the object limit (16 Mi: the stacks) + 64 MiB = 704 MiB.
`scan` runs the same files inertly: exit 0 or 1, never a crash, same
bounds. Skipped when the CLI has no checkpoint support (branch ckpt not
merged). Under the ASan build (ST_SAN=1) the two slow bombs are skipped and
RSS is not bounded.

Every refusal is a verdict on the file: exit 1 (codes 40-45), with the code
name printed checked too."""
import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile

BIN = os.environ.get("ST_BIN", "build/safetensors")
SAN = os.environ.get("ST_SAN") == "1"
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL: " + what)


if subprocess.run([BIN, "scan", "--help"], capture_output=True).returncode != 0:
    print("no checkpoint support in this CLI (branch ckpt not merged): skipped")
    print("# passed 0 failed 0")
    sys.exit(0)
if not os.path.exists("/usr/bin/time"):
    print("FAIL: /usr/bin/time missing")
    print("# passed 0 failed 1")
    sys.exit(1)

BOUND_KB = (512 + 128 + 64) * 1024


def P(*parts):
    return b"".join(parts)


def binunicode(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def binint(i):
    if -2 ** 31 <= i < 2 ** 31:
        return b"J" + struct.pack("<i", i)
    b = i.to_bytes(9, "little", signed=True)
    return b"\x8a" + bytes([len(b)]) + b


def glob(m, n):
    return b"c" + m.encode() + b"\n" + n.encode() + b"\n"


PROTO2 = b"\x80\x02"


def zipckpt(pkl, storages, name="archive"):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(name + "/data.pkl", pkl)
        z.writestr(name + "/byteorder", b"little")
        for k, v in storages.items():
            z.writestr(name + "/data/" + k, v)
        z.writestr(name + "/version", b"3\n")
    return buf.getvalue()


def tensor_pkl(n_elems, storage_elems):
    """{'w': _rebuild_tensor_v2(pid(('storage', FloatStorage, '0', 'cpu', s)),
    0, (n,), (1,), False, OrderedDict())}"""
    return P(PROTO2, b"}", binunicode("w"), glob("torch._utils", "_rebuild_tensor_v2"), b"(",
             b"(", binunicode("storage"), glob("torch", "FloatStorage"), binunicode("0"),
             binunicode("cpu"), binint(storage_elems), b"tQ", binint(0), binint(n_elems), b"\x85",
             binint(1), b"\x85", b"\x89", glob("collections", "OrderedDict"), b")R", b"tR", b"s.")


def laughs():
    body = b"]q\x000"
    for level in range(1, 10):
        body += b"](" + (b"h" + bytes([level - 1])) * 10 + b"eq" + bytes([level]) + b"0"
    return P(PROTO2, b"}", binunicode("x"), body, b"h\x09", b"s.")


def zip_size_lie():
    z = bytearray(zipckpt(tensor_pkl(4, 4), {"0": b"\0" * 16}))
    i = z.find(b"PK\x01\x02")
    struct.pack_into("<II", z, i + 20, 0xFFFFFFF0, 0xFFFFFFF0)
    return bytes(z)


def zip_eocd_lie():
    z = bytearray(zipckpt(tensor_pkl(4, 4), {"0": b"\0" * 16}))
    i = z.rfind(b"PK\x05\x06")
    struct.pack_into("<HHII", z, i + 8, 65535, 65535, 0x7FFFFFFF, 0x7FFFFFFF)
    return bytes(z)


def legacy(count, cut=0):
    try:
        import torch
    except ImportError:
        return None
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, buf, _use_new_zipfile_serialization=False)
    b = bytearray(buf.getvalue())
    if struct.unpack_from("<Q", b, len(b) - 24)[0] != 4:
        return None
    struct.pack_into("<Q", b, len(b) - 24, count)
    return bytes(b[:len(b) - cut])


def torchscript(code, lie=False):
    """A TorchScript-shaped archive whose code/__torch__.py is `code`
    (deflated); lie: its stated size is 10 bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("m/data.pkl", P(PROTO2, b"}."))
        z.writestr("m/code/__torch__.py", code, zipfile.ZIP_DEFLATED)
        z.writestr("m/constants.pkl", P(PROTO2, b")."))
        z.writestr("m/version", b"3\n")
    b = bytearray(buf.getvalue())
    if lie:
        i = b.find(b"PK\x03\x04" + b"\x14\x00\x00\x00\x08\x00")  # the deflated entry's local header
        struct.pack_into("<I", b, i + 22, 10)
        i = b.find(b"PK\x01\x02", 0)
        while b[i + 46:i + 46 + 19] != b"m/code/__torch__.py":
            i = b.find(b"PK\x01\x02", i + 4)
        struct.pack_into("<I", b, i + 24, 10)
    return bytes(b)


def numpy_lie():
    """An ndarray claiming 2^40 x 2^40 float64 with 8 bytes of data."""
    big = b"\x8a\x08" + struct.pack("<q", 1 << 40)
    dt = P(glob("numpy", "dtype"), binunicode("f8"), b"\x89\x88\x87R", b"(K\x03", binunicode("<"),
           b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    arr = P(glob("numpy.core.multiarray", "_reconstruct"), glob("numpy", "ndarray"), b"K\x00\x85",
            b"C\x01b", b"\x87R", b"(K\x01", big, big, b"\x86", dt, b"\x89",
            b"C\x08", b"\0" * 8, b"tb")
    return zipckpt(P(PROTO2, b"}", binunicode("a"), arr, b"s."), {})


def tar_lie(what):
    """A tar checkpoint whose member size, or storages count, is absurd."""
    import tarfile
    members = [("sys_info", P(PROTO2, b"}.")), ("pickle", P(PROTO2, b"}.")), ("tensors", P(PROTO2, b"K\x00.")),
               ("storages", P(PROTO2, binint(1 << 62) if what == "count" else b"K\x00", b".", PROTO2, b"].")
                if what == "count" else P(PROTO2, b"K\x00.", PROTO2, b"]."))]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    b = bytearray(buf.getvalue())
    if what == "size":
        h = bytearray(b[:512])
        h[124:136] = b"77777777777\0"
        h[148:156] = b" " * 8
        h[148:156] = b"%06o\0 " % sum(h)
        b[:512] = h
    return bytes(b)


# name, bytes, expected code ("ok" = converts), slow
CASES = [
    ("valid (harness check)", zipckpt(tensor_pkl(4, 4), {"0": b"\0" * 16}), "ok", False),
    ("tensor past its storage", zipckpt(tensor_pkl(1000000, 4), {"0": b"\0" * 16}), "ckpt_tensor", False),
    ("storage record shorter than declared", zipckpt(tensor_pkl(4, 0x7FFFFFFF), {"0": b"\0" * 16}),
     "ckpt_tensor", False),
    ("memo growth: 2M MEMOIZE", zipckpt(P(b"\x80\x04", b"]\x940" * 2000000, b"}."), {}),
     "pickle_limit", False),
    ("sparse memo index 0xFFFFFFF0", zipckpt(P(PROTO2, b"]r", struct.pack("<I", 0xFFFFFFF0), b"0}."), {}),
     "ok", False),
    ("1M nested MARKs", zipckpt(P(PROTO2, b"(" * 1000000, b"}."), {}), "pickle_limit", False),
    ("200k nested lists", zipckpt(P(PROTO2, b"]" * 200000, b"a" * 199999, b"."), {}), "pickle_limit", False),
    ("LONG4 of 2^31-1 bytes", zipckpt(P(PROTO2, b"\x8b", struct.pack("<I", 0x7FFFFFFF), b"."), {}),
     "pickle_limit", False),
    ("text LONG of 10M digits", zipckpt(P(b"L", b"9" * 10000000, b"L\n."), {}), "pickle_limit", False),
    ("BINBYTES8 of 2^62 bytes", zipckpt(P(b"\x80\x04\x8e", struct.pack("<Q", 1 << 62), b"."), {}),
     "pickle_limit", False),
    ("BINUNICODE8 of 2^40 bytes", zipckpt(P(b"\x80\x04\x8d", struct.pack("<Q", 1 << 40), b"."), {}),
     "pickle_limit", False),
    ("BINBYTES of 200 MB, 10 present", zipckpt(P(b"\x80\x03B", struct.pack("<I", 200000000), b"x" * 10, b"."), {}),
     "pickle", False),
    ("billion laughs (10^9 references)", zipckpt(laughs(), {}), "pickle_limit", True),
    ("12M small values (graph memory limit)", zipckpt(P(PROTO2, b"](", b"K\x01" * 12000000, b"e}."), {}),
     "pickle_limit", True),
    ("zip: central sizes 0xFFFFFFF0", zip_size_lie(), "zip", False),
    ("zip: end record claims 65535 entries", zip_eocd_lie(), "zip", False),
    ("legacy: storage of 2^60 elements", legacy(1 << 60), "ckpt_tensor", False),
    ("legacy: storage data cut short", legacy(4, 8), "ckpt_format", False),
    ("TorchScript: 100 MB of calls, deflated", torchscript(b"torch.x(" * 12500000), "unsafe", False),
    ("TorchScript: code inflating past its size", torchscript(b"torch.y(1)\n" * 1000000, lie=True), "unsafe",
     False),
    ("numpy: 2^80 elements, 8 bytes of data", numpy_lie(), "pickle", False),
    ("tar: member of 8 GiB in a small file", tar_lie("size"), "ckpt_format", False),
    ("tar: storages count 2^62", tar_lie("count"), "ckpt_format", False),
]

tmp = tempfile.mkdtemp()
try:
    outdir = os.path.join(tmp, "out")
    os.mkdir(outdir)
    for name, data, want, slow in CASES:
        if data is None or (slow and SAN):
            print("  %-40s skipped" % name)
            continue
        src = os.path.join(tmp, "in.ckpt")
        with open(src, "wb") as f:
            f.write(data)
        for cmd in ("convert", "scan"):
            args = [BIN, "convert", src, os.path.join(outdir, "out.safetensors")] if cmd == "convert" \
                else [BIN, "scan", src]
            rss_file = os.path.join(tmp, "rss")
            try:
                p = subprocess.run(["/usr/bin/time", "-f", "%M %e", "-o", rss_file] + args,
                                   capture_output=True, timeout=120)
            except subprocess.TimeoutExpired:
                check(False, "%s %s: hang (killed after 120 s)" % (cmd, name))
                continue
            rss, secs = open(rss_file).read().split()[-2:]
            rss, secs = int(rss), float(secs)
            err = p.stderr.decode(errors="replace")
            print("  %-40s %-7s exit %d  %6.2f s  peak RSS %7d KiB  %s" %
                  (name, cmd, p.returncode, secs, rss, err.strip()[:90]))
            check(secs < 60, "%s %s: %.1f s" % (cmd, name, secs))
            if not SAN:
                check(rss <= BOUND_KB, "%s %s: peak RSS %d KiB > %d" % (cmd, name, rss, BOUND_KB))
            if cmd == "scan":
                check(p.returncode in (0, 1), "scan %s: exit %d" % (name, p.returncode))
                continue
            left = sorted(os.listdir(outdir))
            if want == "ok":
                check(p.returncode == 0, "convert %s: exit %d (%s)" % (name, p.returncode, err[:200]))
                check(left == ["out.safetensors"], "convert %s left %s" % (name, left))
            else:
                check(p.returncode == 1, "convert %s: exit %d" % (name, p.returncode))
                check(": %s:" % want in err, "convert %s: want %s, got: %s" % (name, want, err[:200]))
                check(left == [], "convert %s left %s" % (name, left))
            for f in left:
                os.unlink(os.path.join(outdir, f))
finally:
    shutil.rmtree(tmp)
print("# passed %d failed %d" % (passed, failed))
sys.exit(1 if failed else 0)

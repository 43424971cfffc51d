"""PyTorch checkpoint import: `safetensors scan` and `safetensors convert` on
checkpoints generated with torch.save (Debian's python3-torch), compared bit
for bit with torch.load; malicious pickles (which must be flagged, refused,
and never run); pickle bombs; truncated and foreign files. Library calls
through ctypes when the build is not the sanitizer one.
Env: ST_BIN ST_BUILD ST_SAN (tests/run-suite.sh). Prints '# passed N failed M'."""
import collections
import ctypes
import json
import os
import pickle
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile

ROOT = os.environ.get("ST_ROOT") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("ST_BIN") or os.path.join(ROOT, "build", "safetensors")
BUILD = os.environ.get("ST_BUILD") or os.path.join(ROOT, "build")
SAN = os.environ.get("ST_SAN") == "1"
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what, file=sys.stderr)


def finish():
    print("# passed %d failed %d" % (passed, failed))
    sys.exit(1 if failed else 0)


try:
    import numpy as np
    import torch
except Exception as e:  # the suite needs Debian's python3-torch
    print("cannot import torch/numpy (%s)" % e, file=sys.stderr)
    check(False, "torch importable")
    finish()

tmp = tempfile.mkdtemp(prefix="ckpt_test.")
import atexit  # noqa: E402
atexit.register(shutil.rmtree, tmp, True)
MARKER = os.path.join(tmp, "MARKER")


def p(name):
    return os.path.join(tmp, name)


def limit_memory():
    # 512 MiB of address space: a bomb that grew past it would fail with
    # nomem instead of the pickle error the test wants.
    resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))


def run(*args, timeout=60, bounded=False):
    t0 = time.time()
    r = subprocess.run([BIN] + list(args), capture_output=True, timeout=timeout,
                       preexec_fn=limit_memory if bounded and not SAN else None)
    r.elapsed = time.time() - t0
    r.out = r.stdout.decode("utf-8", "replace")
    r.err = r.stderr.decode("utf-8", "replace")
    return r


def read_safetensors(path):
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    meta = h.pop("__metadata__", None)
    base = 8 + n
    return {k: (v["dtype"], v["shape"], b[base + v["data_offsets"][0]:base + v["data_offsets"][1]])
            for k, v in h.items()}, meta


DT = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
      torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
      torch.uint8: "U8", torch.bool: "BOOL", torch.complex64: "C64"}


def tensor_bytes(t):
    t = t.detach().contiguous()
    if t.is_complex():
        t = torch.view_as_real(t).contiguous()
    if t.numel() == 0:
        return b""
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def expected(obj):
    """The naming rules of the converter, applied to what torch.load gives."""
    out = {}
    if isinstance(obj, dict):
        for _ in range(2):
            if isinstance(obj.get("state_dict"), dict):
                obj = obj["state_dict"]

    def walk(prefix, v):
        if isinstance(v, torch.Tensor):
            out[prefix if prefix else "tensor"] = v
        elif isinstance(v, dict):
            for k, x in v.items():
                if isinstance(k, bool) or not isinstance(k, (str, int)):
                    continue
                walk(prefix + "." + str(k) if prefix else str(k), x)
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                walk(prefix + "." + str(i) if prefix else str(i), x)
    walk("", obj)
    return out


def same_as_torch(ckpt, st_path, label):
    want = expected(torch.load(ckpt))
    got, meta = read_safetensors(st_path)
    check(set(got) == set(want), "%s: tensor names %s vs %s" % (label, sorted(got), sorted(want)))
    for k, t in want.items():
        if k not in got:
            continue
        dt, shape, data = got[k]
        check(dt == DT[t.dtype], "%s: %s dtype %s, want %s" % (label, k, dt, DT[t.dtype]))
        check(shape == list(t.shape), "%s: %s shape %s, want %s" % (label, k, shape, list(t.shape)))
        check(data == tensor_bytes(t), "%s: %s bytes differ from torch.load" % (label, k))
    check(meta is not None and meta.get("format") == "pt", "%s: metadata format=pt (%s)" % (label, meta))
    return got, meta


# ------------------------------------------------------------ generation
g = torch.Generator().manual_seed(1)


def rnd(*shape, dtype=torch.float32):
    x = torch.randn(*shape, generator=g) * 100
    if dtype == torch.bool:
        return x > 0
    if dtype.is_complex:
        return torch.complex(x, torch.randn(*shape, generator=g)).to(dtype)
    return x.to(dtype)


def zoo():
    d = collections.OrderedDict()
    for dt in DT:
        d["all." + str(dt).split(".")[1]] = rnd(3, 5, dtype=dt)
    base = rnd(6, 8)
    d["view.rows"] = base[2:5]             # offset into a shared storage
    d["view.col"] = base[:, 3]             # stride 8
    d["view.base"] = base                  # the storage itself
    d["transpose"] = rnd(4, 7, dtype=torch.float16).t()
    d["permute"] = rnd(2, 3, 4, dtype=torch.int32).permute(2, 0, 1)
    d["expand"] = rnd(3, 1).expand(3, 4)   # stride 0
    d["step"] = rnd(20, dtype=torch.float64)[1::3]
    d["param"] = torch.nn.Parameter(rnd(2, 2))
    d["empty"] = torch.zeros(0, 3)
    d["empty1"] = torch.zeros(0)
    d["scalar"] = torch.tensor(2.5)
    d["scalar_i"] = torch.tensor(7, dtype=torch.int64)
    d["nested"] = {"list": [rnd(2), (rnd(1, dtype=torch.int8), rnd(3, dtype=torch.bool))],
                   "dict": {"deep": {"er": rnd(2, 2, dtype=torch.bfloat16)}},
                   5: rnd(1), "skip": "text", "n": 3}
    return d


cases = []
for proto in (2, 4, 5):
    for zipfmt in (True, False):
        name = "zoo_p%d_%s.pt" % (proto, "zip" if zipfmt else "legacy")
        torch.save(zoo(), p(name), pickle_protocol=proto, _use_new_zipfile_serialization=zipfmt)
        cases.append(name)

# state_dict wrapping (twice, as A1111 saves) and top-level scalars
sd = collections.OrderedDict([("model.w", rnd(4, 4)), ("model.b", rnd(4))])
torch.save({"state_dict": {"state_dict": sd}, "global_step": 1234, "epoch": 7, "lr": 0.25,
            "name": "run-1", "flag": True}, p("wrapped.ckpt"))
cases.append("wrapped.ckpt")
torch.save({"state_dict": sd, "global_step": 99}, p("wrapped_legacy.ckpt"),
           _use_new_zipfile_serialization=False)
cases.append("wrapped_legacy.ckpt")

# a stand-in pytorch_lightning callback object and numpy scalars
os.makedirs(p("mods/pytorch_lightning/callbacks"))
open(p("mods/pytorch_lightning/__init__.py"), "w").close()
with open(p("mods/pytorch_lightning/callbacks/__init__.py"), "w") as f:
    f.write("class ModelCheckpoint:\n    def __init__(self):\n        self.monitor = 'val/loss'\n"
            "        self.best_model_score = None\n        self.save_top_k = 3\n")
sys.path.insert(0, p("mods"))
from pytorch_lightning.callbacks import ModelCheckpoint  # noqa: E402

torch.save({"state_dict": sd, "callbacks": {ModelCheckpoint: {"best": np.float64(0.5)}},
            "cb": ModelCheckpoint(), "np_step": np.int64(3), "np_arr": np.arange(4),
            "global_step": 5}, p("lightning.ckpt"))
cases.append("lightning.ckpt")
torch.save(rnd(3, 3), p("single.pt"))
cases.append("single.pt")
torch.save([rnd(2), rnd(3)], p("list.pt"), _use_new_zipfile_serialization=False)
cases.append("list.pt")

for c in cases:
    out = p(c + ".safetensors")
    r = run("convert", p(c), out)
    check(r.returncode == 0, "convert %s: exit %d %s" % (c, r.returncode, r.err))
    if r.returncode == 0:
        got, meta = same_as_torch(p(c), out, c)
    r = run("scan", p(c))
    check(r.returncode == 0, "scan %s: exit %d %s" % (c, r.returncode, r.out + r.err))
    check("0 dangerous" in r.out, "scan %s says 0 dangerous" % c)

got, meta = read_safetensors(p("wrapped.ckpt.safetensors"))
check(meta == {"format": "pt", "global_step": "1234", "epoch": "7", "lr": "0.25", "name": "run-1",
               "flag": "True"}, "top-level scalars kept as metadata: %s" % meta)
check(sorted(got) == ["model.b", "model.w"], "state_dict unwrapped twice: %s" % sorted(got))
got, meta = read_safetensors(p("single.pt.safetensors"))
check(list(got) == ["tensor"], "a lone tensor is named 'tensor'")
r = run("scan", p("lightning.ckpt"))
check("unknown   pytorch_lightning.callbacks.ModelCheckpoint" in r.out, "lightning callback listed unknown")
check("safe      numpy" in r.out or "numpy.core.multiarray.scalar" in r.out, "numpy scalar listed")
r = run("scan", "--json", p("lightning.ckpt"), p("zoo_p2_zip.pt"))
try:
    j = json.loads(r.out)
    f0 = j["files"][0]
    check(f0["status"] == "clean" and f0["dangerous"] == 0 and f0["format"] == "zip-pickle", "json status")
    mods = {(x["module"], x["name"]): x["safety"] for x in f0["globals"]}
    check(mods.get(("pytorch_lightning.callbacks", "ModelCheckpoint")) == "unknown", "json unknown class")
    check(mods.get(("torch._utils", "_rebuild_tensor_v2")) == "safe", "json rebuild safe")
    check(len(j["files"]) == 2 and j["dangerous_files"] == 0, "json: two files, none dangerous")
except Exception as e:
    check(False, "scan --json parses: %s %r" % (e, r.out[:200]))

# ls and info read checkpoints too
r = run("ls", "--json", p("zoo_p2_legacy.pt"))
try:
    rows = json.loads(r.out)
    want = expected(torch.load(p("zoo_p2_legacy.pt")))
    check(r.returncode == 0 and {x["name"] for x in rows} == set(want), "ls --json names a checkpoint's tensors")
    check(all(x["shape"] == list(want[x["name"]].shape) for x in rows), "ls --json shapes")
    check(any(not x["contiguous"] for x in rows), "ls --json marks views non-contiguous")
except Exception as e:
    check(False, "ls --json on a checkpoint: %s %r" % (e, r.out[:200]))
r = run("ls", "--sort", "size", p("wrapped.ckpt"), "*.w")
check(r.returncode == 0 and "model.w" in r.out and "model.b" not in r.out, "ls GLOB on a checkpoint: %s" % r.out)
r = run("info", p("lightning.ckpt"))
check(r.returncode == 0 and "zip-pickle" in r.out and "global_step: 5" in r.out, "info text: %s" % r.out)
r = run("info", "--json", p("wrapped.ckpt"))
try:
    j = json.loads(r.out)
    check(j["tensors"] == 2 and j["parameters"] == 20 and j["metadata"]["global_step"] == "1234", "info --json")
except Exception as e:
    check(False, "info --json on a checkpoint: %s" % e)

# sparse and quantized tensors: a clear refusal naming the tensor, not a silent drop
for name, t in (("sparse", torch.randn(3, 3).to_sparse()),
                ("quantized", torch.quantize_per_tensor(torch.randn(4), 0.1, 0, torch.qint8))):
    torch.save({"state_dict": {"w": rnd(2), name: t}}, p(name + ".pt"))
    r = run("convert", p(name + ".pt"), p(name + ".st"))
    check(r.returncode == 2 and "unsupported" in r.err and "'%s'" % name in r.err,
          "%s tensor refused: %d %s" % (name, r.returncode, r.err.strip()))
    check(not os.path.exists(p(name + ".st")), "%s tensor: no output" % name)
# ... but outside the state_dict (dropped anyway) they do not block the conversion
torch.save({"state_dict": {"w": rnd(2)}, "extra": torch.randn(3, 3).to_sparse()}, p("sparse_extra.pt"))
r = run("convert", p("sparse_extra.pt"), p("sparse_extra.st"))
check(r.returncode == 0, "a sparse tensor outside the state_dict: %s" % r.err)

# the safetensors-only convert options are refused for checkpoints, no output
r = run("convert", "--dtype", "f16", p("wrapped.ckpt"), p("dtype.st"))
check(r.returncode == 2 and "unsupported" in r.err and not os.path.exists(p("dtype.st")),
      "convert --dtype of a checkpoint refused: %d %s" % (r.returncode, r.err.strip()))

# complex128 has no safetensors dtype: a clean refusal, no output
torch.save({"c": rnd(2, dtype=torch.complex128)}, p("c128.pt"))
r = run("convert", p("c128.pt"), p("c128.safetensors"))
check(r.returncode == 2 and "unsupported" in r.err, "complex128: unsupported (%d %s)" % (r.returncode, r.err))
check(not os.path.exists(p("c128.safetensors")), "complex128: no output")

# a safetensors file: scan says it holds no code
r = run("scan", p("single.pt.safetensors"))
check(r.returncode == 0 and "holds no code" in r.out, "scan of safetensors: %s" % r.out)

# ------------------------------------------------------------ malicious
import builtins  # noqa: E402


class Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


touch = "touch " + MARKER
payloads = {
    "os_system": Reduce(os.system, (touch,)),
    "exec": Reduce(builtins.exec, ("open(%r, 'w').close()" % MARKER,)),
    "eval": Reduce(builtins.eval, ("__import__('os').system(%r)" % touch,)),
    "subprocess": Reduce(subprocess.call, (["touch", MARKER],)),
}
# __import__ via REDUCE, getattr for the function: written by hand
hand = (b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'" +
        touch.encode() + b"'\ntR.")
evil_files = {}
for name, obj in payloads.items():
    for proto in (0, 2, 4):
        fn = p("evil_%s_p%d.pkl" % (name, proto))
        with open(fn, "wb") as f:
            pickle.dump(obj, f, protocol=proto)
        evil_files[fn] = name
    fn = p("evil_%s.pt" % name)
    torch.save({"w": rnd(2), "payload": obj}, fn)
    evil_files[fn] = name
    fn = p("evil_%s_legacy.pt" % name)
    torch.save({"w": rnd(2), "payload": obj}, fn, _use_new_zipfile_serialization=False)
    evil_files[fn] = name
with open(p("evil_import.pkl"), "wb") as f:
    f.write(hand)
evil_files[p("evil_import.pkl")] = "__import__"
# the hand-written pickle inside a checkpoint's zip, as its data.pkl
with zipfile.ZipFile(p("evil_import_zip.pt"), "w", zipfile.ZIP_STORED) as z:
    z.writestr("archive/data.pkl", hand)
    z.writestr("archive/version", "3\n")
evil_files[p("evil_import_zip.pt")] = "__import__"

want_global = {"os_system": "system", "exec": "exec", "eval": "eval", "subprocess": "call",
               "__import__": "__import__"}
for fn, kind in sorted(evil_files.items()):
    b = os.path.basename(fn)
    r = run("scan", fn)
    check(r.returncode == 1, "scan %s: exit %d, want 1 (%s)" % (b, r.returncode, r.out + r.err))
    check("dangerous" in r.out and want_global[kind] in r.out, "scan %s names %s: %s" % (b, kind, r.out))
    out = fn + ".safetensors"
    r = run("convert", fn, out)
    check(r.returncode == 1, "convert %s refused: exit %d %s" % (b, r.returncode, r.err))
    check("refusing" in r.err, "convert %s says it refuses" % b)
    check(not os.path.exists(out), "convert %s: no output" % b)
    check(not os.path.exists(MARKER), "marker file absent after %s" % b)
# --allow-unsafe-globals: the tensors come out, the payload still never runs
for name in payloads:
    fn = p("evil_%s.pt" % name)
    r = run("convert", "--allow-unsafe-globals", fn, fn + ".st")
    check(r.returncode == 0, "allow-unsafe %s: exit %d %s" % (name, r.returncode, r.err))
    if r.returncode == 0:
        got, _ = read_safetensors(fn + ".st")
        check(list(got) == ["w"], "allow-unsafe %s: the tensor converted (%s)" % (name, list(got)))
    check(not os.path.exists(MARKER), "marker absent after allow-unsafe %s" % name)
r = run("scan", "--json", p("evil_os_system.pt"))
try:
    j = json.loads(r.out)
    f0 = j["files"][0]
    check(f0["status"] == "dangerous" and f0["dangerous"] >= 1, "json dangerous status")
    check(any(x["safety"] == "dangerous" and x["name"] == "system" for x in f0["globals"]), "json names system")
except Exception as e:
    check(False, "scan --json of a malicious file parses: %s" % e)
# a malicious extra pickle beside a clean data.pkl: scan reads every .pkl
with zipfile.ZipFile(p("zoo_p2_zip.pt")) as zin, zipfile.ZipFile(p("extra_pkl.pt"), "w") as zout:
    for nm in zin.namelist():
        zout.writestr(nm, zin.read(nm))
    zout.writestr(zin.namelist()[0].split("/")[0] + "/extra.pkl", b"cos\nsystem\n(S'" + touch.encode() + b"'\ntR.")
r = run("scan", p("extra_pkl.pt"))
check(r.returncode == 1 and "os.system" in r.out and "extra.pkl" in r.out, "extra .pkl scanned: %s" % r.out)
r = run("convert", p("extra_pkl.pt"), p("extra_pkl.st"))
check(r.returncode == 1 and not os.path.exists(p("extra_pkl.st")), "extra .pkl: convert refuses")
raw = open(p("extra_pkl.pt"), "rb").read()
off = int(r.err.split("offset ")[1].split(")")[0]) if "offset " in r.err else -1
check(raw[off:off + 10] == b"cos\nsystem", "reported offset is the GLOBAL opcode's file offset (%d)" % off)

# one dangerous file among clean ones: exit 1
r = run("scan", p("wrapped.ckpt"), p("evil_eval.pt"))
check(r.returncode == 1, "mixed scan exit 1")

# ------------------------------------------------------------ bombs
def zip_with(pkl, name):
    fn = p(name)
    with zipfile.ZipFile(fn, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/version", "3\n")
    return fn


bombs = {
    # 1.1 M distinct memo keys (the limit is 1 Mi)
    "memo": b"\x80\x02N" + b"".join(b"r" + struct.pack("<I", i * 7) for i in range(1_100_000)) + b".",
    "marks": b"\x80\x02" + b"(" * 200_000 + b"N.",
    # 100k lists nested in each other: the naming walk's depth limit
    "nesting": b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b"}q\x00(X\x01\x00\x00\x00xq\x01h\x00u.",
    # billion laughs: a tuple of the previous tuple twice, 80 times
    "laughs": b"\x80\x02]q\x00" + b"".join(b"h" + bytes([i]) + b"h" + bytes([i]) + b"\x86q" + bytes([i + 1])
                                           for i in range(80)) + b".",
    "long4": b"\x80\x02\x8b\xff\xff\xff\x7f" + b"\x00" * 64 + b".",
    "long_text": b"L" + b"9" * 200_000 + b"L\n.",
    "binbytes8": b"\x80\x04\x8e" + struct.pack("<Q", 1 << 62) + b"x" * 16 + b".",
    "binunicode": b"\x80\x02X" + struct.pack("<I", 0xfffffff0) + b"abc.",
}
# Put the nesting bomb's root list in a dict so the walk reaches it.
bombs["nesting"] = (b"\x80\x02}(X\x01\x00\x00\x00x" + b"]" * 100_000 + b"a" * 99_999 + b"u.")
bombs["laughs"] = (b"\x80\x02}(X\x01\x00\x00\x00x]q\x000" +
                   b"".join(b"h" + bytes([i]) + b"h" + bytes([i]) + b"\x86q" + bytes([i + 1]) + b"0"
                            for i in range(80)) + b"h\x50u.")
for name, pkl in bombs.items():
    fn = zip_with(pkl, "bomb_%s.pt" % name)
    r = run("convert", fn, fn + ".st", timeout=30, bounded=True)
    check(r.returncode == 1, "bomb %s: convert exit %d, want 1 (%s)" % (name, r.returncode, r.err))
    check("pickle" in r.err, "bomb %s: a pickle error: %s" % (name, r.err.strip()[:200]))
    check(r.elapsed < 20, "bomb %s: fails fast (%.1fs)" % (name, r.elapsed))
    check(not os.path.exists(fn + ".st"), "bomb %s: no output" % name)
    r = run("scan", fn, timeout=30, bounded=True)
    check(r.returncode in (0, 1), "bomb %s: scan exit %d (%s)" % (name, r.returncode, r.err))
r = run("convert", p("bomb_laughs.pt"), p("x.st"))
check("pickle_limit" in r.err, "billion laughs: pickle_limit (%s)" % r.err.strip())
r = run("convert", p("bomb_long4.pt"), p("x.st"))
check("pickle_limit" in r.err, "huge LONG4: pickle_limit (%s)" % r.err.strip())

# ------------------------------------------------------------ crafted checkpoints
class SRef:
    def __init__(self, key, numel, typ=None):
        self.key, self.numel, self.typ = key, numel, typ or torch.FloatStorage


class TRef:
    def __init__(self, st, off, size, stride):
        self.args = (st, off, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class CkptPickler(pickle.Pickler):
    def persistent_id(self, o):
        if isinstance(o, SRef):
            return ("storage", o.typ, o.key, "cpu", o.numel)
        return None


def crafted(name, obj, records, byteorder=None):
    import io
    b = io.BytesIO()
    CkptPickler(b, protocol=2).dump(obj)
    fn = p(name)
    with zipfile.ZipFile(fn, "w", zipfile.ZIP_STORED) as z:
        z.writestr("m/data.pkl", b.getvalue())
        for k, v in records.items():
            z.writestr("m/data/" + k, v)
        if byteorder:
            z.writestr("m/byteorder", byteorder)
    return fn


s0 = SRef("0", 6)
data0 = struct.pack("<6f", *range(6))
ok = crafted("craft_ok.pt", {"a": TRef(s0, 1, [2, 2], [1, 2]), "b": TRef(s0, 0, [6], [1])}, {"0": data0})
r = run("convert", ok, ok + ".st")
check(r.returncode == 0, "crafted checkpoint converts: %s" % r.err)
if r.returncode == 0:
    got, _ = read_safetensors(ok + ".st")
    check(got["a"][2] == struct.pack("<4f", 1, 3, 2, 4), "crafted strided view: %r" % (got["a"][2],))
    check(got["b"][2] == data0, "crafted full view")
bad_cases = {
    "past_storage": ({"a": TRef(s0, 3, [4], [1])}, {"0": data0}, "ckpt_tensor"),
    "stride_past": ({"a": TRef(s0, 0, [2, 3], [4, 1])}, {"0": data0}, "ckpt_tensor"),
    "stride_overflow": ({"a": TRef(s0, 0, [2, 2], [1 << 62, 1 << 62])}, {"0": data0}, "ckpt_tensor"),
    "huge_shape": ({"a": TRef(s0, 0, [1 << 40, 1 << 40], [0, 0])}, {"0": data0}, "ckpt_tensor"),
    "negative_stride": ({"a": TRef(s0, 2, [2], [-1])}, {"0": data0}, "ckpt_tensor"),
    "record_short": ({"a": TRef(s0, 0, [6], [1])}, {"0": data0[:-4]}, "ckpt_tensor"),
    "record_missing": ({"a": TRef(s0, 0, [6], [1])}, {}, "ckpt_tensor"),
    "two_names": ({"a.b": TRef(s0, 0, [1], [1]), "a": {"b": TRef(s0, 1, [1], [1])}}, {"0": data0}, "ckpt_tensor"),
    "bad_storage_class": ({"a": TRef(SRef("0", 6, torch.nn.Linear), 0, [1], [1])}, {"0": data0}, "ckpt_tensor"),
    "quantized_storage": ({"a": TRef(SRef("0", 24, torch.QInt8Storage), 0, [1], [1])}, {"0": data0}, "unsupported"),
    "one_storage_two_types": ({"a": TRef(s0, 0, [1], [1]), "b": TRef(SRef("0", 6, torch.IntStorage), 0, [1], [1])},
                              {"0": data0}, "ckpt_tensor"),
    "bad_byteorder": ({"a": TRef(s0, 0, [6], [1])}, {"0": data0}, "ckpt_format"),
}
for name, (obj, recs, code) in bad_cases.items():
    fn = crafted("craft_%s.pt" % name, obj, recs, byteorder="middle" if name == "bad_byteorder" else None)
    r = run("convert", fn, fn + ".st")
    want_rc = 2 if code == "unsupported" else 1  # a malformed file is a verdict (1)
    check(r.returncode == want_rc and code in r.err, "crafted %s: exit %d, want %d and %s: %s" % (
        name, r.returncode, want_rc, code, r.err.strip()))
    check(not os.path.exists(fn + ".st"), "crafted %s: no output" % name)
# big-endian archive (byteorder record): values swapped back, complex per half
vals = [1.5, -2.0, 3.25, 1e-3, 7.0, -0.0]
be = crafted("craft_be.pt", {"f": TRef(s0, 0, [6], [1]), "t": TRef(s0, 0, [3, 2], [1, 3]),
                             "c": TRef(SRef("1", 2, torch.ComplexFloatStorage), 0, [2], [1]),
                             "h": TRef(SRef("2", 3, torch.HalfStorage), 0, [3], [1])},
             {"0": struct.pack(">6f", *vals), "1": struct.pack(">4f", 1, 2, 3, 4),
              "2": struct.pack(">3e", 0.5, 2.0, -1.0)}, byteorder="big")
r = run("convert", be, be + ".st")
check(r.returncode == 0, "big-endian archive converts: %s" % r.err)
if r.returncode == 0:
    got, _ = read_safetensors(be + ".st")
    check(got["f"][2] == struct.pack("<6f", *vals), "big-endian F32 swapped")
    check(got["t"][2] == struct.pack("<6f", vals[0], vals[3], vals[1], vals[4], vals[2], vals[5]),
          "big-endian transposed view")
    check(got["c"][2] == struct.pack("<4f", 1, 2, 3, 4), "big-endian C64 swapped per float")
    check(got["h"][2] == struct.pack("<3e", 0.5, 2.0, -1.0), "big-endian F16 swapped")

# ------------------------------------------------------------ zip variants
def to_zip64(src, dst):
    """Rewrites a zip's central directory and end records in zip64 form:
    sizes and offsets saturated in the central directory with a zip64 extra
    field, a zip64 end record and locator, the classic end record saturated
    (what a writer does for archives over 4 GiB)."""
    b = open(src, "rb").read()
    e = b.rfind(b"PK\x05\x06")
    n, cd_size, cd_off = struct.unpack("<HII", b[e + 10:e + 20])
    pos, cd = cd_off, b""
    for _ in range(n):
        h = bytearray(b[pos:pos + 46])
        nl, xl, cl = struct.unpack("<HHH", h[28:34])
        crc, csize, usize = struct.unpack("<III", h[16:28])
        lho = struct.unpack("<I", h[42:46])[0]
        name = b[pos + 46:pos + 46 + nl]
        extra = struct.pack("<HHQQQ", 1, 24, usize, csize, lho)
        h[20:28] = struct.pack("<II", 0xffffffff, 0xffffffff)
        h[42:46] = struct.pack("<I", 0xffffffff)
        h[30:32] = struct.pack("<H", len(extra))
        cd += bytes(h) + name + extra
        pos += 46 + nl + xl + cl
    out = b[:cd_off] + cd
    z64 = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064b50, 44, 45, 45, 0, 0, n, n, len(cd), cd_off)
    out += struct.pack("<IIQI", 0x07064b50, 0, z64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054b50, 0xffff, 0xffff, 0xffff, 0xffff, 0xffffffff, 0xffffffff, 0)
    open(dst, "wb").write(out)


to_zip64(p("zoo_p2_zip.pt"), p("zip64.pt"))
r = run("convert", p("zip64.pt"), p("zip64.st"))
check(r.returncode == 0, "zip64 end records and extra fields: %s" % r.err)
if r.returncode == 0:
    check(open(p("zip64.st"), "rb").read() == open(p("zoo_p2_zip.pt.safetensors"), "rb").read(),
          "zip64 form converts to the same file")
# a zip64 end record whose values disagree with the classic one
b = bytearray(open(p("zip64.pt"), "rb").read())
b[-22 + 10:-22 + 12] = struct.pack("<H", 3)  # total entries no longer saturated, and wrong
open(p("zip64_bad.pt"), "wb").write(bytes(b))
r = run("convert", p("zip64_bad.pt"), p("zip64_bad.st"))
check(r.returncode == 1 and "zip" in r.err, "zip64 disagreement rejected: %s" % r.err.strip())
# Python's zipfile: data descriptors (streamed writes), force_zip64 local headers, deflated data.pkl
with zipfile.ZipFile(p("zoo_p2_zip.pt")) as zin:
    names = zin.namelist()
    with zipfile.ZipFile(p("rezip.pt"), "w", zipfile.ZIP_STORED) as zout:
        for nm in names:
            with zin.open(nm) as fi, zout.open(nm, "w", force_zip64=True) as fo:
                fo.write(fi.read())
    with zipfile.ZipFile(p("deflated_pkl.pt"), "w", zipfile.ZIP_STORED) as zout:
        for nm in names:
            zout.writestr(nm, zin.read(nm), zipfile.ZIP_DEFLATED if nm.endswith(".pkl") else zipfile.ZIP_STORED)
    with zipfile.ZipFile(p("deflated_all.pt"), "w", zipfile.ZIP_DEFLATED) as zout:
        for nm in names:
            zout.writestr(nm, zin.read(nm))
for name in ("rezip.pt", "deflated_pkl.pt"):
    r = run("convert", p(name), p(name + ".st"))
    check(r.returncode == 0, "%s converts: %s" % (name, r.err))
    if r.returncode == 0:
        check(open(p(name + ".st"), "rb").read() == open(p("zoo_p2_zip.pt.safetensors"), "rb").read(),
              "%s: same output as the original" % name)
r = run("convert", p("deflated_all.pt"), p("deflated_all.st"))
check(r.returncode == 2 and "unsupported" in r.err, "compressed storages: unsupported: %s" % r.err.strip())
r = run("scan", p("deflated_all.pt"))
check(r.returncode == 0, "scan reads a deflated data.pkl: %d %s" % (r.returncode, r.out))
# entries that overlap, duplicate names
with zipfile.ZipFile(p("dup.pt"), "w", zipfile.ZIP_STORED) as z:
    z.writestr("a/data.pkl", b"\x80\x02}q\x00.")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        z.writestr("a/data.pkl", b"\x80\x02}q\x00.")
r = run("convert", p("dup.pt"), p("dup.st"))
check(r.returncode == 1 and "duplicate" in r.err, "duplicate zip entry names: %s" % r.err.strip())

# ------------------------------------------------------------ broken files
src = open(p("zoo_p2_zip.pt"), "rb").read()
for cut in (1, 30, len(src) // 2, len(src) - 23, len(src) - 1):
    fn = p("trunc_%d.pt" % cut)
    with open(fn, "wb") as f:
        f.write(src[:cut])
    r = run("convert", fn, fn + ".st")
    # under 4 bytes nothing says "zip": convert reads it as a (bad) safetensors
    # file; either way the file is invalid (1)
    check(r.returncode == 1, "truncated zip at %d: convert exit %d (%s)" % (cut, r.returncode, r.err))
    check(not os.path.exists(fn + ".st"), "truncated zip at %d: no output" % cut)
    r = run("scan", fn)
    check(r.returncode == 1, "truncated zip at %d: scan exit %d" % (cut, r.returncode))
src = open(p("zoo_p2_legacy.pt"), "rb").read()
for cut in (5, 100, len(src) // 2, len(src) - 1):
    fn = p("ltrunc_%d.pt" % cut)
    with open(fn, "wb") as f:
        f.write(src[:cut])
    r = run("convert", fn, fn + ".st")
    check(r.returncode == 1, "truncated legacy at %d: convert exit %d (%s)" % (cut, r.returncode, r.err))
    check(not os.path.exists(fn + ".st"), "truncated legacy at %d: no output" % cut)
# a corrupted byte inside data.pkl: CRC mismatch
b = bytearray(open(p("zoo_p2_zip.pt"), "rb").read())
i = b.find(b"data.pkl") + 8 + 30
b[i] ^= 0xff
with open(p("crc.pt"), "wb") as f:
    f.write(bytes(b))
r = run("convert", p("crc.pt"), p("crc.st"))
check(r.returncode == 1 and ("zip" in r.err or "pickle" in r.err), "corrupted data.pkl: %s" % r.err.strip())
with open(p("text.txt"), "w") as f:
    f.write("hello, this is not a checkpoint\n" * 10)
r = run("scan", p("text.txt"))
check(r.returncode == 1, "scan of a text file: exit %d" % r.returncode)
r = run("convert", p("text.txt"), p("text.st"))
check(r.returncode != 0 and not os.path.exists(p("text.st")), "convert of a text file fails, no output")
with zipfile.ZipFile(p("plain.zip"), "w") as z:
    z.writestr("docs/readme.txt", "no pickle here")
r = run("convert", p("plain.zip"), p("plain.st"))
check(r.returncode == 1 and "ckpt_format" in r.err, "zip without data.pkl: %s" % r.err.strip())
check(not os.path.exists(MARKER), "marker file never appeared")

# ------------------------------------------------------------ mutations
# Random byte changes in small checkpoints (zip and legacy) and a malicious
# one: every run ends with a verdict (exit 0/1/2), never a crash or a
# sanitizer report, and never runs the payload.
import random  # noqa: E402
rng = random.Random(4)
seeds = [open(p(x), "rb").read() for x in ("zoo_p2_zip.pt", "zoo_p4_legacy.pt", "evil_os_system_legacy.pt",
                                             "craft_ok.pt")]
crashes = 0
for it in range(60 if SAN else 150):
    b = bytearray(seeds[it % len(seeds)])
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(b))
        b[i] = rng.choice((0, 0xff, 0x80, rng.randrange(256), b[i] ^ (1 << rng.randrange(8))))
    fn = p("mut.pt")
    with open(fn, "wb") as f:
        f.write(bytes(b))
    for args in (("convert", fn, p("mut.st")), ("scan", fn)):
        r = run(*args, timeout=30)
        bad = r.returncode not in (0, 1, 2) or "Sanitizer" in r.err or "runtime error" in r.err
        if bad:
            crashes += 1
            print("mutation %d %s: exit %d %s" % (it, args[0], r.returncode, r.err[-300:]), file=sys.stderr)
    if os.path.exists(p("mut.st")):
        os.unlink(p("mut.st"))
check(crashes == 0, "mutated checkpoints: %d crashes" % crashes)
check(not os.path.exists(MARKER), "marker file never appeared (mutations)")

# ------------------------------------------------------------ library (ctypes)
if not SAN:
    lib = ctypes.CDLL(os.path.join(BUILD, "libsafetensors.so"))

    class Err(ctypes.Structure):
        _fields_ = [("code", ctypes.c_int), ("offset", ctypes.c_uint64), ("message", ctypes.c_char * 512)]

    class T(ctypes.Structure):
        _fields_ = [("name", ctypes.c_char_p), ("name_len", ctypes.c_size_t), ("dtype", ctypes.c_int),
                    ("rank", ctypes.c_uint32), ("shape", ctypes.POINTER(ctypes.c_uint64)),
                    ("strides", ctypes.POINTER(ctypes.c_uint64)), ("storage_offset", ctypes.c_uint64),
                    ("nelements", ctypes.c_uint64), ("nbytes", ctypes.c_uint64),
                    ("storage_key", ctypes.c_char_p), ("contiguous", ctypes.c_int)]

    lib.st_ckpt_tensor_at.restype = ctypes.POINTER(T)
    lib.st_ckpt_tensor_count.restype = ctypes.c_size_t
    lib.st_ckpt_classify.restype = ctypes.c_int
    h = ctypes.c_void_p()
    e = Err()
    rc = lib.st_ckpt_open(p("zoo_p4_legacy.pt").encode(), 0, None, ctypes.byref(h), ctypes.byref(e))
    check(rc == 0, "st_ckpt_open: %d %s" % (rc, e.message))
    want = expected(torch.load(p("zoo_p4_legacy.pt")))
    n = lib.st_ckpt_tensor_count(h)
    check(n == len(want), "tensor count %d" % n)
    noncontig = 0
    for i in range(n):
        t = lib.st_ckpt_tensor_at(h, i).contents
        name = t.name.decode()
        full = tensor_bytes(want[name])
        check(t.nbytes == len(full), "%s nbytes" % name)
        noncontig += not t.contiguous
        # odd offsets and lengths, element boundaries crossed
        for off, ln in ((0, t.nbytes), (1, max(0, t.nbytes - 2)), (3, min(5, max(0, t.nbytes - 3)))):
            if off + ln > t.nbytes:
                continue
            buf = ctypes.create_string_buffer(max(ln, 1))
            rc = lib.st_ckpt_tensor_read(h, ctypes.byref(t), ctypes.c_uint64(off), buf, ctypes.c_size_t(ln),
                                         ctypes.byref(e))
            check(rc == 0 and buf.raw[:ln] == full[off:off + ln], "read %s [%d,+%d)" % (name, off, ln))
        buf = ctypes.create_string_buffer(8)
        rc = lib.st_ckpt_tensor_read(h, ctypes.byref(t), ctypes.c_uint64(t.nbytes), buf, ctypes.c_size_t(1),
                                     ctypes.byref(e))
        check(rc == 37, "read past the end of %s: range (%d)" % (name, rc))
    check(noncontig >= 5, "non-contiguous tensors exercised (%d)" % noncontig)
    lib.st_ckpt_close(h)
    for path, fmt in (("zoo_p2_zip.pt", 2), ("zoo_p2_legacy.pt", 3), ("evil_eval_p2.pkl", 4),
                      ("single.pt.safetensors", 1), ("text.txt", 0), ("evil_eval_p0.pkl", 4)):
        f = ctypes.c_int(-1)
        rc = lib.st_ckpt_detect(p(path).encode(), ctypes.byref(f), None)
        check(rc == 0 and f.value == fmt, "detect %s: %d, want %d" % (path, f.value, fmt))
    for mod, name, want_s in (("os", "system", 2), ("posix", "system", 2), ("builtins", "eval", 2),
                              ("__builtin__", "getattr", 2), ("subprocess", "Popen", 2), ("os.path", "join", 2),
                              ("torch._utils", "_rebuild_tensor_v2", 0), ("torch", "ComplexFloatStorage", 0),
                              ("collections", "OrderedDict", 0), ("builtins", "set", 0),
                              ("pytorch_lightning.callbacks", "ModelCheckpoint", 1), ("numpy", "ndarray", 0),
                              ("collections", "OrderedDict.__init__.__globals__", 2),
                              ("torch", "load", 2), ("runpy", "run_path", 2), ("webbrowser", "open", 2)):
        s = lib.st_ckpt_classify(mod.encode(), len(mod), name.encode(), len(name))
        check(s == want_s, "classify %s.%s = %d, want %d" % (mod, name, s, want_s))

shutil.rmtree(tmp, ignore_errors=True)
finish()

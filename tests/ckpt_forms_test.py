"""The checkpoint forms added in round 2: TorchScript archives (torch.jit.save),
tar checkpoints (torch < 0.4, built by hand from the format and loaded by
torch 1.13 for comparison), numpy arrays inside pickles. `scan` and `convert`
through the CLI, compared bit for bit with what torch/numpy load.
Env: ST_BIN ST_SAN (tests/run-suite.sh). Prints '# passed N failed M'."""
import collections
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile

ROOT = os.environ.get("ST_ROOT") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("ST_BIN") or os.path.join(ROOT, "build", "safetensors")
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
except Exception as e:
    print("cannot import torch/numpy (%s)" % e, file=sys.stderr)
    check(False, "torch importable")
    finish()

tmp = tempfile.mkdtemp(prefix="ckpt_forms.")
import atexit  # noqa: E402
atexit.register(shutil.rmtree, tmp, True)


def p(name):
    return os.path.join(tmp, name)


def run(*args):
    r = subprocess.run([BIN] + list(args), capture_output=True, timeout=120)
    r.out = r.stdout.decode("utf-8", "replace")
    r.err = r.stderr.decode("utf-8", "replace")
    if "Sanitizer" in r.err or "runtime error" in r.err:  # an exit 1 must be a verdict, not a report
        check(False, "%s: sanitizer report: %s" % (" ".join(args), r.err[-2000:]))
    return r


def read_st(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    meta = h.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in h.items()}, meta


DT = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
      torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
      torch.uint8: "U8", torch.bool: "BOOL"}


def tbytes(t):
    t = t.detach().contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def same_tensors(got, want, label):
    check(set(got) == set(want), "%s: names %s vs %s" % (label, sorted(got), sorted(want)))
    for k, t in want.items():
        if k in got:
            dt, shape, data = got[k]
            check(dt == DT[t.dtype] and shape == list(t.shape), "%s: %s dtype/shape %s %s" % (label, k, dt, shape))
            check(data == tbytes(t), "%s: %s bytes differ" % (label, k))


g = torch.Generator().manual_seed(3)

# ------------------------------------------------------------ TorchScript
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)
        self.register_buffer("buf", torch.arange(4.0))
        self.seq = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Linear(2, 2).half())
        self.k = 3

    def forward(self, x):
        # a comment naming torch.fake_in_comment(x)
        s = "torch.fake_in_string(x)"
        return torch.relu(self.fc(x)) + self.buf.sum() * self.k + len(s)


class Consts(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.lin(x) + torch.tensor([1.0, 2.0])


class Plain(torch.nn.Module):
    """A plain tensor attribute (not in state_dict()), a non-persistent
    buffer (in a scripted module's state_dict() all the same), two Linear
    of different shapes (TorchScript mangles the second class's name)."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(2, 2)
        self.b = torch.nn.Linear(2, 3)
        self.plain = torch.ones(2)
        self.register_buffer("nb", torch.zeros(1), persistent=False)
        self.lst = torch.nn.ModuleList([torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3)])

    def forward(self, x):
        y = self.b(self.a(x)) + self.plain.sum() + self.nb
        for m in self.lst:
            y = m(y)
        return y


torch.manual_seed(0)
ts_files = {}
pl = torch.jit.script(Plain())
torch.jit.save(pl, p("plain.pt"))
ts_files["plain.pt"] = pl
net = torch.jit.script(Net())
torch.jit.save(net, p("script.pt"))
ts_files["script.pt"] = net
tr = torch.jit.trace(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)),
                     torch.randn(2, 4))
torch.jit.save(tr, p("trace.pt"), _extra_files={"notes.txt": "hello", "meta.pkl": pickle.dumps({"a": 1})})
ts_files["trace.pt"] = tr
import warnings  # noqa: E402
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    cst = torch.jit.trace(Consts(), torch.randn(1, 2))
torch.jit.save(cst, p("consts.pt"))
ts_files["consts.pt"] = cst
# library modules: nested ModuleLists, typed lists of tensors (LSTM's
# _flat_weights, not in state_dict()), BatchNorm's counters, float64
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    more = {"transformer.pt": torch.jit.script(torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(16, 2, 32), 2)),
            "lstm.pt": torch.jit.script(torch.nn.LSTM(4, 8, 2)),
            "bn.pt": torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                                          torch.nn.Embedding(10, 3).to(torch.float64)))}
for name, mod in more.items():
    torch.jit.save(mod, p(name))
    ts_files[name] = mod

for name, mod in ts_files.items():
    fn = p(name)
    r = run("scan", fn)
    check(r.returncode == 1, "scan %s: exit %d (want 1: code-bearing) %s" % (name, r.returncode, r.err))
    check("torchscript" in r.out and "DANGEROUS: TorchScript" in r.out, "scan %s says TorchScript: %s" % (name, r.out))
    with zipfile.ZipFile(fn) as z:
        code = [n for n in z.namelist() if "/code/" in n and n.endswith(".py")]
    for c in code:
        check("code      " + c in r.out, "scan %s lists %s" % (name, c))
    r = run("scan", "--json", fn)
    try:
        f0 = json.loads(r.out)["files"][0]
        check(f0["status"] == "dangerous" and f0["format"] == "torchscript", "%s json status %s" % (name, f0["status"]))
        check(sorted(x["path"] for x in f0["code"]) == sorted(code), "%s json code files" % name)
        ops = {x["name"] for x in f0["ops"]}
        if name == "script.pt":
            check({"torch.relu", "torch.sum", "torch.conv2d"} <= ops, "script ops: %s" % sorted(ops))
            check(not any("fake_in" in o for o in ops), "comments and strings are not calls: %s" % sorted(ops))
        if name == "trace.pt":
            check("torch.tanh" in ops or "torch.linear" in ops, "trace ops: %s" % sorted(ops))
    except Exception as e:
        check(False, "scan --json %s: %s %r" % (name, e, r.out[:300]))
    out = fn + ".st"
    r = run("convert", fn, out)
    check(r.returncode == 1 and "refusing" in r.err and not os.path.exists(out),
          "convert %s refused: %d %s" % (name, r.returncode, r.err))
    r = run("convert", "--allow-unsafe-globals", fn, out)
    check(r.returncode == 0, "convert --allow-unsafe-globals %s: %d %s" % (name, r.returncode, r.err))
    if r.returncode == 0:
        got, meta = read_st(out)
        want = dict(torch.jit.load(fn).state_dict())
        if name == "consts.pt":
            c0 = {k: v for k, v in got.items() if k.startswith("CONSTANTS.")}
            check(len(c0) == 1 and list(c0.values())[0][2] == struct.pack("<2f", 1, 2),
                  "consts: CONSTANTS.c0 holds the traced constant: %s" % list(c0))
            got = {k: v for k, v in got.items() if not k.startswith("CONSTANTS.")}
        same_tensors(got, want, name)
# info says what the file holds
r = run("info", "--json", p("script.pt"))
try:
    j = json.loads(r.out)
    check(r.returncode == 0 and j["format"] == "torchscript" and j["code_files"] >= 3 and j["verdict"] == "dangerous",
          "info --json of TorchScript: %s" % r.out)
except Exception as e:
    check(False, "info --json of TorchScript: %s %r" % (e, r.out[:200]))
r = run("info", p("script.pt"))
check(r.returncode == 0 and "TorchScript file" in r.out, "info text names the code: %s" % r.out)
# a hostile extra pickle inside a TorchScript archive is named
with zipfile.ZipFile(p("script.pt")) as zin, zipfile.ZipFile(p("evil_ts.pt"), "w") as zout:
    for nm in zin.namelist():
        zout.writestr(nm, zin.read(nm))
    zout.writestr("script/extra/x.pkl", b"cos\nsystem\n(S'true'\ntR.")
r = run("scan", p("evil_ts.pt"))
check(r.returncode == 1 and "os.system" in r.out and "extra/x.pkl" in r.out, "evil extra in TorchScript: %s" % r.out)

# ------------------------------------------------------------ numpy arrays
rs = np.random.RandomState(5)
arrays = collections.OrderedDict([
    ("f32", rs.randn(2, 3).astype(np.float32)),
    ("fortran", np.asfortranarray(rs.randn(3, 4))),
    ("be_i32", np.arange(5, dtype=">i4")),
    ("be_f64", np.array([1.5, -2.25], dtype=">f8")),
    ("u16", np.arange(6, dtype=np.uint16).reshape(3, 2)),
    ("bool", np.array([True, False, True])),
    ("f16", rs.randn(4).astype(np.float16)),
    ("scalar0d", np.array(7, dtype=np.int64)),
    ("empty", np.zeros((0, 3), dtype=np.float32)),
])
objs = {"obj": np.array([1, "x", None], dtype=object), "strs": np.array(["ab", "c"])}
NPDT = {"float32": "F32", "float64": "F64", "int32": "I32", "uint16": "U16", "bool": "BOOL", "float16": "F16",
        "int64": "I64"}


def np_check(path, label, nested):
    r = run("scan", path)
    check(r.returncode == 0, "%s: scan exit %d %s" % (label, r.returncode, r.out + r.err))
    check(r.out.count("numpy     ndarray") == len(arrays) + len(objs), "%s: scan lists every array: %s" % (label, r.out))
    check("<f4 [2, 3]" in r.out and "(Fortran order)" in r.out and ">i4 [5]" in r.out and "|O8" in r.out,
          "%s: scan shows dtype, shape, order: %s" % (label, r.out))
    check("not a tensor: an object array" in r.out, "%s: object array reported: %s" % (label, r.out))
    r = run("info", "--json", path)
    try:
        check(json.loads(r.out)["numpy_arrays"] == len(arrays) + len(objs), "%s: info counts arrays" % label)
    except Exception as e:
        check(False, "%s: info --json: %s" % (label, e))
    out = path + ".st"
    r = run("convert", path, out)
    check(r.returncode == 0, "%s: convert %d %s" % (label, r.returncode, r.err))
    check("'%sobj' (|O8) left out" % nested in r.err, "%s: object array warned: %s" % (label, r.err))
    if r.returncode:
        return
    got, _ = read_st(out)
    for k, a in arrays.items():
        name = nested + k
        want = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"))
        check(name in got, "%s: %s imported" % (label, name))
        if name in got:
            dt, shape, data = got[name]
            check(dt == NPDT[a.dtype.name] and shape == list(a.shape), "%s: %s %s %s" % (label, name, dt, shape))
            check(data == want.tobytes(), "%s: %s bytes (C order, little-endian)" % (label, name))
    check(nested + "obj" not in got and nested + "strs" not in got, "%s: non-tensor arrays left out" % label)


for proto in (2, 4):
    for zipfmt in (True, False):
        fn = p("np_p%d_%s.pt" % (proto, "zip" if zipfmt else "legacy"))
        torch.save(dict({"w": torch.ones(2)}, extra=dict(arrays, **objs)), fn,
                   pickle_protocol=proto, _use_new_zipfile_serialization=zipfmt)
        np_check(fn, os.path.basename(fn), "extra.")
        back = torch.load(fn)
        check(np.array_equal(back["extra"]["fortran"], arrays["fortran"]), "torch.load agrees (sanity)")
# a bare pickle (pickle.dumps) holding numpy arrays: scan reports them
with open(p("np_raw.pkl"), "wb") as f:
    pickle.dump(dict(arrays, **objs), f, protocol=2)
r = run("scan", p("np_raw.pkl"))
check(r.returncode == 0 and r.out.count("numpy     ndarray") == len(arrays) + len(objs), "raw pickle arrays: %s" % r.out)
# truncated array data: a verdict, exit 1
bad = pickle.dumps({"a": np.arange(4, dtype=np.int32)}, protocol=4)
i = bad.find(struct.pack("<i", 0) + struct.pack("<i", 1))
check(i > 0, "found the array bytes")
zb = io.BytesIO()
with zipfile.ZipFile(zb, "w", zipfile.ZIP_STORED) as z:
    z.writestr("a/data.pkl", bad[:i - 1] + bytes([bad[i - 1] - 4]) + bad[i:i + 12] + bad[i + 16:])
open(p("np_bad.pt"), "wb").write(zb.getvalue())
r = run("convert", p("np_bad.pt"), p("np_bad.st"))
check(r.returncode == 1 and "pickle" in r.err and not os.path.exists(p("np_bad.st")),
      "array with too few bytes: %d %s" % (r.returncode, r.err))

# ------------------------------------------------------------ tar checkpoints
def tar_ckpt(path, storages, views, tensors, obj, extra=None, corrupt=None):
    """storages: [(key, cls, raw bytes)], views: [(target, root, off, numel)],
    tensors: [(key, storage_key, ndim sizes, strides, offset)], obj refers to
    tensors through TKey(key)."""
    class TKey:
        def __init__(self, k):
            self.k = k

    def pid(o):
        return str(o.k) if isinstance(o, TKey) else None

    s = io.BytesIO()
    pickle.dump(len(storages), s, protocol=2)
    for key, cls, raw in storages:
        pickle.dump((key, "cpu", cls), s, protocol=2)
        s.write(struct.pack("<q", len(raw) // cls().element_size()))
        s.write(raw)
    pickle.dump(views, s, protocol=2)
    t = io.BytesIO()
    pickle.dump(len(tensors), t, protocol=2)
    for key, sk, sizes, strides, off in tensors:
        pickle.dump((key, sk, torch.FloatTensor), t, protocol=2)
        t.write(struct.pack("<ii", len(sizes), 0) + struct.pack("<%dq" % len(sizes), *sizes) +
                struct.pack("<%dq" % len(strides), *strides) + struct.pack("<q", off))
    m = io.BytesIO()
    pk = pickle.Pickler(m, protocol=2)
    pk.persistent_id = pid
    pk.dump(obj(TKey))
    members = [("sys_info", pickle.dumps({"protocol_version": 1001, "little_endian": True,
                                          "type_sizes": {"short": 2, "int": 4, "long": 8}}, protocol=2)),
               ("pickle", m.getvalue()), ("tensors", t.getvalue()), ("storages", s.getvalue())]
    if extra:
        members.append(extra)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    if corrupt:
        b = bytearray(open(path, "rb").read())
        corrupt(b)
        open(path, "wb").write(bytes(b))
    return path


f32 = struct.pack("<12f", *[float(i) * 1.5 - 3 for i in range(12)])
i64 = struct.pack("<3q", 7, -8, 1 << 40)
good_storages = [(1, torch.FloatStorage, f32), (2, torch.LongStorage, i64)]
good_tensors = [(10, 1, [3, 4], [4, 1], 0), (11, 1, [4, 3], [1, 4], 0), (12, 1, [2], [5], 1), (13, 2, [3], [1], 0),
                (14, 3, [2, 2], [2, 1], 0)]
good_views = [(3, 1, 4, 4)]


def good_obj(T):
    return {"state_dict": collections.OrderedDict([("w", T(10)), ("wt", T(11)), ("step", T(12)), ("ids", T(13)),
                                                   ("view", T(14))]), "epoch": 3}


fn = tar_ckpt(p("old.pt"), good_storages, good_views, good_tensors, good_obj)
check(tarfile.is_tarfile(fn), "built a tar")
want = torch.load(fn)["state_dict"]
r = run("scan", fn)
check(r.returncode == 0 and "tar-pickle" in r.out, "scan tar: %d %s %s" % (r.returncode, r.out, r.err))
r = run("convert", fn, fn + ".st")
check(r.returncode == 0, "convert tar: %d %s" % (r.returncode, r.err))
if r.returncode == 0:
    got, meta = read_st(fn + ".st")
    same_tensors(got, dict(want), "tar")
    check(meta.get("epoch") == "3", "tar: metadata %s" % meta)
    # the converted tensors load back equal to torch.load's
    check(all(torch.equal(torch.frombuffer(bytearray(got[k][2]), dtype=v.dtype).reshape(v.shape), v.contiguous())
              for k, v in want.items() if v.numel()), "tar: values equal torch.load's")

tar_bad = {
    "checksum": dict(corrupt=lambda b: b.__setitem__(0, ord("x"))),
    "member": dict(extra=("surprise", b"hello")),
    "past_storage": dict(tensors=[(10, 1, [13], [1], 0)]),
    "truncated_storage": dict(storages=[(1, torch.FloatStorage, f32[:-4] + b"")], tensors=[(10, 1, [2], [1], 0)],
                              views=[]),
    "missing_storage": dict(tensors=[(10, 9, [1], [1], 0)]),
    "bad_view": dict(views=[(3, 1, 10, 4)]),
    "trailing": dict(corrupt=lambda b: b.extend(b"\x01" * 10)),
}
for name, kw in tar_bad.items():
    st = kw.get("storages", good_storages)
    tn = kw.get("tensors", [good_tensors[0]])
    obj = (lambda T: {"w": T(10)}) if "tensors" in kw or name != "bad_view" else good_obj
    if name == "bad_view":
        tn = good_tensors
    fn = tar_ckpt(p("tar_%s.pt" % name), st, kw.get("views", good_views), tn, obj, extra=kw.get("extra"),
                  corrupt=kw.get("corrupt"))
    if name == "truncated_storage":  # claim more elements than the bytes that follow
        b = bytearray(open(fn, "rb").read())
        at = b.find(struct.pack("<q", 11))
        b[at:at + 8] = struct.pack("<q", 1000)
        open(fn, "wb").write(bytes(b))
    r = run("convert", fn, fn + ".st")
    check(r.returncode == 1 and not os.path.exists(fn + ".st"),
          "tar %s: convert exit %d (want 1) %s" % (name, r.returncode, r.err.strip()))
    # scan judges the container and the pickles (tensor geometry is convert's)
    r = run("scan", fn)
    want_scan = 1 if name in ("checksum", "member", "truncated_storage", "trailing") else 0
    check(r.returncode == want_scan, "tar %s: scan exit %d (want %d)" % (name, r.returncode, want_scan))

# ------------------------------------------------------------ mutations
# Random byte changes in the new forms: every run ends with a verdict or an
# error (exit 0, 1 or 2), never a crash or a sanitizer report.
import random  # noqa: E402
rng = random.Random(15)
SAN = os.environ.get("ST_SAN") == "1"
seeds = [open(p(x), "rb").read() for x in ("script.pt", "old.pt", "np_p2_legacy.pt", "np_p4_zip.pt")]
bad_runs = 0
for it in range(40 if SAN else 120):
    b = bytearray(seeds[it % len(seeds)])
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(b))
        b[i] = rng.choice((0, 0xff, 0x80, rng.randrange(256), b[i] ^ (1 << rng.randrange(8))))
    with open(p("mut.pt"), "wb") as f:
        f.write(bytes(b))
    for args in (("convert", "--allow-unsafe-globals", p("mut.pt"), p("mut.st")), ("scan", p("mut.pt"))):
        r = run(*args)
        if r.returncode not in (0, 1, 2):
            bad_runs += 1
            print("mutation %d %s: exit %d %s" % (it, args[0], r.returncode, r.err[-300:]), file=sys.stderr)
    if os.path.exists(p("mut.st")):
        os.unlink(p("mut.st"))
check(bad_runs == 0, "mutated TorchScript, tar and numpy checkpoints: %d crashes" % bad_runs)

# ------------------------------------------------------------ exit codes
# 1 a verdict on a file (any format), 2 usage or I/O; the worst file wins
missing = p("does-not-exist.pt")
r = run("scan", missing)
check(r.returncode == 2, "scan of a missing file: exit %d" % r.returncode)
r = run("scan", p("evil_ts.pt"), missing)
check(r.returncode == 2 and "os.system" in r.out, "dangerous + missing: I/O error wins (%d)" % r.returncode)
r = run("scan", p("evil_ts.pt"), p("tar_checksum.pt"))
check(r.returncode == 1, "dangerous + invalid: exit %d" % r.returncode)
r = run("convert", missing, p("x.st"))
check(r.returncode == 2, "convert of a missing file: exit %d" % r.returncode)
r = run("ls", p("tar_checksum.pt"))
check(r.returncode == 1 and "ckpt_format" in r.err, "ls of an invalid checkpoint: exit %d %s" % (r.returncode, r.err))
r = run("info", p("np_bad.pt"))
check(r.returncode == 1 and "pickle" in r.err, "info of an invalid checkpoint: exit %d %s" % (r.returncode, r.err))
r = run("scan")
check(r.returncode == 2, "scan without FILE: usage error (%d)" % r.returncode)

finish()

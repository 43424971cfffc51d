"""safetensors_c's own tests: conformance corpus, canonical bytes,
zero-copy rules, bad input from Python, slicing, tools."""
import hashlib
import os
import random
import struct
import threading
import zlib

import numpy as np
import pytest
import torch

import safetensors_c
from safetensors_c import SafetensorError, safe_open
from safetensors_c import numpy as stnp
from safetensors_c import torch as stpt

CORPUS = os.environ.get("ST_CONFORMANCE") or os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "shared", "conformance")

VARIANT_CODES = {
    "HeaderTooSmall": {"header_too_small"},
    "HeaderTooLarge": {"header_too_large"},
    "InvalidHeaderLength": {"header_length"},
    "InvalidHeader": {"header_utf8"},
    "InvalidHeaderDeserialization": {"header_json", "header_schema", "duplicate_key"},
    "InvalidOffset": {"offsets"},
    "ValidationOverflow": {"overflow"},
    "MisalignedSlice": {"misaligned"},
    "TensorInvalidInfo": {"size_mismatch"},
    "MetadataIncompleteBuffer": {"incomplete"},
}


def _rows(name):
    with open(os.path.join(CORPUS, name), encoding="utf-8") as f:
        lines = f.read().splitlines()
    head = lines[0].split("\t")
    return [dict(zip(head, line.split("\t"))) for line in lines[1:] if line]


def _fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def _file(tmp_path, header, data=b"", pad=True):
    raw = header.encode() if isinstance(header, str) else header
    if pad:
        raw += b" " * (-len(raw) % 8)
    p = tmp_path / "f.safetensors"
    p.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return str(p)


# ---- conformance corpus ----------------------------------------------------

def test_corpus_verdicts():
    rows = _rows("expected.tsv")
    assert len(rows) > 50
    for row in rows:
        path = os.path.join(CORPUS, "files", row["case"] + ".safetensors")
        verdict = safetensors_c.check(path)
        if row["reference"] == "OK" and verdict["error"] == "duplicate_key":
            continue  # the one documented way the project is stricter
        if row["reference"] == "OK":
            assert verdict["valid"], (row, verdict)
            assert verdict["tensors"] == int(row["tensors"])
            for fw in ("np", "pt"):
                with safe_open(path, framework=fw) as f:
                    assert len(f.keys()) == int(row["tensors"])
        else:
            assert not verdict["valid"], row
            codes = VARIANT_CODES[row["reference"]]
            # The project is stricter in one documented way: duplicate keys.
            assert verdict["error"] in codes or verdict["error"] == "duplicate_key", (row, verdict)
            for backend in ("mmap", "pread"):
                with pytest.raises(SafetensorError) as e:
                    safe_open(path, framework="np", backend=backend)
                assert e.value.code_name == verdict["error"]
                assert path in str(e.value)


def test_corpus_tensor_bytes():
    rows = _rows("expected-tensors.tsv")
    assert rows
    import json
    cache = {}
    done = skipped = 0
    for row in rows:
        case = row["case"]
        if case not in cache:
            path = os.path.join(CORPUS, "files", case + ".safetensors")
            if not safetensors_c.check(path)["valid"]:
                assert safetensors_c.check(path)["error"] == "duplicate_key"
                cache[case] = None
            else:
                with open(path, "rb") as fh:
                    cache[case] = dict(safetensors_c.deserialize(fh.read()))
        items = cache[case]
        if items is None:
            skipped += 1
            continue
        item = items[json.loads(row["name_json"])]
        assert item["dtype"] == row["dtype"]
        assert item["shape"] == json.loads(row["shape_json"])
        data = item["data"]
        if len(data) > 4096:  # pure-Python FNV is slow; the C tests cover it all
            continue
        assert _fnv1a64(data) == row["fnv1a64"]
        done += 1
    assert done > len(rows) // 2 and skipped <= 4


def _canonical_cases():
    folder = os.path.join(CORPUS, "canonical")
    return sorted(os.path.join(folder, f) for f in os.listdir(folder))


def test_canonical_bytes_numpy_and_torch():
    """Loading a canonical file and saving it again gives the same bytes."""
    compared = {"np": 0, "pt": 0}
    for path in _canonical_cases():
        with open(path, "rb") as fh:
            expected = fh.read()
        for fw, mod in (("np", stnp), ("pt", stpt)):
            try:
                with safe_open(path, framework=fw) as f:
                    meta = f.metadata()
                    tensors = {k: f.get_tensor(k) for k in f.keys()}
            except SafetensorError as e:
                assert "no numpy equivalent" in str(e) or "not supported by torch" in str(e)
                continue
            if fw == "np":
                tensors = {k: v.copy() for k, v in tensors.items()}
            assert mod.save(tensors, metadata=meta) == expected, (path, fw)
            compared[fw] += 1
    assert compared["np"] >= 10 and compared["pt"] >= 10, compared


def test_save_matches_torch_values(tmp_path):
    torch.manual_seed(0)
    t = {
        "w": torch.randn(7, 5), "h": torch.randn(3, 2).half(), "b": torch.randn(4).bfloat16(),
        "d": torch.randn(2, 2, dtype=torch.float64), "i": torch.arange(-5, 5, dtype=torch.int64),
        "q": torch.tensor([True, False, True]), "c": torch.randn(3, dtype=torch.complex64),
        "u": torch.arange(0, 255, 7, dtype=torch.uint8), "s": torch.tensor(3.5),
    }
    p = str(tmp_path / "t.safetensors")
    stpt.save_file(t, p, metadata={"k": "v"})
    assert stpt.save(t, metadata={"k": "v"}) == open(p, "rb").read()
    for backend in ("mmap", "pread"):
        back = stpt.load_file(p, backend=backend)
        assert set(back) == set(t)
        for k in t:
            assert back[k].dtype == t[k].dtype and torch.equal(back[k], t[k]), k
    back = stpt.load(open(p, "rb").read())
    assert all(torch.equal(back[k], t[k]) for k in t)


# ---- zero-copy and ownership ----------------------------------------------

def test_numpy_views_are_read_only_and_outlive_close(tmp_path):
    p = str(tmp_path / "a.safetensors")
    stnp.save_file({"a": np.arange(1000, dtype=np.float32)}, p)
    with safe_open(p, framework="np") as f:
        a = f.get_tensor("a")
        b = f.get_tensor("a")
    assert not a.flags.writeable
    assert np.shares_memory(a, b)  # a view, not a copy
    with pytest.raises(ValueError):
        a[0] = 1
    del f
    assert a.sum() == sum(range(1000))  # the mapping lives with the array


def test_numpy_load_file_writable_private(tmp_path):
    p = str(tmp_path / "a.safetensors")
    stnp.save_file({"a": np.zeros(64, dtype=np.int32), "b": np.ones(8, dtype=np.int64)}, p)
    before = open(p, "rb").read()
    d = stnp.load_file(p)
    assert d["a"].flags.writeable
    d["a"][:] = 7
    d["b"] += 1
    assert open(p, "rb").read() == before
    again = stnp.load_file(p)
    assert not again["a"].any() and (again["b"] == 1).all()


def test_torch_tensors_writable_private(tmp_path):
    p = str(tmp_path / "a.safetensors")
    stpt.save_file({"a": torch.zeros(256)}, p)
    before = open(p, "rb").read()
    with safe_open(p, framework="pt") as f:
        x = f.get_tensor("a")
        y = f.get_tensor("a")
    assert x.data_ptr() == y.data_ptr()  # zero-copy, as the reference
    x += 1
    assert open(p, "rb").read() == before
    z = stpt.load_file(p)["a"]
    assert not z.any()
    z.add_(2)
    assert open(p, "rb").read() == before


def test_load_bytes_owns_copies():
    data = bytearray(stnp.save({"a": np.arange(4, dtype=np.int16)}))
    arrs = stnp.load(data)
    data[-8:] = b"\xff" * 8
    assert arrs["a"].tolist() == [0, 1, 2, 3]
    assert arrs["a"].flags.writeable
    t = stpt.load(bytes(stnp.save({"a": np.arange(4, dtype=np.int16)})))
    t["a"] += 1
    assert t["a"].tolist() == [1, 2, 3, 4]


def test_misaligned_tensor_is_copied(tmp_path):
    header = ('{"u":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
              '"f":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}}')
    p = _file(tmp_path, header, b"\x05" + struct.pack("<2f", 1.5, -2.0))
    for fw in ("np", "pt"):
        with safe_open(p, framework=fw) as f:
            v = f.get_tensor("f")
            assert [float(x) for x in v] == [1.5, -2.0]
            assert int(f.get_tensor("u")[0]) == 5


def test_load_file_misaligned_and_empty(tmp_path):
    header = ('{"u":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
              '"f":{"dtype":"F32","shape":[2],"data_offsets":[1,9]},'
              '"e":{"dtype":"F64","shape":[0,3],"data_offsets":[9,9]}}')
    p = _file(tmp_path, header, b"\x05" + struct.pack("<2f", 1.5, -2.0))
    for backend in ("mmap", "pread"):
        t = stpt.load_file(p, backend=backend)
        assert t["f"].tolist() == [1.5, -2.0] and t["u"].tolist() == [5]
        assert t["e"].shape == (0, 3) and t["e"].dtype == torch.float64
        t["f"] += 1  # its own copy, writable
        a = stnp.load_file(p, backend=backend)
        assert a["f"].tolist() == [1.5, -2.0] and a["u"].tolist() == [5]
        assert a["e"].shape == (0, 3) and a["f"].flags.writeable


# ---- load_file: one read into memory of its own ----------------------------

def test_load_file_owns_its_memory(tmp_path):
    """With the pread backend, load_file's tensors do not depend on the
    file: rewriting it in place, then truncating it (which would be SIGBUS
    under a mapping), changes nothing, and writes to the tensors reach
    neither the file nor other loads."""
    p = str(tmp_path / "a.safetensors")
    src = {"a": torch.arange(5000, dtype=torch.float32), "b": torch.arange(7, dtype=torch.int16)}
    stpt.save_file(src, p)
    size = os.path.getsize(p)
    for _ in range(2):
        t = stpt.load_file(p, backend="pread")
        n = stnp.load_file(p, backend="pread")
        t["a"][0] = -1
        n["b"][0] = -1
        with open(p, "r+b") as f:  # the same size, other bytes, in place
            f.seek(size - 64)
            f.write(b"\xff" * 64)
        os.truncate(p, 0)
        assert t["a"][1:].tolist() == list(range(1, 5000)) and t["a"][0] == -1
        assert t["b"].tolist() == list(range(7))
        assert n["a"].tolist() == list(range(5000)) and n["b"][1:].tolist() == list(range(1, 7))
        assert not np.shares_memory(n["a"], n["b"])
        stpt.save_file(src, p)


def test_load_file_large_in_parallel(tmp_path):
    """Past 64 MiB the data section is read (pread backend) or first touched
    (mmap) by several threads, each its own run of the buffer: tensors
    across those runs' seams come out whole."""
    p = str(tmp_path / "big.safetensors")
    g = torch.Generator().manual_seed(5)
    src = {}
    for i, n in enumerate((3, 9_000_001, 5, 11_000_003, 2_000_000, 1)):
        src[f"t{i}"] = torch.randint(-2**31, 2**31 - 1, (n,), generator=g, dtype=torch.int32)
    src["h"] = torch.randn(4_000_001, generator=g).to(torch.float16)
    stpt.save_file(src, p)
    assert os.path.getsize(p) > 64 << 20
    for backend in ("mmap", "pread"):
        t = stpt.load_file(p, backend=backend)
        a = stnp.load_file(p, backend=backend)
        for k, v in src.items():
            assert torch.equal(t[k], v), k
            assert np.array_equal(a[k], v.numpy()), k
        del t, a


def test_read_data_of_a_file_that_shrank(tmp_path):
    from safetensors_c import _safetensors_c as _c
    p = str(tmp_path / "a.safetensors")
    stnp.save_file({"a": np.arange(4096, dtype=np.int64)}, p)
    h = _c.open_file(p, True)
    data = h.read_data()
    assert len(data) == 4096 * 8 and not data.readonly
    assert np.frombuffer(data, dtype=np.int64).tolist() == list(range(4096))
    os.truncate(p, os.path.getsize(p) - 100)
    with pytest.raises(SafetensorError) as e:
        h.read_data()
    assert e.value.code_name in ("io", "range") and p in str(e.value)


# ---- errors from Python -----------------------------------------------------

def test_closed_file(tmp_path):
    p = str(tmp_path / "a.safetensors")
    stnp.save_file({"a": np.zeros(2)}, p)
    with safe_open(p, framework="np") as f:
        s = f.get_slice("a")
    for call in (f.keys, f.metadata, f.offset_keys, f.get_tensors,
                 lambda: f.get_tensor("a"), lambda: f.get_slice("a"), lambda: s[:1]):
        with pytest.raises(SafetensorError, match="File is closed"):
            call()


def test_missing_tensor(tmp_path):
    p = str(tmp_path / "a.safetensors")
    stnp.save_file({"a": np.zeros(2)}, p)
    with safe_open(p, framework="pt") as f:
        with pytest.raises(SafetensorError, match="File does not contain tensor b"):
            f.get_tensor("b")
        with pytest.raises(SafetensorError, match="File does not contain tensor b"):
            f.get_slice("b")
        with pytest.raises(TypeError):
            f.get_tensor(3)
        with pytest.raises(SafetensorError):
            f.get_tensor("\udcff")  # not encodable: cannot be a name


def test_wrong_arguments(tmp_path):
    p = str(tmp_path / "a.safetensors")
    stnp.save_file({"a": np.zeros(2)}, p)
    with pytest.raises(TypeError):
        safe_open(12.5, framework="np")
    with pytest.raises(SafetensorError, match="framework nope is invalid"):
        safe_open(p, framework="nope")
    with pytest.raises(SafetensorError, match="not supported by safetensors_c"):
        safe_open(p, framework="tf")
    with pytest.raises(SafetensorError, match='backend "x" is invalid'):
        safe_open(p, framework="np", backend="x")
    with pytest.raises(SafetensorError, match="Device cuda is not supported for framework numpy"):
        safe_open(p, framework="np", device="cuda")
    with pytest.raises(SafetensorError, match="device"):
        safe_open(p, framework="pt", device="nodevice")
    with pytest.raises(FileNotFoundError, match="No such file or directory"):
        safe_open(str(tmp_path / "missing"), framework="np")
    with pytest.raises(OSError):
        safe_open(str(tmp_path), framework="np")  # a folder
    with pytest.raises(TypeError):
        stnp.save_file("notadict", p)
    with pytest.raises(TypeError):
        stnp.save({1: np.zeros(1)})
    with pytest.raises(ValueError):
        stnp.save({"a": [1, 2]})
    with pytest.raises(TypeError):
        stnp.save({"a": np.zeros(1)}, metadata={"k": 1})
    with pytest.raises(TypeError):
        stnp.save({"a": np.zeros(1)}, metadata=["k"])
    with pytest.raises(SafetensorError, match="Unknown dtype"):
        stnp.save({"a": np.zeros(1, dtype=np.complex128)})
    with pytest.raises(SafetensorError):
        stnp.save({"__metadata__": np.zeros(1)})
    with pytest.raises(ValueError, match="non contiguous"):
        stnp.save({"a": np.zeros((4, 4))[:, 1]})
    with pytest.raises(ValueError, match="non contiguous"):
        stpt.save({"a": torch.zeros(4, 4).t()})
    with pytest.raises(SafetensorError, match="cannot be stored"):
        stpt.save({"a": torch.zeros(2, dtype=torch.complex128)})
    with pytest.raises(TypeError):
        safetensors_c.serialize({"a": {"dtype": "float32"}})
    with pytest.raises(SafetensorError, match="Unknown dtype"):
        safetensors_c.TensorSpec(dtype="nonsense", shape=[1], data_ptr=0, data_len=0)
    with pytest.raises(SafetensorError):  # data_len disagrees with the shape
        safetensors_c.serialize({"a": safetensors_c.TensorSpec(
            dtype="float32", shape=[4], data_ptr=0, data_len=0)})


def test_failed_save_leaves_nothing(tmp_path):
    p = tmp_path / "out.safetensors"
    p.write_bytes(b"old")
    with pytest.raises(SafetensorError):
        stnp.save_file({"a": np.zeros(1), "__metadata__": np.zeros(1)}, str(p))
    assert p.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.safetensors"]


def test_dtypes_without_a_framework_type(tmp_path):
    bf = os.path.join(CORPUS, "files", "valid_dtype_BF16.safetensors")
    with safe_open(bf, framework="np") as f:
        with pytest.raises(SafetensorError, match="no numpy equivalent"):
            f.get_tensor(f.keys()[0])
    with safe_open(bf, framework="pt") as f:
        assert f.get_tensor(f.keys()[0]).dtype == torch.bfloat16
    for dt in ("F8_E4M3", "F8_E5M2", "F4", "U16"):
        path = os.path.join(CORPUS, "files", f"valid_dtype_{dt}.safetensors")
        if not os.path.exists(path):
            continue
        with safe_open(path, framework="pt") as f:
            name = f.keys()[0]
            if hasattr(torch, "float8_e4m3fn") and dt.startswith("F8"):
                f.get_tensor(name)
                continue
            with pytest.raises(SafetensorError, match=f"dtype {dt} is not supported by torch"):
                f.get_tensor(name)
            assert f.get_slice(name).get_dtype() == dt


def test_hostile_mutations(tmp_path):
    """Random damage to a valid file: a clean exception or valid tensors."""
    good = stnp.save({"a": np.arange(12, dtype=np.float32).reshape(3, 4),
                      "b": np.arange(6, dtype=np.int16)}, metadata={"m": "x"})
    rng = random.Random(1234)
    p = tmp_path / "h.safetensors"
    outcomes = {"ok": 0, "error": 0}
    for i in range(300):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(data))
            data[pos] = rng.randrange(256)
        if i % 7 == 0:
            data = data[: rng.randrange(len(data))]
        p.write_bytes(bytes(data))
        try:
            with safe_open(str(p), framework="np", backend=rng.choice(["mmap", "pread"])) as f:
                for k in f.keys():
                    try:
                        f.get_tensor(k)
                        f.get_slice(k)[:1]
                    except SafetensorError:
                        pass  # dtypes without a numpy type
            outcomes["ok"] += 1
        except SafetensorError as e:
            assert e.code_name != "unknown"
            outcomes["error"] += 1
        try:
            stpt.load(bytes(data))
        except SafetensorError:
            pass
    assert outcomes["error"] > 100


def test_hostile_headers(tmp_path):
    cases = [
        b"",
        b"\x00" * 7,
        struct.pack("<Q", 2 ** 63) + b"{}",
        struct.pack("<Q", 100_000_001) + b"{}",
        struct.pack("<Q", 2) + b"{",
        struct.pack("<Q", 8) + b'{"a":1} ',
        struct.pack("<Q", 64) + b'{"a":{"dtype":"F32","shape":[18446744073709551615,2],"data_offsets":[0,0]}}',
    ]
    for i, raw in enumerate(cases):
        p = tmp_path / f"{i}.safetensors"
        p.write_bytes(raw)
        with pytest.raises(SafetensorError):
            safe_open(str(p), framework="pt")
        with pytest.raises(SafetensorError):
            stnp.load(raw)
        assert not safetensors_c.check(str(p))["valid"]


# ---- slicing -----------------------------------------------------------------

def test_slices_match_numpy(tmp_path):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((6, 5, 4)).astype(np.float32)
    p = str(tmp_path / "s.safetensors")
    stnp.save_file({"a": a}, p)
    prng = random.Random(7)

    def rand_index(dim):
        r = prng.random()
        if r < 0.3:
            return prng.randrange(-dim, dim)
        start = prng.choice([None, prng.randrange(dim)])
        stop = prng.choice([None, prng.randrange(start or 0, dim + 1)])
        step = prng.choice([None, 1, 2, 3])
        return slice(start, stop, step)

    handles = [safe_open(p, framework="np"), safe_open(p, framework="np", backend="pread"),
               safe_open(p, framework="pt"), safe_open(p, framework="pt", backend="pread")]
    for _ in range(300):
        n = prng.randint(1, 3)
        idx = tuple(rand_index(d) for d in a.shape[:n])
        want = a[idx]
        for f in handles:
            got = f.get_slice("a")[idx]
            got = got.numpy() if isinstance(got, torch.Tensor) else got
            assert got.shape == want.shape, (idx, got.shape, want.shape)
            assert np.array_equal(got, want), idx


def test_slice_errors_as_reference(tmp_path):
    p = str(tmp_path / "s.safetensors")
    stnp.save_file({"a": np.zeros((10, 5))}, p)
    with safe_open(p, framework="np") as f:
        s = f.get_slice("a")
        assert s.get_shape() == [10, 5] and s.get_dtype() == "F64"
        with pytest.raises(SafetensorError, match=r"^Error during slicing \[2:, 20\] with shape "
                           r"\[10, 5\]: index 20 out of bounds for tensor dimension #1 of size 5$"):
            s[2:, 20]
        with pytest.raises(SafetensorError, match="Invalid index -6 for dimension 1 of size 5"):
            s[2:, -6]
        # The reference's shape arithmetic underflows here; the library says why.
        with pytest.raises(SafetensorError, match="start 4 is after stop 3"):
            s[4:3]
        with pytest.raises(SafetensorError, match="more slicing indexes"):
            s[1, 1, 1]
        with pytest.raises(TypeError):
            s[None]
        with pytest.raises(TypeError):
            s[...]
        with pytest.raises(OverflowError):
            s[-3:]
        assert s[[]].shape == (0, 5)
        assert s[()].shape == (10, 5)
        assert s[3:3].shape == (0, 5)


# ---- threads ---------------------------------------------------------------

def test_threads_share_one_file(tmp_path):
    p = str(tmp_path / "t.safetensors")
    arrays = {f"t{i}": np.full((64, 64), i, dtype=np.float32) for i in range(16)}
    stnp.save_file(arrays, p)
    errors = []
    with safe_open(p, framework="pt") as f:
        def work(seed):
            rng = random.Random(seed)
            try:
                for _ in range(200):
                    k = f"t{rng.randrange(16)}"
                    t = f.get_tensor(k) if rng.random() < 0.5 else f.get_slice(k)[1:3]
                    assert float(t.flatten()[0]) == float(k[1:])
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors


# ---- tools -------------------------------------------------------------------

def test_check_and_hash(tmp_path):
    p = str(tmp_path / "h.safetensors")
    stnp.save_file({"a": np.arange(100_000, dtype=np.float32)}, p)
    c = safetensors_c.check(p)
    assert c["valid"] and c["tensors"] == 1 and c["file_size"] == os.path.getsize(p)
    data = open(p, "rb").read()
    h = safetensors_c.hash(p, "all")
    assert h["sha256"] == hashlib.sha256(data).hexdigest()
    assert h["autov2"] == hashlib.sha256(data).hexdigest()[:10]
    n = struct.unpack("<Q", data[:8])[0]
    assert h["autov3"] == hashlib.sha256(data[8 + n:]).hexdigest()
    assert h["crc32"] == f"{zlib.crc32(data):08x}"
    assert set(h) == {"sha256", "autov1", "autov2", "autov3", "crc32", "blake3"}
    with pytest.raises(ValueError):
        safetensors_c.hash(p, ["md5"])
    with pytest.raises(SafetensorError):
        safetensors_c.hash(str(tmp_path / "missing"))
    with pytest.raises(SafetensorError):
        safetensors_c.check(str(tmp_path / "missing"))


def test_identify(tmp_path):
    p = str(tmp_path / "lora.safetensors")
    t = {}
    for i in range(2):
        base = f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q{i}"
        t[base + ".lora_down.weight"] = torch.zeros(4, 320)
        t[base + ".lora_up.weight"] = torch.zeros(320, 4)
        t[base + ".alpha"] = torch.tensor(4.0)
    stpt.save_file(t, p)
    r = safetensors_c.identify(p)
    assert r["kind"] == "lora" and r["format"] == "kohya"
    assert r["parameters"]["total"] == sum(v.numel() for v in t.values())
    assert isinstance(r["reasons"], list) and r["reasons"]


def test_convert(tmp_path):
    src, dst = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
    torch.manual_seed(1)
    t = {"w": torch.randn(300, 7), "i": torch.arange(10), "d": torch.randn(5, dtype=torch.float64)}
    stpt.save_file(t, src, metadata={"k": "v"})
    r = safetensors_c.convert(src, dst, "F16")
    assert (r["converted"], r["copied"], r["written"], r["metadata"]) == (2, 1, 3, 1)
    assert r["from"] == {"F32": 1, "F64": 1} and r["output_size"] == os.path.getsize(dst)
    with safe_open(dst, framework="pt") as f:
        assert f.metadata() == {"k": "v"}
        assert torch.equal(f.get_tensor("w"), t["w"].half())
        assert torch.equal(f.get_tensor("d"), t["d"].half())
        assert torch.equal(f.get_tensor("i"), t["i"])
    r = safetensors_c.convert(src, dst, "BF16")
    with safe_open(dst, framework="pt") as f:
        assert torch.equal(f.get_tensor("w"), t["w"].bfloat16())
    with pytest.raises(ValueError):
        safetensors_c.convert(src, dst, "I32")
    with pytest.raises(SafetensorError):
        safetensors_c.convert(src, src, "F16")


def _sd_like(tmp_path):
    torch.manual_seed(2)
    t = {
        "model.diffusion_model.in.0.weight": torch.randn(8, 4),
        "model.diffusion_model.out.bias": torch.randn(4),
        "model_ema.diffusion_modelin0weight": torch.randn(8, 4),
        "model_ema.diffusion_modeloutbias": torch.randn(4),
        "model_ema.decay": torch.tensor(0.999),
        "model_ema.num_updates": torch.tensor(7, dtype=torch.int32),
        "cond_stage_model.proj": torch.randn(3, 3),
        "first_stage_model.conv": torch.randn(2, 2),
        "steps": torch.arange(3),
    }
    src = str(tmp_path / "sd.safetensors")
    stpt.save_file(t, src, metadata={"m": "1"})
    return t, src


def test_convert_selects_like_the_cli(tmp_path):
    t, src = _sd_like(tmp_path)
    dst = str(tmp_path / "out.safetensors")
    r = safetensors_c.convert(src, dst, "F16", only="cond_stage_model.*")
    o = stpt.load_file(dst)
    assert r["converted"] == 1 and o["cond_stage_model.proj"].dtype == torch.float16
    assert torch.equal(o["first_stage_model.conv"], t["first_stage_model.conv"])
    r = safetensors_c.convert(src, dst, "BF16", exclude=["model*", "cond_*"])
    o = stpt.load_file(dst)
    assert r["converted"] == 1 and o["first_stage_model.conv"].dtype == torch.bfloat16
    assert o["model.diffusion_model.out.bias"].dtype == torch.float32
    assert o["cond_stage_model.proj"].dtype == torch.float32
    # drop without a dtype: the rest byte for byte, metadata kept
    r = safetensors_c.convert(src, dst, None, drop=("first_stage_model.*", "step?"))
    assert r["dropped"] == 2 and r["converted"] == 0 and r["written"] == len(t) - 2
    with safe_open(dst, framework="pt") as f:
        assert f.metadata() == {"m": "1"}
        assert set(f.keys()) == set(t) - {"first_stage_model.conv", "steps"}
        assert all(torch.equal(f.get_tensor(k), t[k]) for k in f.keys())


def test_convert_ema(tmp_path):
    t, src = _sd_like(tmp_path)
    dst = str(tmp_path / "out.safetensors")
    r = safetensors_c.convert(src, dst, None, ema="drop")
    o = stpt.load_file(dst)
    assert r["ema_dropped"] == 4 and not [k for k in o if k.startswith("model_ema.")]
    assert torch.equal(o["model.diffusion_model.in.0.weight"], t["model.diffusion_model.in.0.weight"])
    r = safetensors_c.convert(src, dst, "F16", ema="only")
    o = stpt.load_file(dst)
    assert r["ema_used"] == 2 and not [k for k in o if k.startswith("model_ema.")]
    assert torch.equal(o["model.diffusion_model.in.0.weight"],
                       t["model_ema.diffusion_modelin0weight"].half())
    assert torch.equal(o["model.diffusion_model.out.bias"],
                       t["model_ema.diffusion_modeloutbias"].half())
    plain = str(tmp_path / "plain.safetensors")
    stpt.save_file({"model.diffusion_model.w": torch.zeros(2)}, plain)
    with pytest.raises(SafetensorError):  # no EMA to use
        safetensors_c.convert(plain, dst, None, ema="only")


def test_convert_progress_and_stopping(tmp_path):
    t, src = _sd_like(tmp_path)
    dst = str(tmp_path / "out.safetensors")
    calls = []
    safetensors_c.convert(src, dst, "F16", progress=lambda d, n: calls.append((d, n)))
    size = os.path.getsize(dst)
    assert calls and calls[-1] == (size, size)
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))
    os.remove(dst)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(SafetensorError) as e:
        safetensors_c.convert(src, dst, "F16", progress=lambda d, n: True)
    assert e.value.code_name == "callback"

    class Stop(Exception):
        pass

    def boom(done, total):
        raise Stop(done)
    with pytest.raises(Stop):
        safetensors_c.convert(src, dst, "F16", progress=boom)
    assert sorted(os.listdir(tmp_path)) == before  # no output, no temporary file


def test_convert_bad_options(tmp_path):
    t, src = _sd_like(tmp_path)
    dst = str(tmp_path / "out.safetensors")
    with pytest.raises(ValueError, match="ema"):
        safetensors_c.convert(src, dst, ema="some")
    with pytest.raises(TypeError):
        safetensors_c.convert(src, dst, only=[1])
    with pytest.raises(TypeError):
        safetensors_c.convert(src, dst, drop=b"x")
    with pytest.raises(ValueError):
        safetensors_c.convert(src, dst, only="a\0b")
    with pytest.raises(ValueError, match="give a dtype"):
        safetensors_c.convert(src, dst, None, exclude="x")
    with pytest.raises(TypeError, match="callable"):
        safetensors_c.convert(src, dst, progress=5)
    with pytest.raises(TypeError):
        safetensors_c._safetensors_c.convert(src, dst, "F16", False, ["a"])
    with pytest.raises(ValueError):
        safetensors_c._safetensors_c.convert(src, dst, "F16", False, None, None, None, 7)
    assert not os.path.exists(dst)


def test_merge(tmp_path):
    a, b, c = (str(tmp_path / n) for n in ("a.safetensors", "b.safetensors", "c.safetensors"))
    out = str(tmp_path / "m.safetensors")
    torch.manual_seed(2)
    ta = {"model.w": torch.randn(64, 3), "model.h": torch.randn(8).half(), "other": torch.ones(2)}
    tb = {"model.w": torch.randn(64, 3), "model.h": torch.randn(8).half(), "other": torch.zeros(2)}
    tc = {"model.w": torch.randn(64, 3)}
    stpt.save_file(ta, a)
    stpt.save_file(tb, b)
    stpt.save_file(tc, c)
    r = safetensors_c.merge([a, b], out, 0.25)
    assert r["merged"] == 2 and r["written"] == 3 and r["output_size"] == os.path.getsize(out)
    o = stpt.load_file(out)
    assert torch.equal(o["model.w"], 0.75 * ta["model.w"] + 0.25 * tb["model.w"])
    assert o["model.h"].dtype == torch.float16
    assert torch.equal(o["other"], ta["other"]), "no 'model' in the name: A's"
    with safe_open(out, framework="pt") as f:
        assert "sd_merge_recipe" in f.metadata()
    r = safetensors_c.merge([a, b, c], out, 1.0, mode="add-diff", dtype="F32")
    o = stpt.load_file(out)
    assert torch.equal(o["model.w"], ta["model.w"] + (tb["model.w"] - tc["model.w"]))
    assert o["model.h"].dtype == torch.float32
    stpt.save_file({"model.w": torch.randn(3, 64)}, c)
    with pytest.raises(SafetensorError):
        safetensors_c.merge([a, c], out, 0.5)
    with pytest.raises(ValueError):
        safetensors_c.merge([a, b], out, 0.5, mode="average")
    with pytest.raises(SafetensorError):
        safetensors_c.merge([a, b], a, 0.5)

"""safe_open: lazy, validated access to a safetensors file.

Bytes come from libsafetensors (the _safetensors_c extension); this module
only turns them into numpy arrays or torch tensors, without copies where that
is safe: an array over the file's mapping is read-only (numpy) or lives in
private copy-on-write pages (torch, and numpy's load_file), so nothing a
caller does reaches the file.
"""
import math
import operator
import os

from . import _safetensors_c as _c
from ._safetensors_c import SafetensorError

_FRAMEWORKS = {
    "pt": "pt", "torch": "pt", "pytorch": "pt",
    "np": "np", "numpy": "np",
}
_OTHER_FRAMEWORKS = ("tf", "tensorflow", "jax", "flax", "mlx", "paddle")

# How get_tensor hands out bytes.
VIEW_RO = 0   # zero-copy, read-only (numpy from safe_open)
VIEW_RW = 1   # zero-copy over private pages (torch; numpy's load_file)
COPY = 2      # a fresh array that owns its bytes


def _fspath(filename):
    path = os.fspath(filename)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return path


def _parse_framework(framework):
    if not isinstance(framework, str):
        raise SafetensorError(f"framework {framework!r} is invalid")
    fw = _FRAMEWORKS.get(framework)
    if fw is None:
        if framework in _OTHER_FRAMEWORKS:
            raise SafetensorError(
                f"framework {framework} is not supported by safetensors_c "
                "(use pt/torch/pytorch or np/numpy)")
        raise SafetensorError(f"framework {framework} is invalid")
    return fw


def _parse_device(device, framework):
    if device is None:
        device = "cpu"
    if framework == "np":
        if device != "cpu":
            raise SafetensorError(f"Device {device} is not supported for framework numpy")
        return "cpu"
    import torch
    if isinstance(device, bool):
        raise SafetensorError(f"device {device!r} is invalid")
    if isinstance(device, (str, int, torch.device)):
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError, TypeError):
            raise SafetensorError(f"device {device} is invalid") from None
        return "cpu" if dev.type == "cpu" else dev
    raise SafetensorError(f"device {device!r} is invalid")


# ---- dtypes --------------------------------------------------------------

_NP_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16",
    "I64": "int64", "U64": "uint64", "I32": "int32", "U32": "uint32",
    "I16": "int16", "U16": "uint16", "I8": "int8", "U8": "uint8",
    "BOOL": "bool", "C64": "complex64",
}

_TORCH_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
    "BOOL": "bool", "C64": "complex64",
    # present from torch 2.1 / 2.3 / 2.8 on; looked up by name when asked
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F8_E8M0": "float8_e8m0fnu",
    "U16": "uint16", "U32": "uint32", "U64": "uint64",
}


def np_dtype(st_dtype):
    import numpy as np
    name = _NP_NAMES.get(st_dtype)
    if name is None:
        raise SafetensorError(
            f"dtype {st_dtype} has no numpy equivalent (numpy {np.__version__}); "
            "open the file with framework=\"pt\" or convert it first")
    return np.dtype(name)


def torch_dtype(st_dtype):
    import torch
    name = _TORCH_NAMES.get(st_dtype)
    dt = getattr(torch, name, None) if name else None
    if not isinstance(dt, torch.dtype):
        raise SafetensorError(
            f"dtype {st_dtype} is not supported by torch {torch.__version__}")
    return dt


def torch_numpy_view(t):
    """A numpy array sharing t's bytes (t contiguous, on the CPU)."""
    import torch
    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    elif t.dtype not in (torch.float64, torch.float32, torch.float16, torch.int64,
                         torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
                         torch.complex64):
        t = t.view(torch.uint8)
    return t.numpy()


def _itemsize(st_dtype):
    return {"F64": 8, "I64": 8, "U64": 8, "C64": 8, "F32": 4, "I32": 4, "U32": 4,
            "F16": 2, "BF16": 2, "I16": 2, "U16": 2}.get(st_dtype, 1)


_BIG = 1 << 20


def _fresh(nbytes):
    """Writable memory for a copy: big ones in a mapping of their own."""
    return _c.alloc(nbytes) if nbytes >= _BIG else bytearray(nbytes)


def make_tensor(handle, name, framework, device, mode):
    """name's tensor from an open _Handle, as framework wants it."""
    dtype, shape, nbytes, _ = handle.info(name)
    count = math.prod(shape)
    if framework == "np":
        import numpy as np
        npdt = np_dtype(dtype)
        if count == 0:
            return np.zeros(shape, dtype=npdt)
        view = handle.view(name, mode == VIEW_RW) if mode != COPY else None
        if view is not None and view.address % npdt.itemsize == 0:
            return np.frombuffer(view, dtype=npdt).reshape(shape)
        buf = _fresh(nbytes)
        handle.read_into(name, buf)
        return np.frombuffer(buf, dtype=npdt).reshape(shape)
    import torch
    tdt = torch_dtype(dtype)
    if count == 0:
        t = torch.zeros(shape, dtype=tdt)
    else:
        view = handle.view(name, True) if mode != COPY else None
        if view is not None and not view.readonly and view.address % _itemsize(dtype) == 0:
            t = torch.frombuffer(view, dtype=tdt).reshape(shape)
        else:
            buf = _fresh(nbytes)
            handle.read_into(name, buf)
            t = torch.frombuffer(buf, dtype=tdt).reshape(shape)
    if device != "cpu":
        t = t.to(device)
    return t


def _copy_out(data, begin, nbytes):
    buf = _fresh(nbytes)
    memoryview(buf)[:] = memoryview(data)[begin:begin + nbytes]
    return buf


def load_all(filename, framework, device, backend):
    """load_file: {name: tensor} of every tensor, in file order, writable.

    mmap backend (the default): views of private copy-on-write pages of the
    file's mapping, as the reference's, every page mapped and first read
    by several threads before returning. Measured the fastest way to a
    first use of every tensor (1.5-2.3x cat on ext4, whose large folios
    map 2 MiB at a time), and memory stays shared with the page cache.
    pread backend: the data section read at once, in parallel, into one
    buffer of its own on transparent huge pages, tensors views of it: the
    memory is the caller's, unaffected by anything done to the file. Up to
    cat's speed when the process reuses memory it freed, but fresh memory
    is dear (first call in a new process several times slower)."""
    fw = _parse_framework(framework)
    dev = _parse_device(device, fw)
    if backend not in ("mmap", "pread"):
        raise SafetensorError(
            f'backend "{backend}" is invalid (expected one of: "mmap", "pread")')
    if backend == "mmap":
        with safe_open(filename, framework=fw, device=device, _populate=2) as f:
            f._mode = VIEW_RW
            return f.get_tensors()
    if fw == "pt":
        import torch  # noqa: F401
    else:
        import numpy  # noqa: F401
    handle = _c.open_file(_fspath(filename), True)
    data = handle.read_data()
    # Per tensor this is the whole cost in Python (a few us): dtypes are
    # looked up once per file, not once per tensor.
    if fw == "np":
        import numpy as np
        kinds = {}
        def kind(st):
            k = kinds.get(st)
            if k is None:
                dt = np_dtype(st)
                k = kinds[st] = (dt, dt.itemsize, np.frombuffer, np.zeros)
            return k
    else:
        import torch
        kinds = {}
        def kind(st):
            k = kinds.get(st)
            if k is None:
                k = kinds[st] = (torch_dtype(st), _itemsize(st), torch.frombuffer, torch.zeros)
            return k
    out = {}
    for name, dtype, shape, nbytes, begin in handle.tensors():
        dt, itemsize, frombuffer, zeros = kind(dtype)
        count = math.prod(shape)
        if count == 0:
            t = zeros(shape, dtype=dt)
        elif begin % itemsize:
            t = frombuffer(_copy_out(data, begin, nbytes), dtype=dt, count=count).reshape(shape)
        else:
            t = frombuffer(data, dtype=dt, count=count, offset=begin).reshape(shape)
        out[name] = t if dev == "cpu" else t.to(dev)
    return out


# ---- slicing, with the reference's rules -----------------------------------

def _as_index(obj):
    """An int for an index, a slice for a slice; else TypeError."""
    if isinstance(obj, slice):
        return obj
    if isinstance(obj, bool):
        raise TypeError(f"cannot index a tensor slice with {type(obj).__name__}")
    try:
        i = operator.index(obj)
    except TypeError:
        raise TypeError(
            f"cannot index a tensor slice with {type(obj).__name__} "
            "(use ints, slices, a tuple of them, or [])") from None
    if not -(2 ** 31) <= i < 2 ** 31:
        raise OverflowError(f"index {i} does not fit in 32 bits")
    return i


def _bound(v, what):
    if v is None:
        return None
    v = operator.index(v)
    if v < 0:
        raise OverflowError(f"slice {what} {v}: can't convert negative int to unsigned")
    return v


def parse_slices(slices, shape):
    """[(kind, start, stop)] for the library, the reference's text for
    errors, and the steps to apply afterwards: (dims, display, steps)."""
    if isinstance(slices, list):
        if slices:
            raise SafetensorError("Non empty lists are not implemented")
        items = [slice(0, 0)]
    elif isinstance(slices, tuple):
        items = [_as_index(s) for s in slices]
    else:
        items = [_as_index(slices)]
    if len(items) > len(shape):
        raise SafetensorError(
            f"Error during slicing with shape {list(shape)}: "
            "more slicing indexes than dimensions in tensor")
    parsed = []
    for i, (item, dim) in enumerate(zip(items, shape)):
        if isinstance(item, slice):
            start, stop = _bound(item.start, "start"), _bound(item.stop, "stop")
            step = 1 if item.step is None else operator.index(item.step)
            if step <= 0:
                raise ValueError("slice step must be positive")
            parsed.append(("narrow", start, stop, step))
        else:
            if item < 0:
                if item + dim < 0:
                    raise SafetensorError(
                        f"Invalid index {item} for dimension {i} of size {dim}")
                item += dim
            parsed.append(("select", item, None, 1))

    def show(p):
        if p[0] == "select":
            return str(p[1])
        return f"{'' if p[1] is None else p[1]}:{'' if p[2] is None else p[2]}"
    display = "[" + ", ".join(show(p) for p in parsed) + "]"

    # The reference walks the dimensions from the last: the first offending
    # one from the end is the one named.
    for i in reversed(range(len(parsed))):
        kind, a, b, _ = parsed[i]
        dim = shape[i]
        if kind == "select":
            start, stop = a, a + 1
        else:
            start, stop = (a or 0), (dim if b is None else b)
        if start >= dim or stop > dim:
            asked = start if start >= dim else max(stop - 1, 0)
            raise SafetensorError(
                f"Error during slicing {display} with shape {list(shape)}: index {asked} "
                f"out of bounds for tensor dimension #{i} of size {dim}")
    dims, steps, axis = [], [], 0
    for i, (kind, a, b, step) in enumerate(parsed):
        if kind == "select":
            dims.append((2, a, a + 1))
            continue
        if a is None and b is None:
            dims.append((0, 0, 0))
        else:
            dims.append((1, a or 0, shape[i] if b is None else b))
        steps.append((axis, step))
        axis += 1
    return dims, display, [(ax, st) for ax, st in steps if st != 1]


class _SafeSlice:
    """What get_slice returns: index it to read part of a tensor."""

    def __init__(self, owner, name):
        self._owner = owner
        self._name = name
        self._dtype, self._shape, _, _ = owner._inner().info(name)

    def get_shape(self):
        return list(self._shape)

    def get_dtype(self):
        return self._dtype

    def __getitem__(self, slices):
        owner = self._owner
        handle = owner._inner()
        if owner._framework == "pt" and not owner._pread:
            # As the reference: torch's own indexing on a view of the bytes.
            full = make_tensor(handle, self._name, "pt", "cpu", VIEW_RW)
            out = full[slices]
            return out if owner._device == "cpu" else out.to(owner._device)
        dims, display, steps = parse_slices(slices, self._shape)
        try:
            _, shape = handle.slice_info(self._name, dims)
        except SafetensorError as e:
            raise SafetensorError(
                f"Error during slicing {display} with shape {list(self._shape)}: {e}") from None
        if owner._framework == "np":
            import numpy as np
            out = np.empty(shape, dtype=np_dtype(self._dtype))
            handle.slice_into(self._name, dims, out)
            for axis, step in steps:
                out = out[(slice(None),) * axis + (slice(None, None, step),)]
            return np.ascontiguousarray(out) if steps else out
        import torch
        out = torch.empty(shape, dtype=torch_dtype(self._dtype))
        handle.slice_into(self._name, dims, torch_numpy_view(out))
        for axis, step in steps:
            out = out[(slice(None),) * axis + (slice(None, None, step),)]
        out = out.contiguous()
        return out if owner._device == "cpu" else out.to(owner._device)


class safe_open:
    """Opens a safetensors file lazily and returns tensors as asked.

    safe_open(filename, framework, device="cpu", *, backend="mmap")
    framework: "pt"/"torch"/"pytorch" or "np"/"numpy". backend: "mmap"
    (zero-copy) or "pread" (every tensor read into its own buffer).
    """

    def __init__(self, filename, framework, device="cpu", *, backend="mmap", _populate=False):
        self._handle = None
        self._framework = _parse_framework(framework)
        self._device = _parse_device(device, self._framework)
        if backend not in ("mmap", "pread"):
            raise SafetensorError(
                f'backend "{backend}" is invalid (expected one of: "mmap", "pread")')
        self._pread = backend == "pread"
        if self._framework == "pt":
            import torch  # noqa: F401  (fail here, as the reference does)
        else:
            import numpy  # noqa: F401
        self._handle = _c.open_file(_fspath(filename), self._pread, _populate)
        self._mode = VIEW_RW if self._framework == "pt" else VIEW_RO

    def _inner(self):
        if self._handle is None:
            raise SafetensorError("File is closed")
        return self._handle

    def metadata(self):
        return self._inner().metadata()

    def keys(self):
        return self._inner().keys()

    def offset_keys(self):
        return self._inner().offset_keys()

    def get_tensor(self, name):
        return make_tensor(self._inner(), name, self._framework, self._device, self._mode)

    def get_tensors(self):
        h = self._inner()
        return {k: make_tensor(h, k, self._framework, self._device, self._mode)
                for k in h.offset_keys()}

    def get_slice(self, name):
        return _SafeSlice(self, name)

    def close(self):
        self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle = None


class _safe_open_handle(safe_open):
    """safe_open on an open file object (its .name is opened again)."""

    def __init__(self, f, framework, device="cpu", *, backend="mmap"):
        f.fileno()
        super().__init__(f.name, framework, device, backend=backend)


def open_bytes(data):
    """A _Handle over a bytes-like object (load / deserialize)."""
    return _c.open_memory(data)

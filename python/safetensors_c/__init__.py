"""safetensors_c: the safetensors Python API on libsafetensors.

    from safetensors_c import safe_open
    from safetensors_c.torch import load_file, save_file, load, save
    from safetensors_c.numpy import load_file, save_file, load, save

Same signatures, defaults and exceptions as the reference package
(huggingface/safetensors); SafetensorError also carries the library's
.code, .code_name and .offset. The tools (check, identify, hash, convert)
return plain dicts.
"""
import os as _os

from . import _safetensors_c as _c
from ._safetensors_c import SafetensorError
from ._open import _fspath, _safe_open_handle, open_bytes as _open_bytes, safe_open

__version__ = "0.1.0"
library_version = _c.library_version

__all__ = [
    "SafetensorError", "TensorSpec", "safe_open", "serialize", "serialize_file",
    "deserialize", "check", "identify", "hash", "convert", "merge", "__version__",
]

_TORCH_TO_ST = {
    "bool": "BOOL", "int8": "I8", "uint8": "U8", "int16": "I16", "uint16": "U16",
    "int32": "I32", "uint32": "U32", "int64": "I64", "uint64": "U64",
    "float16": "F16", "float32": "F32", "float64": "F64", "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3", "float8_e4m3fnuz": "F8_E4M3FNUZ",
    "float8_e5m2": "F8_E5M2", "float8_e5m2fnuz": "F8_E5M2FNUZ",
    "float8_e8m0fnu": "F8_E8M0", "float4_e2m1fn_x2": "F4", "complex64": "C64",
}


def _unknown_dtype(name):
    return SafetensorError(
        f'Unknown dtype "{name}". Supported dtypes: ' + ", ".join(_TORCH_TO_ST))


class TensorSpec:
    """One tensor for serialize / serialize_file, as raw memory.

    TensorSpec(*, dtype, shape, data_ptr, data_len): dtype in the
    frameworks' spelling ("float32", "bfloat16", ...). As in the reference,
    the caller keeps the memory at data_ptr alive and unchanged during the
    call; for F4 (two values per byte) the last dimension is doubled.
    """

    __slots__ = ("_dtype", "_shape", "_data_ptr", "_data_len")

    def __init__(self, *, dtype, shape, data_ptr, data_len):
        st = _TORCH_TO_ST.get(dtype)
        if st is None:
            raise _unknown_dtype(dtype)
        shape = [int(d) for d in shape]
        if any(d < 0 for d in shape):
            raise SafetensorError(f"negative dimension in shape {shape}")
        if st == "F4" and shape:
            shape[-1] *= 2
        self._dtype, self._shape = st, shape
        self._data_ptr, self._data_len = int(data_ptr), int(data_len)
        if self._data_ptr < 0 or self._data_len < 0:
            raise SafetensorError("data_ptr and data_len must not be negative")

    dtype = property(lambda self: self._dtype)
    shape = property(lambda self: list(self._shape))
    data_ptr = property(lambda self: self._data_ptr)
    data_len = property(lambda self: self._data_len)

    def __repr__(self):
        return (f"TensorSpec(dtype='{self._dtype}', shape={self._shape}, "
                f"data_ptr={self._data_ptr}, data_len={self._data_len})")


def _spec_items(tensor_dict):
    if not isinstance(tensor_dict, dict):
        raise TypeError(f"expected a dict of str to TensorSpec, not {type(tensor_dict).__name__}")
    items = []
    for k, v in tensor_dict.items():
        if not isinstance(k, str) or not isinstance(v, TensorSpec):
            raise TypeError(f"expected a dict of str to TensorSpec, got {k!r}: {type(v).__name__}")
        items.append((k, v.dtype, v.shape, (v.data_ptr, v.data_len)))
    return items


def serialize(tensor_dict, metadata=None):
    """Serializes {name: TensorSpec} to bytes (the canonical layout)."""
    return _c.write(_spec_items(tensor_dict), metadata, None)


def serialize_file(tensor_dict, filename, metadata=None):
    """Writes {name: TensorSpec} to filename, atomically."""
    _c.write(_spec_items(tensor_dict), metadata, _fspath(filename))


def deserialize(bytes):  # noqa: A002 (the reference's parameter name)
    """[(name, {"shape": [...], "dtype": "F32", "data": bytearray}), ...]"""
    h = _open_bytes(bytes)
    out = []
    for name in h.offset_keys():
        dtype, shape, nbytes, _ = h.info(name)
        data = bytearray(nbytes)
        if nbytes:
            h.read_into(name, data)
        out.append((name, {"shape": list(shape), "dtype": dtype, "data": data}))
    return out


# ---- tools ---------------------------------------------------------------

def check(path):
    """Validates a file as `safetensors check` does. Returns a dict:
    valid, error (code name or None), code, message, offset, tensors,
    header_size, file_size. An unreadable file raises SafetensorError."""
    result = _c.check(_fspath(path))
    result["file"] = _os.fspath(path)
    return result


def identify(path):
    """What a Stable Diffusion model file is: kind, family, variant, format,
    ema, precision, parameters, confidence, reasons."""
    result = _c.identify(_fspath(path))
    result["file"] = _os.fspath(path)
    return result


def hash(path, algos=("sha256",), style="plain"):  # noqa: A001
    """Digests of a file in one read: {"sha256": "...", "autov2": ...}.
    algos: names among sha256, autov1, autov2, autov3, crc32, blake3 (or
    "all"); style: "plain" (as A1111 shows them) or "civitai"."""
    if isinstance(algos, str):
        algos = [algos]
    algos = list(algos)
    if "all" in algos:
        algos = ["sha256", "autov1", "autov2", "autov3", "crc32", "blake3"]
    return _c.hash(_fspath(path), algos, style)


_EMA = {"keep": 0, "drop": 1, "only": 2}


def _globs(value, what):
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        value = (value,)
    out = tuple(value)
    for g in out:
        if not isinstance(g, str):
            raise TypeError(f"{what}: glob patterns are str, not {type(g).__name__}")
    return out


def convert(src, dst, dtype="F16", *, saturate=False, only=None, exclude=None, drop=None,
            ema="keep", progress=None):
    """Rewrites src as dst (canonical layout, atomic: nothing is left on
    failure), over the library's st_convert_file, as `safetensors convert`:

    dtype      floating tensors become this (F64, F32, F16, BF16, F8_*);
               None converts nothing (only drop/ema select)
    saturate   out-of-range values become the dtype's largest finite ones
    only       glob(s): convert only the names matching one of them
    exclude    glob(s): never convert these names
    drop       glob(s): leave these tensors out
    ema        "keep" every tensor, "drop" model_ema.* (a pruned
               checkpoint), or "only": each model.X weight replaced by its
               EMA twin, model_ema.* left out
    progress   callable(done, total) with bytes of dst written; returning a
               true value or raising stops the work (the exception is
               raised from convert; a true value raises SafetensorError
               with code_name "callback")

    Globs: `*` any run, `?` one byte, `[a-z]`, `[!x]`, `\\c`. Ctrl-C
    stops the work too. Returns the counts: written, converted, copied
    (written - converted), already, kept, dropped, ema_dropped, ema_used,
    metadata, input_size, output_size and from ({input dtype: converted})."""
    if _os.path.exists(dst) and _os.path.samefile(src, dst):
        raise SafetensorError(f"{dst}: refusing to overwrite the input")
    if ema not in _EMA:
        raise ValueError(f"ema must be 'keep', 'drop' or 'only', not {ema!r}")
    if dtype is None and (only is not None or exclude is not None or saturate):
        raise ValueError("only, exclude and saturate choose what dtype converts: give a dtype")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable, not {type(progress).__name__}")
    return _c.convert(_fspath(src), _fspath(dst), dtype, bool(saturate),
                      _globs(only, "only"), _globs(exclude, "exclude"), _globs(drop, "drop"),
                      _EMA[ema], progress)


def merge(inputs, output, alpha, mode="weighted", dtype=None, vae=None, discard=None):
    """A1111's checkpoint merger over st_merge: (1 - alpha) * A + alpha * B
    (mode "weighted", inputs [A, B]) or A + alpha * (B - C) ("add-diff",
    inputs [A, B, C]); tensors whose name holds "model" are merged, in
    float32, the rest are A's; dtype (e.g. "F16") converts the floating
    tensors; vae bakes a VAE in; discard is a POSIX regex of names to leave
    out. Streams, writes output atomically. Returns the counts as a dict."""
    return _c.merge([_fspath(p) for p in inputs], _fspath(output), float(alpha), mode,
                    dtype, None if vae is None else _fspath(vae), discard)

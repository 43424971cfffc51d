"""safetensors_c.numpy: save and load dicts of numpy arrays.

Drop-in for safetensors.numpy: load_file, save_file, load, save.
"""
import os
import sys
from typing import Dict, Optional, Union

import numpy as np

from . import _safetensors_c as _c
from ._open import COPY, _fspath, load_all, make_tensor, open_bytes, safe_open
from ._safetensors_c import SafetensorError

_ST_NAMES = {
    "float64": "F64", "float32": "F32", "float16": "F16",
    "int64": "I64", "uint64": "U64", "int32": "I32", "uint32": "U32",
    "int16": "I16", "uint16": "U16", "int8": "I8", "uint8": "U8",
    "bool": "BOOL", "complex64": "C64",
}


def _is_little_endian(arr: np.ndarray) -> bool:
    order = arr.dtype.byteorder
    if order == "=":
        return sys.byteorder == "little"
    if order in ("|", "<"):
        return True
    if order == ">":
        return False
    raise ValueError(f"Unexpected byte order {order}")


def _items(tensor_dict):
    if not isinstance(tensor_dict, dict):
        raise TypeError(f"Expected a dict of [str, np.ndarray] but received {type(tensor_dict)}")
    items = []
    for k, v in tensor_dict.items():
        if not isinstance(k, str):
            raise TypeError(f"tensor names must be str, not {type(k).__name__}")
        if not isinstance(v, np.ndarray):
            raise ValueError(f"Key `{k}` is invalid, expected np.ndarray but received {type(v)}")
        st = _ST_NAMES.get(v.dtype.name)
        if st is None:
            raise SafetensorError(
                f'Unknown dtype "{v.dtype.name}" (tensor `{k}`). Supported dtypes: '
                + ", ".join(_ST_NAMES))
        if not v.flags.c_contiguous:
            raise ValueError(
                f"You are trying to save a non contiguous tensor: `{k}` which is not allowed."
                " Call np.ascontiguousarray() on it first.")
        if not _is_little_endian(v):
            v = v.byteswap(inplace=False).view(v.dtype.newbyteorder("<"))
        items.append((k, st, list(v.shape), v))
    return items


def save(tensor_dict: Dict[str, np.ndarray], metadata: Optional[Dict[str, str]] = None) -> bytes:
    """The safetensors bytes of a dict of C-contiguous arrays."""
    return _c.write(_items(tensor_dict), metadata, None)


def save_file(
    tensor_dict: Dict[str, np.ndarray],
    filename: Union[str, os.PathLike],
    metadata: Optional[Dict[str, str]] = None,
) -> None:
    """Writes a dict of C-contiguous arrays to filename, atomically."""
    _c.write(_items(tensor_dict), metadata, _fspath(filename))


def load(data: bytes) -> Dict[str, np.ndarray]:
    """{name: array} from safetensors bytes; the arrays own copies."""
    h = open_bytes(data)
    return {k: make_tensor(h, k, "np", "cpu", COPY) for k in h.offset_keys()}


def load_file(filename: Union[str, os.PathLike], *, backend: str = "mmap") -> Dict[str, np.ndarray]:
    """{name: array} of a file: writable arrays over one buffer of their
    own, read from the file at once (see _open.load_all)."""
    return load_all(filename, "np", "cpu", backend)

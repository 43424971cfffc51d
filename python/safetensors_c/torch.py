"""safetensors_c.torch: save and load dicts of torch tensors.

Drop-in for safetensors.torch: load_file, save_file, load, save,
save_model, load_model, and the shared-tensor helpers with the same
rules and messages.
"""
import os
from collections import defaultdict
from typing import Dict, List, Optional, Set, Tuple, Union

import torch

from . import _safetensors_c as _c
from ._open import COPY, _fspath, load_all, make_tensor, open_bytes, safe_open, torch_numpy_view
from ._safetensors_c import SafetensorError

_ST_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
    torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32",
    torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
    torch.complex64: "C64",
}
for _attr, _st in (("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2"),
                   ("float8_e4m3fnuz", "F8_E4M3FNUZ"), ("float8_e5m2fnuz", "F8_E5M2FNUZ"),
                   ("float8_e8m0fnu", "F8_E8M0"), ("uint16", "U16"), ("uint32", "U32"),
                   ("uint64", "U64")):
    if isinstance(getattr(torch, _attr, None), torch.dtype):
        _ST_NAMES[getattr(torch, _attr)] = _st


def _elem_size(tensor):
    return tensor.element_size()


def storage_ptr(tensor: torch.Tensor) -> int:
    """Address of the tensor's storage; 0 when it has none (meta)."""
    try:
        return tensor.untyped_storage().data_ptr()
    except Exception:
        try:
            return tensor.storage().data_ptr()
        except NotImplementedError:
            return 0


def storage_size(tensor: torch.Tensor) -> int:
    """Bytes of the tensor's storage."""
    try:
        return tensor.untyped_storage().nbytes()
    except AttributeError:
        try:
            return tensor.storage().size() * _elem_size(tensor)
        except NotImplementedError:
            return tensor.nelement() * _elem_size(tensor)


def _end_ptr(tensor: torch.Tensor) -> int:
    """One past the last byte the tensor reaches."""
    if tensor.nelement() == 0:
        return tensor.data_ptr()
    return tensor.view(-1)[-1].data_ptr() + _elem_size(tensor)


def _filter_shared_not_shared(tensors: List[Set[str]], state_dict) -> List[Set[str]]:
    # Names on one storage share only if their byte ranges overlap: sort by
    # start, and start a new group whenever a range begins past the last end.
    out = []
    for names in tensors:
        if len(names) < 2:
            out.append(names)
            continue
        spans = sorted((state_dict[n].data_ptr(), _end_ptr(state_dict[n]), n) for n in names)
        _, last_end, first = spans[0]
        out.append({first})
        for start, end, name in spans[1:]:
            if start >= last_end:
                out.append({name})
            else:
                out[-1].add(name)
            last_end = end
    return out


def _find_shared_tensors(state_dict: Dict[str, torch.Tensor]) -> List[Set[str]]:
    """Groups of names whose tensors overlap in memory."""
    groups = defaultdict(set)
    for name, t in state_dict.items():
        if t.device == torch.device("meta"):
            continue
        ptr, size = storage_ptr(t), storage_size(t)
        if ptr != 0 and size != 0:
            groups[(t.device, ptr, size)].add(name)
    return _filter_shared_not_shared(list(sorted(groups.values())), state_dict)


def _is_complete(tensor: torch.Tensor) -> bool:
    """True if the tensor covers its whole storage, from its start."""
    return (tensor.data_ptr() == storage_ptr(tensor)
            and tensor.nelement() * _elem_size(tensor) == storage_size(tensor))


def _remove_duplicate_names(
    state_dict: Dict[str, torch.Tensor],
    *,
    preferred_names: Optional[List[str]] = None,
    discard_names: Optional[List[str]] = None,
) -> Dict[str, List[str]]:
    """For each shared group, the name to keep -> the names to drop."""
    preferred = set(preferred_names or [])
    discard = set(discard_names or [])
    result = defaultdict(list)
    for shared in _find_shared_tensors(state_dict):
        complete = {n for n in shared if _is_complete(state_dict[n])}
        if not complete:
            raise RuntimeError(
                "Error while trying to find names to remove to save state dict, but found no suitable name to keep"
                f" for saving amongst: {shared}. None is covering the entire storage.Refusing to save/load the model"
                " since you could be storing much more memory than needed. Please refer to"
                " https://huggingface.co/docs/safetensors/torch_shared_tensors for more information. Or open an"
                " issue."
            )
        keep = min(complete)
        if complete - discard:
            keep = min(complete - discard)
        if preferred & complete:
            keep = min(preferred & complete)
        for name in sorted(shared):
            if name != keep:
                result[keep].append(name)
    return result


def _check_for_save(tensors) -> None:
    if not isinstance(tensors, dict):
        raise ValueError(f"Expected a dict of [str, torch.Tensor] but received {type(tensors)}")
    sparse = []
    for k, v in tensors.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"Key `{k}` is invalid, expected torch.Tensor but received {type(v)}")
        if v.layout != torch.strided:
            sparse.append(k)
    if sparse:
        raise ValueError(
            f"You are trying to save a sparse tensors: `{sparse}` which this library does not support."
            " You can make it a dense tensor before saving with `.to_dense()` but be aware this might"
            " make a much larger file than needed."
        )
    failing = [names for names in _find_shared_tensors(tensors) if len(names) > 1]
    if failing:
        raise RuntimeError(
            f"""
            Some tensors share memory, this will lead to duplicate memory on disk and potential differences when loading them again: {failing}.
            A potential way to correctly save your model is to use `save_model`.
            More information at https://huggingface.co/docs/safetensors/torch_shared_tensors
            """
        )


def _items(tensors):
    _check_for_save(tensors)
    items = []
    for k, v in tensors.items():
        if not isinstance(k, str):
            raise TypeError(f"tensor names must be str, not {type(k).__name__}")
        if not v.is_contiguous():
            raise ValueError(
                f"You are trying to save a non contiguous tensor: `{k}` which is not allowed. It either means you"
                " are trying to save tensors which are reference of each other in which case it's recommended to save"
                " only the full tensors, and reslice at load time, or simply call `.contiguous()` on your tensor to"
                " pack it before saving."
            )
        st = _ST_NAMES.get(v.dtype)
        if st is None:
            raise SafetensorError(
                f"tensor `{k}`: dtype {v.dtype} cannot be stored in a safetensors file")
        if v.device.type != "cpu":
            v = v.to("cpu")
        items.append((k, st, list(v.shape), torch_numpy_view(v)))
    return items


def save(tensors: Dict[str, torch.Tensor], metadata: Optional[Dict[str, str]] = None) -> bytes:
    """The safetensors bytes of a dict of contiguous tensors."""
    return _c.write(_items(tensors), metadata, None)


def save_file(
    tensors: Dict[str, torch.Tensor],
    filename: Union[str, os.PathLike],
    metadata: Optional[Dict[str, str]] = None,
):
    """Writes a dict of contiguous tensors to filename (atomically: a
    temporary file in the same folder, fsync'ed, renamed)."""
    _c.write(_items(tensors), metadata, _fspath(filename))


def load_file(
    filename: Union[str, os.PathLike],
    device: Union[str, int] = "cpu",
    *,
    backend: str = "mmap",
) -> Dict[str, torch.Tensor]:
    """{name: tensor} of a file: writable tensors over one buffer of their
    own, read from the file at once (see _open.load_all)."""
    return load_all(filename, "pt", device, backend)


def load(data: bytes) -> Dict[str, torch.Tensor]:
    """{name: tensor} from safetensors bytes; the tensors own copies."""
    h = open_bytes(data)
    return {k: make_tensor(h, k, "pt", "cpu", COPY) for k in h.offset_keys()}


def save_model(
    model: torch.nn.Module,
    filename: str,
    metadata: Optional[Dict[str, str]] = None,
    force_contiguous: bool = True,
):
    """Saves model.state_dict(), keeping one name per shared tensor (each
    dropped name is recorded in the metadata as dropped -> kept)."""
    state_dict = model.state_dict()
    for kept, dropped in _remove_duplicate_names(state_dict).items():
        for name in dropped:
            if metadata is None:
                metadata = {}
            if name not in metadata:
                metadata[name] = kept
            del state_dict[name]
    if force_contiguous:
        state_dict = {k: v.contiguous() for k, v in state_dict.items()}
    try:
        save_file(state_dict, filename, metadata=metadata)
    except ValueError as e:
        raise ValueError(
            str(e) + " Or use save_model(..., force_contiguous=True), read the docs for potential caveats."
        )


def load_model(
    model: torch.nn.Module,
    filename: Union[str, os.PathLike],
    strict: bool = True,
    device: Union[str, int] = "cpu",
    *,
    backend: str = "mmap",
) -> Tuple[List[str], List[str]]:
    """Loads a file written by save_model into model. Returns (missing,
    unexpected); with strict, raises RuntimeError if either is non-empty."""
    state_dict = load_file(filename, device=device, backend=backend)
    dropped = _remove_duplicate_names(model.state_dict(), preferred_names=state_dict.keys())
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = set(missing)
    for names in dropped.values():
        for name in names:
            if name in missing:
                missing.remove(name)
            else:
                unexpected.append(name)
    if strict and (missing or unexpected):
        error = f"Error(s) in loading state_dict for {model.__class__.__name__}:"
        if missing:
            keys = ", ".join(f'"{k}"' for k in sorted(missing))
            error += f"\n    Missing key(s) in state_dict: {keys}"
        if unexpected:
            keys = ", ".join(f'"{k}"' for k in sorted(unexpected))
            error += f"\n    Unexpected key(s) in state_dict: {keys}"
        raise RuntimeError(error)
    return missing, unexpected

"""Arrays, torch or numpy, and safetensors files read and written without torch.

The helpers under `mechscope.results`: whether a value is an array, a numpy
view of one, and safetensors files, read into numpy (bfloat16 as float32) and
written atomically, importing torch only when a tensor is written. Importing
this module imports numpy, never torch, so that the viewer opens results
without it.

Example::

    meta, arrays = read_safetensors(Path("runs/patch/patch.safetensors"))
    as_numpy(torch.ones(2, dtype=torch.bfloat16))       # array([1., 1.], dtype=float32)
"""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

# --- arrays: torch or numpy, one helper for both ---------------------------------------


def is_torch(value: Any) -> bool:
    """A torch tensor, checked without importing torch (False while torch is not loaded).

    Example: ``is_torch(np.zeros(3))`` → False, torch imported or not.
    """
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def is_array(value: Any) -> bool:
    """A torch tensor or a numpy array.

    Example: ``is_array(torch.zeros(3)), is_array(np.zeros(3)), is_array([0.0])``
    → True, True, False.
    """
    return isinstance(value, np.ndarray) or is_torch(value)


def as_numpy(value: Any) -> np.ndarray:
    """A numpy copy-free view of an array field (torch tensors: detached, on the CPU;
    bfloat16, which numpy lacks, as float32).

    Example: ``as_numpy(torch.ones(2, dtype=torch.bfloat16))``
    → ``array([1., 1.], dtype=float32)``.
    """
    if is_torch(value):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(value)


# --- safetensors without torch ---------------------------------------------------------

_NP_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_MAX_HEADER = 100 << 20


def _head(f: BinaryIO) -> dict[str, Any]:
    """The JSON header of the safetensors file open at its start in `f` (left after it)."""
    head = f.read(8)
    if len(head) != 8:
        raise ValueError("shorter than a safetensors header")
    (n,) = struct.unpack("<Q", head)
    if n > _MAX_HEADER:
        raise ValueError(f"a header of {n} bytes")
    return json.loads(f.read(n))


def read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metadata and arrays of a safetensors file, as numpy (bfloat16 as float32).

    Example: ``meta, arrays = read_safetensors(Path("runs/patch/patch.safetensors"))``: the
    metadata (``meta["mechscope"]`` holds the JSON record) and name → numpy array.
    """
    with open(path, "rb") as f:
        header = _head(f)
        data = f.read()
    meta = header.pop("__metadata__", None) or {}
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        raw = data[start:end]
        if len(raw) != end - start:
            raise ValueError(f"tensor {name!r} is cut short")
        shape = tuple(info["shape"])
        if info["dtype"] == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            out[name] = bits.view(np.float32).reshape(shape)
        elif info["dtype"] in _NP_DTYPES:
            dtype = np.dtype(_NP_DTYPES[info["dtype"]]).newbyteorder("<")
            out[name] = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        else:
            raise ValueError(f"tensor {name!r} has dtype {info['dtype']}")
    return meta, out


def write_safetensors(path: Path, arrays: dict[str, Any], meta: dict[str, str]) -> None:
    """Write `arrays` (torch or numpy) and string `meta` to `path` atomically: a temporary file
    renamed into place (torch is imported only when some array is a tensor).

    Example: ``write_safetensors(Path("x.safetensors"), {"w": np.ones(3)}, {"k": "v"})``.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        if any(is_torch(v) for v in arrays.values()):
            import torch
            from safetensors.torch import save_file

            tensors = {
                k: (v if is_torch(v) else torch.from_numpy(np.ascontiguousarray(v)))
                .detach()
                .cpu()
                .contiguous()
                for k, v in arrays.items()
            }
            save_file(tensors, str(tmp), metadata=meta)
        else:
            from safetensors.numpy import save_file as save_np

            save_np({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp), meta)
        os.replace(tmp, path)
    except OSError:
        raise
    except Exception as e:  # safetensors reports a failed write as its own error type
        if "I/O error" not in str(e):
            raise
        raise OSError(f"cannot write {path}: {e}") from None
    finally:
        tmp.unlink(missing_ok=True)


def read_header(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The metadata and the tensor entries (dtype, shape, offsets) of a safetensors file, read
    without its data.

    Example: ``meta, entries = read_header(Path("runs/patch/patch.safetensors"))``.
    """
    with open(path, "rb") as f:
        header = _head(f)
    return header.pop("__metadata__", None) or {}, header

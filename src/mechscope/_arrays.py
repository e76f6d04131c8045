"""Arrays, torch or numpy, and safetensors files read and written without torch.

The helpers under `mechscope.results`: whether a value is an array, a numpy
view of one, and safetensors files, read into numpy (bfloat16 as float32) and
written atomically, importing torch only when a tensor is written. Every file
of a run is written through `atomic_file` (a temporary file, synced, renamed
into place); a failed write, a full disk, raises an OSError naming the file,
which the CLI prints in one line. Importing this module imports numpy, never
torch, so that the viewer opens results without it.

Example::

    meta, arrays = read_safetensors(Path("runs/patch/patch.safetensors"))
    as_numpy(torch.ones(2, dtype=torch.bfloat16))       # array([1., 1.], dtype=float32)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import sys
from collections.abc import Iterator
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
    raw = f.read(n)
    if len(raw) != n:
        raise ValueError(f"the header is cut short ({len(raw)} of {n} bytes)")
    header = json.loads(raw)
    if not isinstance(header, dict):
        raise ValueError(f"the header is a JSON {type(header).__name__}, not an object")
    return header


def read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metadata and arrays of a safetensors file, as numpy (bfloat16 as float32).

    Example: ``meta, arrays = read_safetensors(Path("runs/patch/patch.safetensors"))``: the
    metadata (``meta["mechscope"]`` holds the JSON record) and name → numpy array.
    """
    with open(path, "rb") as f:
        header = _head(f)
        data = f.read()
    meta = header.pop("__metadata__", None) or {}
    covered = max((int(info["data_offsets"][1]) for info in header.values()), default=0)
    if len(data) != covered:  # as safetensors itself: every byte belongs to a tensor
        raise ValueError(f"{len(data)} bytes of tensor data where the header describes {covered}")
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
    """Write `arrays` (torch or numpy) and string `meta` to `path` atomically (`atomic_file`;
    torch is imported only when some array is a tensor).

    Example: ``write_safetensors(Path("x.safetensors"), {"w": np.ones(3)}, {"k": "v"})``.
    """
    with atomic_file(path) as tmp:
        if any(is_torch(v) for v in arrays.values()):
            import torch

            tensors = {
                k: (v if is_torch(v) else torch.from_numpy(np.ascontiguousarray(v)))
                .detach()
                .cpu()
                .contiguous()
                for k, v in arrays.items()
            }
            save_torch(tmp, tensors, meta)
        else:
            from safetensors.numpy import save_file as save_np

            with safetensors_errors(path):
                save_np({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp), meta)


def save_torch(path: Path, tensors: dict[str, Any], meta: dict[str, str] | None = None) -> None:
    """`safetensors.torch.save_file`, its failed writes raised as OSErrors naming `path`.

    Example: ``save_torch(tmp, {"w": torch.ones(3)})`` inside ``with atomic_file(path) as tmp:``.
    """
    from safetensors.torch import save_file

    with safetensors_errors(path):
        save_file(tensors, str(path), metadata=meta)


@contextlib.contextmanager
def safetensors_errors(path: Path) -> Iterator[None]:
    """Raise safetensors' own error for a failed write (a full disk) as the OSError it is."""
    try:
        yield
    except OSError:
        raise
    except Exception as e:  # safetensors reports a failed write as its own error type
        if "I/O error" not in str(e):
            raise
        found = re.search(r"os error (\d+)", str(e))
        code = int(found.group(1)) if found else 5  # EIO
        raise OSError(code, os.strerror(code), str(path)) from None


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary name to write `path` under: synced to disk and renamed into place when the
    block ends, removed if it fails, so `path` is always the old file or the whole new one.

    Write errors (a full disk) are raised as OSErrors naming `path`.

    Example::

        with atomic_file("runs/h/state.safetensors") as tmp:
            tmp.write_bytes(data)
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDWR)  # Windows syncs only what it may write
        try:
            os.fsync(fd)  # the data is on disk before the name points at it
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        if e.filename in (None, str(tmp), tmp):
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


@contextlib.contextmanager
def naming(path: str | os.PathLike[str]) -> Iterator[None]:
    """Raise an OSError that names no file (a failed write or flush) as one naming `path`.

    Example::

        with naming(path), open(path, "ab") as f:
            f.write(data)      # a full disk: OSError(ENOSPC, …, path)
    """
    try:
        yield
    except OSError as e:
        if e.filename is not None:
            raise
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None


# atomic_file's temporary names, and safetensors' own (it writes a file under one and renames it)
_PARTIAL = re.compile(r"\..+\.\d+\.partial|\.tmp[0-9A-Za-z]{6}")


def is_partial_file(name: str) -> bool:
    """Whether `name` is a temporary file's name of `atomic_file` or of safetensors (left behind
    by a killed write).

    Example: ``is_partial_file(".state.safetensors.4242.partial")``, ``is_partial_file(".tmpa8Zq3x")``
    → True, True.
    """
    return bool(_PARTIAL.fullmatch(name))


def remove_partial_files(folder: str | os.PathLike[str]) -> None:
    """Remove the temporary files that killed writes left anywhere under `folder` (which no
    other process may be writing).

    Example: ``remove_partial_files("runs/.h.partial")`` before resuming the run written there.
    """
    for path in Path(folder).rglob(".*"):
        if is_partial_file(path.name) and path.is_file():
            path.unlink()


def read_header(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The metadata and the tensor entries (dtype, shape, offsets) of a safetensors file, read
    without its data.

    Example: ``meta, entries = read_header(Path("runs/patch/patch.safetensors"))``.
    """
    with open(path, "rb") as f:
        header = _head(f)
    return header.pop("__metadata__", None) or {}, header

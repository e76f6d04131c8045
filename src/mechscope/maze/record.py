"""Saving the maze results: every result dataclass is one safetensors file.

Tensor fields are stored as tensors, the other fields (numbers, tuples,
lists, strings) as JSON in the file's metadata, so ``Behaviour.load(path)``
gives back an equal object.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from ..errors import InputError

R = TypeVar("R", bound="TensorRecord")


class TensorRecord:
    """Mixin for frozen dataclasses: `save(path)` and `load(path)` as safetensors."""

    def save(self, path: str | Path) -> Path:
        """Write the record to `path` (``.safetensors`` is added when missing)."""
        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, Tensor] = {}
        other: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                tensors[f.name] = value.detach().contiguous().cpu()
            else:
                other[f.name] = value
        meta = {"kind": type(self).__name__, "fields": json.dumps(other)}
        tmp = path.with_name(path.name + ".partial")
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls: type[R], path: str | Path) -> R:
        """Reopen a record written by `save`."""
        path = Path(path)
        if not path.exists() and path.with_name(path.name + ".safetensors").exists():
            path = path.with_name(path.name + ".safetensors")
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        except Exception as e:
            raise InputError(f"cannot read {path} as a saved {cls.__name__}: {e}") from None
        if meta.get("kind") != cls.__name__:
            raise InputError(
                f"{path} holds a {meta.get('kind', 'different record')}, not a {cls.__name__}"
            )
        other = json.loads(meta["fields"])
        types = {f.name: f.type for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        for name, value in other.items():
            if isinstance(value, list) and "tuple" in str(types.get(name, "")):
                other[name] = tuple(value)
        return cls(**tensors, **other)

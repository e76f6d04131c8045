"""Run folders: everything a run produces, in one folder that can be reopened and served.

A run folder holds ``config.json`` (what is needed to rerun it: model and its
weights' hash, seeds, parameters), ``run.json`` (versions, timings, the
model's agreement with plain HF on the run's own inputs), results (safetensors
and JSON) and ``figures/`` (PNG, SVG, HTML). It is built under a temporary
name and renamed into place when the run finishes, so a killed run leaves no
half-written folder behind.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from .core.placement import model_dtype, module_device
from .errors import InputError, MechscopeError


def versions() -> dict[str, str]:
    """Versions of what produced a result."""
    import transformers

    from . import __version__

    return {
        "mechscope": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def model_record(model: Any) -> dict[str, Any]:
    """The part of a config that names the model exactly."""
    dmap = getattr(model, "device_map", None)
    return {
        "name": getattr(model, "name", None),
        "source": getattr(model, "source", None),
        "weights_sha256": getattr(model, "weights_sha256", None),
        "dtype": str(model_dtype(model.hf)).removeprefix("torch."),
        "device": str(getattr(model, "device", None) or module_device(model.hf)),
        "device_map": {k: str(v) for k, v in dmap.items()} if dmap else None,
    }


PLACEMENT_KEYS = ("device", "device_map")


def without_placement(record: Any) -> Any:
    """A config (or model record) without where the model ran: a run resumed or merged
    on another device is the same run."""
    if not isinstance(record, dict):
        return record
    out = {k: v for k, v in record.items() if k not in PLACEMENT_KEYS}
    if isinstance(out.get("model"), dict):
        out["model"] = without_placement(out["model"])
    return out


def hf_agreement(model: Any, tokens: Tensor) -> float:
    """Max |logit difference| between `model.run` and plain HF on `tokens` (no interventions)."""
    tokens = tokens.to(model.device)
    with torch.no_grad():
        ref = model.hf(tokens).logits
    return float((model.run(tokens).logits - ref).abs().max())


@dataclass
class Run:
    """A run folder being written; `finish` moves it into place."""

    kind: str
    path: Path
    config: dict[str, Any]
    _tmp: Path
    resumed: bool = False
    _start: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        """Where to write while the run is going on."""
        return self._tmp

    @property
    def figures(self) -> Path:
        path = self._tmp / "figures"
        path.mkdir(exist_ok=True)
        return path

    def write_json(self, name: str, obj: Any) -> Path:
        target = self._tmp / name
        target.write_text(json.dumps(obj, indent=2, default=_json_default))
        return target

    def save_tensors(
        self, name: str, tensors: dict[str, Tensor], meta: dict[str, str] | None = None
    ) -> Path:
        target = self._tmp / name
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in tensors.items()},
            str(target),
            metadata=meta,
        )
        return target

    def timed(self, what: str, since: float) -> None:
        self.timings[what] = round(time.perf_counter() - since, 3)

    def finish(self) -> Path:
        """Write run.json and move the folder into place (replacing an older one)."""
        record = {
            "kind": self.kind,
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - self._start, 2),
            "timings": self.timings,
            "versions": versions(),
            **self.extra,
        }
        self.write_json("run.json", record)
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self._tmp, self.path)
        return self.path

    def abandon(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is not None:
            self.abandon()


def new_run(kind: str, out: str | Path, config: dict[str, Any], *, resume: bool = False) -> Run:
    """Start a run folder at `out` (written under a temporary sibling until `finish`).

    With `resume`, an unfinished folder left by a killed run with the same
    config is kept (`Run.resumed` is then True) so the run can go on from its
    last checkpoint; otherwise it is discarded.
    """
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    record = json.loads(json.dumps({"kind": kind, **config}, default=_json_default))
    old = tmp / "config.json"
    resumed = (
        resume
        and old.exists()
        and without_placement(json.loads(old.read_text())) == without_placement(record)
    )
    if tmp.exists() and not resumed:
        shutil.rmtree(tmp)
    tmp.mkdir(exist_ok=True)
    run = Run(kind, path, config, tmp, resumed=resumed)
    if not resumed:
        run.write_json("config.json", record)
    return run


def open_run(path: str | Path) -> dict[str, Any]:
    """Read a finished run's config.json and run.json."""
    path = Path(path)
    if not (path / "run.json").exists():
        raise MechscopeError(f"{path} is not a finished mechscope run folder (no run.json)")
    return {
        "config": json.loads((path / "config.json").read_text()),
        "run": json.loads((path / "run.json").read_text()),
    }


def read_json_list(
    path: str | Path, what: str, items: str, *, non_empty: bool = False
) -> list[Any]:
    """The JSON list in the user's file `path`; one-line errors name the `what` file and its `items`."""
    path = Path(path)
    try:
        rows = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"no such {what} file: {path}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(rows, list) or (non_empty and not rows):
        raise InputError(
            f"{path} must hold a {'non-empty ' if non_empty else ''}JSON list of {items}"
        )
    return rows


def load_tensors(path: str | Path) -> dict[str, Tensor]:
    return load_file(str(path))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")

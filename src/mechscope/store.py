"""Run folders: everything a run produces, in one folder that can be reopened and served.

A run folder holds ``config.json`` (what is needed to rerun it: model and its
weights' hash, seeds, parameters), ``run.json`` (versions, timings, the
model's agreement with plain HF on the run's own inputs), results (safetensors
and JSON) and ``figures/`` (PNG, SVG, HTML). It is built under a temporary
name and renamed into place when the run finishes, so a killed run leaves no
half-written folder behind; its files are written atomically (`atomic_file`), so a
resumed run finds each of them whole or absent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._arrays import atomic_file, remove_partial_files, save_torch
from .errors import InputError, MechscopeError
from .results import FORMATS, Arrays, Result, ResultFormatError, open_result, result_header

if TYPE_CHECKING:
    from torch import Tensor


def versions() -> dict[str, str]:
    """Versions of what produced a result.

    Example: ``versions()["transformers"]`` → e.g. ``"5.24.0"``; keys mechscope, torch,
    transformers, python.
    """
    import torch
    import transformers

    from . import __version__

    return {
        "mechscope": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def model_record(model: Any) -> dict[str, Any]:
    """The part of a config that names the model exactly.

    Example: ``model_record(model)`` → ``{"name": "smollm2-135m", "source": …,
    "weights_sha256": …, "dtype": "float32", "device": "cpu", "device_map": None}``.
    """
    from .core.placement import model_dtype, module_device

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
    on another device is the same run.

    Example: ``without_placement({"model": {"name": "m", "device": "cuda:0"}, "seed": 0})``
    → ``{"model": {"name": "m"}, "seed": 0}``.
    """
    if not isinstance(record, dict):
        return record
    out = {k: v for k, v in record.items() if k not in PLACEMENT_KEYS}
    if isinstance(out.get("model"), dict):
        out["model"] = without_placement(out["model"])
    return out


def hf_agreement(model: Any, tokens: Tensor) -> float:
    """Max |logit difference| between `model.run` and plain HF on `tokens` (no interventions).

    Example: ``hf_agreement(model, model.to_tokens("The capital of France is"))`` → 0.0.
    """
    import torch

    tokens = tokens.to(model.device)
    with torch.no_grad():
        ref = model.hf(tokens).logits
    return float((model.run(tokens).logits - ref).abs().max())


@dataclass
class Run:
    """A run folder being written; `finish` moves it into place.

    Example::

        with new_run("demo", "runs/demo", {"seed": 0}) as run:
            run.write_json("scores.json", [1, 2])
            run.finish()          # runs/demo: config.json, run.json, scores.json
    """

    kind: str
    path: Path
    config: dict[str, Any]
    _tmp: Path
    resumed: bool = False
    resumable: bool = False  # an interrupted run keeps its folder, to be resumed
    _start: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    _lock: int | None = field(default=None, repr=False)

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
        text = json.dumps(obj, indent=2, default=_json_default)
        with atomic_file(target) as tmp:
            tmp.write_text(text)
        return target

    def save_tensors(
        self, name: str, tensors: dict[str, Tensor], meta: dict[str, str] | None = None
    ) -> Path:
        target = self._tmp / name
        with atomic_file(target) as tmp:
            save_torch(tmp, {k: v.detach().contiguous().cpu() for k, v in tensors.items()}, meta)
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
        old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
        if self.path.exists():
            os.replace(self.path, old)  # the older run stays whole until the new one is in place
        os.replace(self._tmp, self.path)
        _sync_folder(self.path.parent)  # the renames survive a crash that follows
        shutil.rmtree(old, ignore_errors=True)
        self._unlock()
        return self.path

    def abandon(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._unlock()

    def _unlock(self) -> None:
        _release(self.path, self._lock)
        self._lock = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            return
        if self.resumable and not issubclass(exc_type, MechscopeError):
            self._unlock()  # interrupted (Ctrl-C, a full disk): the next run resumes
        else:
            self.abandon()


def new_run(kind: str, out: str | Path, config: dict[str, Any], *, resume: bool = False) -> Run:
    """Start a run folder at `out` (written under a temporary sibling until `finish`).

    With `resume`, an unfinished folder left by a killed run with the same
    config is kept (`Run.resumed` is then True) so the run can go on from its
    last checkpoint; otherwise it is discarded. A resumable run used as a
    context manager keeps its folder when interrupted by anything but a
    `MechscopeError` (Ctrl-C, a full disk), for the next run to resume.

    Example::

        run = new_run("patch", "runs/patch", {"model": model_record(model)}, resume=True)
        run.resumed           # True when a killed run's folder with this config was kept
    """
    path = check_out(out, kind)
    record = json.loads(json.dumps({"kind": kind, **config}, default=_json_default))
    tmp = path.with_name(f".{path.name}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = _lock(path)
        try:
            old = read_json_object(tmp / "config.json") if resume else None
        except InputError:
            old = None  # a damaged checkpoint is started again, not resumed
        resumed = old is not None and without_placement(old) == without_placement(record)
        if tmp.exists() and not resumed:
            shutil.rmtree(tmp)
        tmp.mkdir(exist_ok=True)
        _clear_leftovers(path, tmp)
    except OSError as e:
        raise InputError(f"cannot create the run folder {path}: {e.strerror or e}") from None
    run = Run(kind, path, config, tmp, resumed=resumed, resumable=resume, _lock=lock)
    if not resumed:
        run.write_json("config.json", record)
    return run


def _sync_folder(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every system can open a folder
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _clear_leftovers(path: Path, tmp: Path) -> None:
    """Remove what killed runs of `path` left behind: older runs set aside by a `finish` cut
    short, and half-written temporary files in the folder being resumed (we hold its lock)."""
    olds = [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.old-")]
    for old in olds:
        if not old.is_dir():
            old.unlink()
        elif path.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:  # cut short between its two renames: the older run is still the only one
            os.replace(old, path)
    remove_partial_files(tmp)


def check_out(out: str | Path, kind: str | None = None) -> Path:
    """`out` as a run folder to write, or one line saying why it cannot be one.

    It must name a folder (not ``.``, ``..`` or nothing), not be a file, and if it
    exists hold a run (it is replaced when the new run finishes; with `kind`, only
    a run of that kind, so that no command overwrites another's results) or nothing.

    Example: ``check_out("runs/trace")`` → ``Path("runs/trace")``; ``check_out(".")`` raises.
    """
    text = str(out)
    path = Path(text)
    if not text.strip() or path.name in ("", ".", ".."):
        raise InputError(f"the run folder (--out) must be named, e.g. runs/demo; got {text!r}")
    if path.is_file() or (path.exists() and not path.is_dir()):
        raise InputError(f"--out {path} is a file; a run folder is expected (give a new name)")
    if path.is_dir() and not (path / "config.json").is_file():
        with os.scandir(path) as entries:
            if any(True for _ in entries):
                raise InputError(
                    f"--out {path} is a folder that holds no mechscope run; it would be "
                    "replaced, so give a new or empty folder"
                )
    if kind is not None and (path / "config.json").is_file():
        try:
            held = read_json_object(path / "config.json").get("kind")
        except InputError:
            held = None  # a damaged run folder is replaced like any run
        if isinstance(held, str) and held != kind:
            raise InputError(
                f"--out {path} holds a {held} run, which a {kind} run would replace; "
                "give another folder (or delete that one first)"
            )
    return path


def _lock(path: Path) -> int | None:
    """Hold ``.NAME.lock`` beside `path` so that a second process writing it refuses."""
    try:
        import fcntl
    except ImportError:  # no advisory locks here (Windows): no guard
        return None
    key = str(path.resolve())
    if key in _HELD:  # this process's own earlier run of it, left unfinished: it may go on
        return _HELD[key]
    name = _lock_name(path)
    while True:
        fd = os.open(name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(
                f"another process is writing {path} now; wait for it or give another --out"
            ) from None
        try:  # the holder before us may have removed the file between our open and our lock
            same = os.path.samestat(os.fstat(fd), os.stat(name))
        except FileNotFoundError:
            same = False
        if same:
            _HELD[key] = fd
            return fd
        os.close(fd)


def _release(path: Path, fd: int | None) -> None:
    key = str(path.resolve())
    if fd is not None and _HELD.get(key) == fd:
        del _HELD[key]
        with contextlib.suppress(OSError):
            os.unlink(_lock_name(path))  # removed while held: no one else holds it
        os.close(fd)


@contextlib.contextmanager
def holding(path: str | Path) -> Iterator[Path]:
    """Hold the lock of a folder written outside a run (``.NAME.lock`` beside it, as for run
    folders): a second process writing it at the same time refuses in one line.

    Example::

        with holding("acts/l15") as out:     # InputError if another process writes acts/l15
            write_shard(out, 0, rows, torch.float16)
    """
    path = Path(path)
    fd = _lock(path)
    try:
        yield path
    finally:
        _release(path, fd)


def _lock_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


_HELD: dict[str, int] = {}  # run folders this process holds the lock of → the lock's fd


RESULT_DEPTH = 3  # how deep under a run folder results are looked for (facts/NNNN, parts/…)


class RunFolder(Mapping[str, Result]):
    """A finished run reopened: its config, its record and its typed results.

    A mapping from each result's name (its path in the folder without
    ``.safetensors``: ``"trace"``, ``"facts/0003"``) to the `Result`, read when
    first asked for (``arrays="numpy"`` reads without torch). Only files with a
    result format tag are results; activation shards and weights are not.

    Example::

        run = open_run("runs/trace")     # RunFolder(trace at runs/trace: trace, …)
        run["trace"]                     # CausalTrace(…)
        run.config["model"]["name"]
    """

    def __init__(self, path: Path, arrays: Arrays = "torch") -> None:
        self.path = path
        self.arrays: Arrays = arrays
        self.config: dict[str, Any] = _read_record(path / "config.json")
        self.record: dict[str, Any] = _read_record(path / "run.json")
        self.kind: str = str(self.record.get("kind") or self.config.get("kind") or "")
        self._formats = dict(_result_files(path))
        self._loaded: dict[str, Result] = {}

    def formats(self) -> dict[str, str]:
        """Each result's name and format tag, without reading any result."""
        return dict(self._formats)

    def __getitem__(self, name: str) -> Result:
        if name not in self._formats:
            known = ", ".join(self._formats) or "none"
            raise KeyError(f"run {self.path} has no result {name!r}; it has: {known}")
        if name not in self._loaded:
            self._loaded[name] = open_result(self.path / f"{name}.safetensors", arrays=self.arrays)
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._formats)

    def __len__(self) -> int:
        return len(self._formats)

    def __repr__(self) -> str:
        names = list(self._formats)
        shown = ", ".join(names[:6]) + (f", … ({len(names)} results)" if len(names) > 6 else "")
        return f"RunFolder({self.kind} at {self.path}: {shown or 'no results'})"


def read_json_object(path: str | Path) -> dict[str, Any] | None:
    """The JSON object in `path` (a run's record or config), None if the file is missing;
    a file that is not one fails in one line naming it.

    Example: ``read_json_object("runs/ioi/run.json")["kind"]`` → ``"ioi"``.
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read {path}: it is not a readable JSON record ({e})") from None
    if not isinstance(record, dict):
        raise InputError(f"{path} should hold a JSON object, got {type(record).__name__}")
    return record


def _read_record(path: Path) -> dict[str, Any]:
    return read_json_object(path) or {}


def _result_files(path: Path) -> Iterator[tuple[str, str]]:
    """(name, format) of each tagged result under `path`, in path order."""
    for file in sorted(path.rglob("*.safetensors")):
        rel = file.relative_to(path)
        if len(rel.parts) > RESULT_DEPTH or any(p.startswith(".") for p in rel.parts):
            continue
        try:
            fmt = result_header(file).get("format", "")
        except ResultFormatError:
            continue
        if fmt in FORMATS:
            yield rel.with_suffix("").as_posix(), fmt


def open_run(path: str | Path, *, arrays: Arrays = "torch") -> RunFolder:
    """Reopen a finished run folder, whatever the technique: config, record, results.

    Example::

        run = open_run("runs/ioi")
        run.kind, run.record["seconds"], list(run)
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"no run folder at {path}")
    if not (path / "run.json").exists():
        raise MechscopeError(f"{path} is not a finished mechscope run folder (no run.json)")
    return RunFolder(path, arrays)


def read_text_file(path: str | Path, what: str) -> str:
    """The UTF-8 text of the user's `what` file at `path`, or one line saying why it is not one.

    Example: ``read_text_file("positive.txt", "text")`` → the file's text; a folder, a missing
    file or bytes that are not UTF-8 raise an `InputError` naming the path.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; a {what} file is expected")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"no such {what} file: {path}") from None
    except UnicodeDecodeError as e:
        raise InputError(
            f"{path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at {e.start}); "
            f"save the {what} file as UTF-8"
        ) from None
    except OSError as e:
        raise InputError(f"cannot read the {what} file {path}: {e.strerror or e}") from None


def read_json_list(
    path: str | Path, what: str, items: str, *, non_empty: bool = False
) -> list[Any]:
    """The JSON list in the user's file `path`; one-line errors name the `what` file and its `items`.

    Example: ``read_json_list("prompts.json", "prompts", "strings", non_empty=True)``
    → ``["The capital of France is", …]``.
    """
    path = Path(path)
    try:
        rows = json.loads(read_text_file(path, what))
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(rows, list) or (non_empty and not rows):
        raise InputError(
            f"{path} must hold a {'non-empty ' if non_empty else ''}JSON list of {items}"
        )
    return rows


def load_tensors(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a plain safetensors file (not a result: activation shards, weights).

    Example: ``load_tensors("acts.safetensors")["blocks.3.resid_post"]``, for a file written by
    `ActivationCache.save` or `Run.save_tensors`.
    """
    from safetensors.torch import load_file

    return load_file(str(path))


def _json_default(obj: Any) -> Any:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")

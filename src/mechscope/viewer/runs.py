"""Finding run folders to serve: a path is a run folder (it has ``run.json``) or holds them.

Folders are searched two levels down (``runs/ioi``, ``runs/sweeps/l3``);
hidden folders (such as a run still being written, ``.name.partial``) are
skipped. Each run gets a short id for URLs: its folder name, made unique with
its parent's name and then a number.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..store import read_json_object

SEARCH_DEPTH = 2


@dataclass(frozen=True)
class RunInfo:
    """A finished run folder: its id in URLs, kind, config.json and run.json.

    Example::

        run = discover_runs(["runs"])["ioi"]
        run.kind, run.model             # ('ioi', 'smollm2-135m')
    """

    id: str
    path: Path
    kind: str
    config: dict[str, Any] = field(repr=False)
    record: dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def finished(self) -> str:
        """When the run finished (ISO time from run.json), or "" if unknown."""
        return str(self.record.get("finished", "")).replace("T", " ")

    @property
    def model(self) -> str:
        """The model's name from config.json, or "" if none."""
        model = self.config.get("model")
        if isinstance(model, Mapping):
            return str(model.get("name") or model.get("source") or "")
        return "" if model is None else str(model)


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path) or {}


def read_run(path: Path, run_id: str) -> RunInfo:
    """The `RunInfo` of the run folder at `path`.

    Example: ``read_run(Path("runs/ioi"), "ioi").config`` → config.json as a dict.
    """
    record = _read_json(path / "run.json")
    config = _read_json(path / "config.json")
    kind = str(record.get("kind") or config.get("kind") or "unknown")
    return RunInfo(run_id, path, kind, config, record)


def find_run_folders(path: Path, depth: int = SEARCH_DEPTH) -> list[Path]:
    """Run folders at `path` or below it (at most `depth` levels), sorted by path.

    A run folder's own sub-runs (one level inside it, e.g. an SAE run's
    ``harvest/``) are included after it.

    Example: ``find_run_folders(Path("runs"))`` → ``[Path("runs/ioi"), Path("runs/sweeps/l3")]``.
    """
    if (path / "run.json").is_file():
        try:
            inner = sorted(p for p in path.iterdir() if p.is_dir() and (p / "run.json").is_file())
        except OSError:
            inner = []
        return [path, *inner]
    if depth == 0:
        return []
    found: list[Path] = []
    try:
        children = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []
    for child in children:
        found.extend(find_run_folders(child, depth - 1))
    return found


def discover_runs(
    paths: Iterable[str | Path], known: Mapping[Path, str] | None = None
) -> dict[str, RunInfo]:
    """All runs under `paths`, by id; `known` (path → id) keeps ids stable across rescans.

    Raises `InputError` for a path that does not exist, is not a folder, or holds
    no run folders.

    Example: ``sorted(discover_runs(["runs"]))`` → the run ids, e.g. ``["ioi", "l3"]``.
    """
    folders: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise InputError(f"no such folder: {raw} (give run folders or folders that hold them)")
        if not path.is_dir():
            raise InputError(f"{raw} is a file; give a run folder or a folder that holds them")
        found = find_run_folders(path.resolve())
        if not found:
            raise InputError(
                f"{raw} holds no mechscope runs (a run folder has a run.json; "
                f"searched {SEARCH_DEPTH} levels down)"
            )
        folders.extend(f for f in found if f not in folders)
    ids: dict[Path, str] = {p: i for p, i in (known or {}).items() if p in folders}
    taken = set(ids.values())
    for folder in folders:
        if folder in ids:
            continue
        candidate = folder.name
        if (folder.parent / "run.json").is_file():  # a sub-run: named after its run
            candidate = f"{ids.get(folder.parent, folder.parent.name)}-{folder.name}"
        if candidate in taken:
            candidate = f"{folder.parent.name}-{folder.name}"
        base, n = candidate, 2
        while candidate in taken:
            candidate, n = f"{base}-{n}", n + 1
        ids[folder] = candidate
        taken.add(candidate)
    return {ids[f]: read_run(f, ids[f]) for f in folders}

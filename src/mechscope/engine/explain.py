"""Explaining units on Ray: contiguous chunks of the units, one Ray task each, per phase.

`explain_run` runs in two phases with one step between them that needs
every unit (the ``random`` baseline borrows another unit's explanation), so
each phase is its own round of tasks: every task runs the local pipeline's
step (`explain_unit`, `score_unit`) on its chunk, with its backend rebuilt in
the worker (a `LocalBackend` from the model shipped as `mechscope.engine.ship`
says, an `OpenAIBackend` from its URL and model, keeping its own concurrency
per worker). The driver appends the rows in unit order to the run's JSONL
files, so they are the local engine's row for row; fuzzing's seed is
``seed + unit`` wherever a unit runs. Each task appends one line per finished
unit to ``<run>/.engine/<phase>/chunk-<i>.jsonl`` and skips units already in
that folder, so a task retried after its worker died goes on from there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import torch

from ..autointerp.backends import Backend, LocalBackend
from ..autointerp.http import OpenAIBackend
from ..harvest.tables import UnitRecord
from . import EngineError
from .cluster import Reporter, ray_session, run_shards, split
from .ship import ShippedModel, ship_model

Unit = tuple[str, int]


@dataclasses.dataclass(frozen=True)
class ShippedBackend:
    """A backend as a worker rebuilds it: a shipped model, or an HTTP server's settings.

    Example: ``ship_backend(LocalBackend(model), Path("/tmp/ship")).load()`` → a `LocalBackend`.
    """

    model: ShippedModel | None = None
    seed: int = 0
    http: dict[str, Any] | None = None

    def load(self) -> Backend:
        """The backend, rebuilt in this process."""
        if self.model is not None:
            return LocalBackend(self.model.load(), seed=self.seed)
        return OpenAIBackend(**(self.http or {}))


def ship_backend(backend: Backend, folder: Path) -> ShippedBackend:
    """`backend` made rebuildable by workers (its model saved in `folder` if local).

    Example: ``ship_backend(OpenAIBackend("http://127.0.0.1:8000", "my-model"), Path("x")).http``
    → the settings a worker rebuilds it from.
    """
    if type(backend) is LocalBackend:
        return ShippedBackend(model=ship_model(backend.model, folder), seed=backend.seed)
    if type(backend) is OpenAIBackend:
        cache = backend.cache
        http = {
            "base_url": backend.base_url,
            "model": backend.model,
            "api_key_env": backend.api_key_env,
            "timeout": backend.timeout,
            "retries": backend.retries,
            "backoff": backend.backoff,
            "concurrency": backend.concurrency,
            "seed": backend.seed,
            "cache_dir": str(cache.path.parent) if cache is not None else None,
            "cache": cache is not None,
        }
        return ShippedBackend(http=http)
    raise EngineError(
        f"engine='ray' rebuilds a LocalBackend or an OpenAIBackend in each worker; "
        f"got a {type(backend).__name__}: use engine='local'"
    )


class RayUnits:
    """A Ray session for one explain run: its backends shipped once, each phase a round of tasks.

    Example::

        with RayUnits(Path("runs/explain/.engine"), None, 2, 1, True) as ray_units:
            rows = ray_units.explain(units, records, LocalBackend(model), ["llm"], 5, 5)
    """

    def __init__(
        self, folder: Path, address: str | None, workers: int | None, threads: int, progress: bool
    ) -> None:
        self.folder, self.address, self.workers = folder, address, workers
        self.threads, self.progress = threads, progress
        self.shipped: dict[int, ShippedBackend] = {}
        self._stack = contextlib.ExitStack()
        self.ray: ModuleType | None = None

    def __enter__(self) -> RayUnits:
        cpus = self.workers * self.threads if self.workers else None
        self.ray = self._stack.enter_context(ray_session(self.address, cpus=cpus))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()
        if exc_type is None:  # a failed run keeps its chunks to resume from
            shutil.rmtree(self.folder, ignore_errors=True)

    def _ship(self, backend: Backend) -> ShippedBackend:
        if id(backend) not in self.shipped:
            where = self.folder / f"model-{len(self.shipped)}"
            self.shipped[id(backend)] = ship_backend(backend, where)
        return self.shipped[id(backend)]

    def _map(self, phase: str, todo: Sequence[Unit], work: list[Any]) -> list[Any]:
        """Run `phase` over `todo` in chunks; each unit's result, in `todo`'s order."""
        assert self.ray is not None
        where = self.folder / phase
        where.mkdir(parents=True, exist_ok=True)
        spans = split(self.ray, len(todo), self.workers, self.threads)
        args = [(phase, str(where), self.threads, work[lo:hi]) for lo, hi in spans]
        run_shards(
            self.ray,
            _chunk,
            args,
            folder=where,
            threads=self.threads,
            total=len(todo),
            unit="unit",
            desc=f"{phase} on {len(spans)} Ray workers",
            progress=self.progress,
        )
        found = _finished(where)
        missing = [u for u in todo if u not in found]
        if missing:
            raise EngineError(f"{phase}: the Ray tasks left {len(missing)} units without rows")
        out = [found[u] for u in todo]
        shutil.rmtree(where)
        return out

    def explain(
        self,
        todo: Sequence[Unit],
        records: dict[Unit, UnitRecord],
        explainer: Backend,
        methods: Sequence[str],
        n_show: int,
        n_test: int,
    ) -> list[list[dict[str, Any]]]:
        """Each unit's explanation rows (`explain_unit`), in `todo`'s order."""
        shipped = self._ship(explainer)
        work = [(u, (shipped, records[u], *u, list(methods), n_show, n_test)) for u in todo]
        return self._map("explain", todo, work)

    def score(
        self,
        todo: Sequence[Unit],
        records: dict[Unit, UnitRecord],
        texts: dict[Unit, dict[str, str | None]],
        simulator: Backend,
        methods: Sequence[str],
        scorers: Sequence[str],
        n_show: int,
        n_test: int,
        seed: int,
    ) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
        """Each unit's score and simulation rows (`score_unit`), in `todo`'s order."""
        shipped = self._ship(simulator)
        work = [
            (u, (shipped, records[u], *u, texts[u], list(methods), list(scorers), n_show, n_test,
                 seed))
            for u in todo
        ]  # fmt: skip
        return [tuple(r) for r in self._map("score", todo, work)]


def _finished(folder: Path) -> dict[Unit, Any]:
    """Every unit's result in the chunk files of `folder` (a line cut by a kill is ignored)."""
    from ..autointerp.pipeline import read_jsonl

    found: dict[Unit, Any] = {}
    for file in sorted(folder.glob("chunk-*.jsonl")):
        for line in read_jsonl(file):
            found[(line["site"], line["unit"])] = line["result"]
    return found


def _chunk(
    report: Reporter, shard: int, phase: str, folder: str, threads: int, work: list[Any]
) -> None:
    """One Ray task: `phase` on each unit of `work` not yet in `folder`, one line per unit."""
    from ..autointerp.pipeline import _append, _repair, explain_unit, make_simulators, score_unit

    torch.set_num_threads(threads)
    where = Path(folder)
    file = where / f"chunk-{shard}.jsonl"
    _repair(file)
    done = _finished(where)
    todo = [(u, a) for u, a in work if u not in done]
    report(len(work) - len(todo))
    if todo:
        backend = todo[0][1][0].load()
        sims = make_simulators(backend) if phase == "score" else None
        for n, (u, (_, *rest)) in enumerate(todo, start=len(work) - len(todo) + 1):
            if sims is None:
                result: Any = explain_unit(backend, *rest)
            else:
                result = list(score_unit(*sims, *rest))
            _append(file, [{"site": u[0], "unit": u[1], "result": result}])
            report(n)
    report(len(work), final=True)


__all__ = ["RayUnits", "ShippedBackend", "ship_backend"]

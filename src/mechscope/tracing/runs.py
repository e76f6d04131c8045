"""Run folders for traces and edits, which the viewer serves.

A ``trace`` run holds ``trace.safetensors`` (one fact, `CausalTrace.load`) or
``average.safetensors`` (`AverageTrace.load`) with every fact's trace in
``facts/`` (many facts), and the heatmaps in ``figures/``. An ``edit`` run
holds ``edit.safetensors`` (the update, which `Edit.load` reopens),
``report.safetensors`` (the held-out evaluation, `EditReport.load`) and a
figure of the objects' probabilities before and after.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.model import Model
from ..store import model_record, new_run
from .average import AverageTrace, trace_facts
from .facts import Fact
from .rome import Edit, EditReport, RomeConfig, evaluate_edit
from .trace import CausalTrace, trace_fact


def trace_run(
    model: Model,
    facts: Fact | Sequence[Fact],
    out: str | Path,
    *,
    kinds: Sequence[str] = ("hidden", "mlp", "attn"),
    samples: int = 10,
    noise: float | None = None,
    replace_with: Sequence[str] | None = None,
    window: int = 10,
    seed: int = 0,
    progress: bool = True,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
) -> CausalTrace | AverageTrace:
    """Trace one fact (or average many) into the run folder `out`; returns the trace.

    Many facts can be spread over Ray workers (``engine="ray"``, see `trace_facts`);
    `threads` is torch's threads per process.

    Example::

        fact = Fact("The Eiffel Tower", "{} is located in the city of", "Paris")
        trace_run(model, fact, "runs/trace-eiffel")  # a CausalTrace; trace.safetensors, figures/
    """
    many = not isinstance(facts, Fact)
    listed = list(facts) if many else [facts]  # type: ignore[arg-type]
    config: dict[str, Any] = {
        "model": model_record(model), "facts": [f.to_dict() for f in listed], "kinds": list(kinds),
        "samples": samples, "noise": noise, "window": window, "seed": seed,
        "replace_with": list(replace_with) if replace_with else None,
    }  # fmt: skip
    with new_run("trace", out, config, resume=many) as run:
        t0 = time.perf_counter()
        if many:
            result: CausalTrace | AverageTrace
            result, _ = trace_facts(
                model, listed, kinds=kinds, samples=samples, noise=noise, window=window,
                seed=seed, out=run.dir, progress=progress, engine=engine, address=address,
                workers=workers, threads=threads,
            )  # fmt: skip
            run.extra["engine"] = {
                "name": engine, "address": address, "workers": workers, "threads": threads,
            }  # fmt: skip
            result.figure(run.figures / "average")
            run.extra["summary"] = result.summary()
        else:
            result = trace_fact(
                model, listed[0], kinds=kinds, samples=samples, noise=noise,
                replace_with=replace_with, window=window, seed=seed, progress=progress,
            )  # fmt: skip
            result.save(run.dir / "trace.safetensors")
            result.figure(run.figures / "trace")
        run.timed("trace", t0)
        run.finish()
    return result


def edit_run(
    model: Model,
    fact: Fact,
    new_object: str,
    neighbours: Sequence[Fact],
    out: str | Path,
    *,
    layer: int | None = None,
    config: RomeConfig | None = None,
    keep: bool = False,
    progress: bool = True,
) -> tuple[EditReport, Edit]:
    """Edit, evaluate and write the run folder `out`; the edit is undone unless `keep`.

    Example::

        fact = Fact("France", "The capital of {} is the city of", "Paris", "country_capital")
        neighbours = geography_facts("country_capital", limit=10)
        report, e = edit_run(model, fact, "Rome", neighbours, "runs/edit-france")  # undone after
    """
    cfg = config or RomeConfig()
    record: dict[str, Any] = {
        "model": model_record(model), "fact": fact.to_dict(), "new_object": new_object,
        "neighbours": [n.to_dict() for n in neighbours], "layer": layer,
        "rome": cfg.__dict__,
    }  # fmt: skip
    with new_run("edit", out, record) as run:
        t0 = time.perf_counter()
        report, e = evaluate_edit(
            model, fact, new_object, neighbours, layer=layer, config=cfg, progress=progress
        )
        try:
            e.save(run.dir / "edit.safetensors")
            report.save(run.dir / "report.safetensors")
            report.figure(run.figures / "edit")
            run.extra["scores"] = report.scores()
            run.timed("edit", t0)
            run.finish()
        finally:
            if not keep:
                e.undo()
    return report, e

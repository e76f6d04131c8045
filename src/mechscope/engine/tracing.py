"""Causal traces of many facts on Ray: contiguous chunks of the facts, one Ray task each.

Fact i is traced with seed ``seed + i`` whichever task traces it, so the
traces, and their average, are the local engine's. With a folder, each task
saves every trace as it ends (``<folder>/<i>.safetensors``, as the local
engine does) and skips the ones already there, so a task retried after its
worker was killed goes on from its last finished fact. Workers get the model
as `mechscope.engine.ship` says.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..core.model import Model
from ..tracing.facts import Fact
from ..tracing.trace import CausalTrace
from .cluster import Reporter, ray_session, run_shards, split
from .ship import ShippedModel, ship_model


def trace_facts_on_ray(
    model: Model,
    facts: Sequence[Fact],
    *,
    folder: Path | None,
    address: str | None = None,
    workers: int | None = None,
    threads: int = 1,
    progress: bool = True,
    **trace_args: Any,
) -> list[CausalTrace]:
    """Every fact's trace, in order, traced by `workers` Ray tasks (default: the cluster's CPUs // `threads`).

    >>> traces = trace_facts_on_ray(model, facts, folder=None, workers=2, kinds=["mlp"],
    ...     samples=3, noise=None, window=2, seed=0)  # doctest: +SKIP
    """
    # the shipped model and the progress files: beside the traces, or in a temporary folder
    root = (
        folder.with_name(f".{folder.name}.engine")
        if folder
        else Path(tempfile.mkdtemp(prefix="mechscope-trace-"))
    )
    try:
        with ray_session(address, cpus=workers * threads if workers else None) as ray:
            spans = split(ray, len(facts), workers, threads)
            n = len(spans)
            shipped = ship_model(model, root / "model")
            args = [
                (
                    shipped,
                    list(facts[lo:hi]),
                    lo,
                    str(folder) if folder else None,
                    threads,
                    trace_args,
                )
                for lo, hi in spans
            ]
            chunks = run_shards(
                ray,
                _trace_chunk,
                args,
                folder=root,
                threads=threads,
                total=len(facts),
                unit="fact",
                desc=f"facts on {n} Ray workers",
                progress=progress,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return [tr for chunk in chunks for tr in chunk]


def _trace_chunk(
    report: Reporter,
    shard: int,
    shipped: ShippedModel,
    facts: list[Fact],
    first: int,
    folder: str | None,
    threads: int,
    trace_args: dict[str, Any],
) -> list[CausalTrace]:
    """One Ray task: facts ``first …`` of the set, each read back if saved, else traced and saved."""
    from ..tracing.average import trace_or_load

    torch.set_num_threads(threads)
    model = shipped.load()
    where = Path(folder) if folder else None
    traces = []
    for j, fact in enumerate(facts):
        traces.append(trace_or_load(model, fact, first + j, where, **trace_args))
        report(j + 1)
    report(len(facts), final=True)
    return traces


__all__ = ["trace_facts_on_ray"]

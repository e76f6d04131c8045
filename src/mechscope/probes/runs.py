"""Run folders for probe sweeps, which the viewer serves.

A ``probe`` run holds ``probes.safetensors`` (held-out accuracy per layer of
each method, with every fitted direction; `ProbeResults.load` reopens it),
``pairs.safetensors`` (the contrast pairs, training pairs first;
`ProbePairs.load`), each method's
direction at its best layer under ``directions/`` (`LinearDirection.load`),
and the accuracy figure.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.model import Model
from ..store import model_record, new_run
from .results import ContrastPair, ProbePairs, ProbeResults
from .sweep import probe_layers


def probe_run(
    model: Model,
    pairs: Sequence[ContrastPair],
    out: str | Path,
    *,
    dataset: str = "custom",
    test: int = 400,
    layers: Sequence[int] | None = None,
    restarts: int = 10,
    epochs: int = 1000,
    chat: bool | None = None,
    seed: int = 0,
    progress: bool = True,
) -> ProbeResults:
    """Probe every layer (`probe_layers`) and write the run folder `out`.

    Example::

        probe_run(model, sentiment_pairs(limit=1000), "runs/probe-sentiment", dataset="sentiment")
    """
    config: dict[str, Any] = {
        "model": model_record(model), "dataset": dataset, "n_pairs": len(pairs), "test": test,
        "layers": list(layers) if layers is not None else None, "restarts": restarts,
        "epochs": epochs, "chat": chat, "seed": seed,
    }  # fmt: skip
    with new_run("probe", out, config) as run:
        t0 = time.perf_counter()
        results = probe_layers(model, pairs, test=test, layers=layers, restarts=restarts,
                               epochs=epochs, chat=chat, seed=seed, progress=progress)  # fmt: skip
        ProbePairs(list(pairs), results.n_train, dataset).save(run.dir / "pairs.safetensors")
        results.save(run.dir / "probes.safetensors")
        results.save_directions(run.dir / "directions")
        results.figure(run.figures / "accuracy")
        run.extra["summary"] = repr(results)
        run.timed("probe", t0)
        run.finish()
    return results

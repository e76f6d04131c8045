"""The run folders of the superposition toy models (``mechscope toy``).

`toy_run` trains the sparsity sweep (ReLU and linear) and the phase diagram of
Elhage et al. (2022) and writes them with their figures.

Example: ``toy_run("runs/toy", steps=2000)["relu"].features_represented()``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from ..store import new_run
from .results import ToyResult
from .toy import (
    DEFAULT_SPARSITIES,
    _check,
    features_represented,
    phase_diagram,
    train_toy,
)
from .toy_figures import plot_features_represented, plot_phase_diagram, plot_sparsity_sweep


def toy_run(
    out: str | Path,
    *,
    n_features: int = 20,
    d_hidden: int = 5,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    decay: float = 0.7,
    steps: int = 3000,
    seed: int = 0,
    phase: bool = True,
    phase_steps: int = 1000,
) -> dict[str, ToyResult]:
    """Train the sparsity sweep (ReLU and linear) and the phase diagram; write a run folder.

    The folder holds config.json, ``relu``/``linear``/``phase.safetensors``,
    summary.json and figures/. Returns the results by name.

    Example: ``toy_run("runs/toy", steps=2000)["relu"].features_represented()`` → one count
    per sparsity, rising as features get sparser.
    """
    _check(n_features, d_hidden, sparsities, steps)
    sweep = {"sparsities": list(sparsities), "decays": [decay], "steps": steps, "seed": seed}
    config = {"n_features": n_features, "d_hidden": d_hidden, **sweep, "phase": phase}
    config["phase_steps"] = phase_steps
    with new_run("toy", out, config) as run:
        results: dict[str, ToyResult] = {}
        for name, relu in (("relu", True), ("linear", False)):
            start = time.perf_counter()
            results[name] = train_toy(n_features, d_hidden, relu=relu, **sweep)
            run.timed(name, start)
        if phase:
            start = time.perf_counter()
            results["phase"] = phase_diagram(steps=phase_steps, seed=seed)
            run.timed("phase", start)
        for name, result in results.items():
            result.save(run.dir / f"{name}.safetensors")
        run.write_json("summary.json", {name: r.rows() for name, r in results.items()})
        plot_sparsity_sweep(results["relu"], run.figures / "sparsity_sweep")
        lines = {"ReLU model": results["relu"], "linear model": results["linear"]}
        plot_features_represented(lines, run.figures / "features_represented")
        if phase:
            plot_phase_diagram(results["phase"], run.figures / "phase_diagram")
        run.extra["features_represented"] = features_represented(results["relu"].W).tolist()
        run.finish()
    return results

"""Run folders for feature visualisations, which the viewer serves.

A ``viz`` run holds ``rendering.safetensors`` (every snapshot, `Rendering.load`
reopens it) and two figures: ``grid`` (the final image of each unit) and
``strip`` (each unit at every kept step), as PNG, SVG and HTML.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..core.model import Model
from ..errors import InputError
from ..store import model_record, new_run
from .featureviz import Rendering, channels, render


def viz_run(
    model: Model,
    site: str,
    units: Sequence[int],
    out: str | Path,
    *,
    size: int = 128,
    steps: int = 512,
    thresholds: Sequence[int] = (0, 4, 48),
    lr: float = 0.05,
    seed: int = 0,
    progress: bool = True,
) -> Rendering:
    """Render channels `units` of `site` in one batch and write the run folder `out`."""
    if not units:
        raise InputError("give at least one channel to visualise")
    model.table[site]  # an unknown site fails here, naming the closest ones
    config = {"model": model_record(model), "site": site, "units": list(units), "size": size,
              "steps": steps, "thresholds": list(thresholds), "lr": lr, "seed": seed}  # fmt: skip
    with new_run("viz", out, config) as run:
        t0 = time.perf_counter()
        result = render(model, channels(site, units), size=size, batch=len(units), steps=steps,
                        lr=lr, thresholds=thresholds, seed=seed, progress=progress)  # fmt: skip
        run.timed("render", t0)
        result.save(run.dir / "rendering.safetensors")
        labels = [f"{site}:{u}" for u in units]
        from ..figures import image_grid

        cols = min(8, len(units))
        rows = -(-len(units) // cols)
        final = result.final
        pad = rows * cols - len(units)
        if pad:
            final = torch.cat([final, torch.ones(pad, *final.shape[1:])])
        image_grid(final.view(rows, cols, *final.shape[1:]), run.figures / "grid",
                   title=f"{model.name} {site}", col_labels=None)  # fmt: skip
        result.strip(run.figures / "strip", labels=labels)
        run.extra["summary"] = f"{len(units)} channels of {site}, {steps} steps at {size} px"
        run.finish()
    return result

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
    site: str | Sequence[str],
    units: Sequence[int],
    out: str | Path,
    *,
    size: int = 128,
    steps: int = 512,
    thresholds: Sequence[int] = (0, 4, 48),
    lr: float = 0.05,
    seed: int = 0,
    progress: bool = True,
) -> list[Rendering]:
    """Render channels `units` of each site in `site` (one batch per site) into the run folder `out`.

    With several sites, the grid has one row per site (early → late, the
    progression from edges to objects) and the strip one row per site and unit.

    Example::

        viz_run(load_vision(), ["net._blocks.5", "net._blocks.9"], [0, 1, 2, 3], "runs/viz")
    """
    sites = [site] if isinstance(site, str) else list(site)
    if not units or not sites:
        raise InputError("give at least one site and one channel to visualise")
    for s in sites:
        model.table[s]  # an unknown site fails here, naming the closest ones
    config = {"model": model_record(model), "site": ", ".join(sites), "sites": sites,
              "units": list(units), "size": size, "steps": steps, "thresholds": list(thresholds),
              "lr": lr, "seed": seed}  # fmt: skip
    with new_run("viz", out, config) as run:
        t0 = time.perf_counter()
        results = []
        for s in sites:
            result = render(model, channels(s, units), size=size, batch=len(units), steps=steps,
                            lr=lr, thresholds=thresholds, seed=seed, progress=progress)  # fmt: skip
            results.append(result)
            result.save(run.dir / ("rendering.safetensors" if len(sites) == 1 else
                                   f"rendering-{s.replace('.', '-')}.safetensors"))  # fmt: skip
        run.timed("render", t0)
        from ..image_figures import image_grid

        name = model.name
        if len(sites) == 1:
            cols = min(8, len(units))
            rows = -(-len(units) // cols)
            final = results[0].final
            pad = rows * cols - len(units)
            if pad:
                final = torch.cat([final, torch.ones(pad, *final.shape[1:], device=final.device)])
            image_grid(final.view(rows, cols, *final.shape[1:]), run.figures / "grid",
                       title=f"{name} {sites[0]}", col_labels=None)  # fmt: skip
        else:
            grid = torch.stack([r.final for r in results])  # [site unit 3 h w]
            image_grid(grid, run.figures / "grid", title=f"{name}: channels {list(units)}, early → late",
                       row_labels=sites, col_labels=[f"channel {u}" for u in units])  # fmt: skip
        kept = sorted(results[0].images)
        strip = Rendering({k: torch.cat([r.images[k] for r in results]) for k in kept},
                          " + ".join(r.objective for r in results), results[0].losses)  # fmt: skip
        strip.strip(run.figures / "strip", labels=[f"{s}:{u}" for s in sites for u in units])
        where = sites[0] if len(sites) == 1 else f"{len(sites)} sites ({sites[0]} … {sites[-1]})"
        run.extra["summary"] = f"{len(units)} channels of {where}, {steps} steps at {size} px"
        run.finish()
    return results

"""``mechscope viz``: feature visualisation of a vision model's channels from the shell."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ..errors import InputError
from .options import numbers

console = Console()


def _units(spec: str) -> list[int]:
    try:
        return numbers(spec)
    except ValueError:
        raise InputError(f"--channels takes numbers and ranges like 0-7,12, got {spec!r}") from None


def viz_cmd(
    site: str = typer.Argument(..., help="A module path of the model, e.g. net._blocks.8."),
    model: str = typer.Option("efficientnet-lite0", "--model", help="A built-in vision model."),
    channels: str = typer.Option("0-7", "--channels", help="Channels to render, e.g. 0-7,12."),
    size: int = typer.Option(128, "--size", help="Image side in pixels."),
    steps: int = typer.Option(512, "--steps", help="Optimisation steps."),
    snapshots: str = typer.Option("0,4,48", "--snapshots", help="Steps kept for the strip."),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(None, "--out", help="Run folder (default: runs/viz-SITE)."),
) -> None:
    """Feature visualisation: optimise images to excite channels of one layer (a grid and a strip)."""
    from ..vision import load_vision
    from ..vision.runs import viz_run

    units = _units(channels)
    if size < 16 or steps < 1:
        raise InputError("--size must be at least 16 and --steps at least 1")
    thresholds = _units(snapshots) if snapshots else []
    m = load_vision(model)
    target = out or Path("runs") / f"viz-{site.replace('.', '-')}"
    result = viz_run(m, site, units, target, size=size, steps=steps, thresholds=thresholds,
                     seed=seed)  # fmt: skip
    console.print(f"{result.objective}: score {-result.losses[0]:.3g} → {-result.losses[-1]:.3g} "
                  f"(sum over the batch)", highlight=False)  # fmt: skip
    console.print(f"saved to {target}; view it: mechscope serve {target}")

"""``mechscope viz``: feature visualisation of a vision model's channels from the shell."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ..errors import InputError
from .options import Placement, numbers, placed

console = Console()


MAX_SIZE = 1024  # pixels a side: past it the images and activations outgrow memory


def _units(spec: str, option: str) -> list[int]:
    try:
        units = numbers(spec)
    except ValueError:
        units = []
    if not units:
        raise InputError(f"{option} takes numbers and ranges like 0-7,12, got {spec!r}")
    return units


@placed
def viz_cmd(
    site: str = typer.Argument(..., help="A site: a module path (net._blocks.8; vision: several, "
                               "comma-separated, make the rows of an early → late grid) or an LM site."),
    model: str = typer.Option("efficientnet-lite0", "--model",
                              help="A vision model (efficientnet-lite0, googlenet, torchvision:ARCH, "
                              "timm:ARCH) or a language model spec."),
    weights: Path = typer.Option(None, "--weights", help="Vision: a weights file for --model."),
    channels: str = typer.Option("0-7", "--channels", "--units",
                                 help="Channels (vision) or units (LM) to optimise, e.g. 0-7,12."),
    size: int = typer.Option(128, "--size", help="Vision: image side in pixels."),
    steps: int = typer.Option(None, "--steps", help="Optimisation steps (vision 512, LM 40)."),
    snapshots: str = typer.Option("0,4,48", "--snapshots", help="Vision: steps kept for the strip."),
    harvest: Path = typer.Option(None, "--harvest",
                                 help="LM: a harvest run holding SITE (the top examples to beat)."),
    length: int = typer.Option(10, "--length", help="LM: prompt length in tokens."),
    fluency: float = typer.Option(0.1, "--fluency", help="LM: weight of the prompt's NLL."),
    start: str = typer.Option("top", "--start",
                              help="LM: start from the top example's text (top) or random tokens."),
    soft_steps: int = typer.Option(0, "--soft-steps", help="LM: also a soft prompt of this many steps."),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(None, "--out", help="Run folder (default: runs/viz-SITE)."),
    *,
    place: Placement,
) -> None:  # fmt: skip
    """Optimised inputs: images that excite a vision model's channels (a grid and a strip), or
    prompts (GCG, and soft) that excite a language model's units, beside their top dataset examples."""
    from ..vision import is_vision_spec

    units = _units(channels, "--channels/--units")
    target = out or Path("runs") / f"viz-{site.replace('.', '-')}"
    if not is_vision_spec(model):
        _prompts(site, model, place, units, harvest, target, steps=steps or 40, length=length,
                 fluency=fluency, start=start, soft_steps=soft_steps, seed=seed)  # fmt: skip
        return
    from ..vision import load_vision
    from ..vision.runs import viz_run

    steps = 512 if steps is None else steps
    if not 16 <= size <= MAX_SIZE or steps < 1:
        raise InputError(
            f"--size must be 16 to {MAX_SIZE} and --steps at least 1; got {size}, {steps}"
        )
    thresholds = _units(snapshots, "--snapshots") if snapshots else []
    m = load_vision(model, weights=weights, device=place.device, dtype=place.torch_dtype)
    results = viz_run(m, site.split(","), units, target, size=size, steps=steps,
                      thresholds=thresholds, seed=seed)  # fmt: skip
    for result in results:
        console.print(f"{result.objective}: score {-result.losses[0]:.3g} → {-result.losses[-1]:.3g} "
                      f"(sum over the batch)", highlight=False)  # fmt: skip
    console.print(f"saved to {target}; view it: mechscope serve {target}")


def _prompts(site: str, model: str, place: Placement, units: list[int], harvest: Path | None,
             target: Path, **options: object) -> None:  # fmt: skip
    from ..harvest import open_harvest
    from ..prompts import prompts_run

    if harvest is None:
        raise InputError("a language model's units are compared with their top dataset examples: "
                         "give --harvest, a run of `mechscope harvest` that holds the site")  # fmt: skip
    if options["start"] not in ("top", "random"):
        raise InputError(f"--start takes top or random, got {options['start']!r}")
    store = open_harvest(harvest)
    m = place.load(model)
    rows = prompts_run(m, [(site, u) for u in units], store, target, **options)  # type: ignore[arg-type]
    console.print(rows)  # a PromptComparisons: the table and the tally
    console.print(f"saved to {target}; view it: mechscope serve {target}")

"""``mechscope weights conv|lm``: circuits read from weights, from the shell."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ..display import lm_weights
from ..errors import InputError
from .options import Placement, placed
from .viz import MAX_SIZE

console = Console()
weights_app = typer.Typer(
    help="Circuits in the weights: conv expanded weights; OV/QK circuits and virtual weights.",
    no_args_is_help=True,
)


def _pairs(specs: list[str], what: str) -> list[tuple[int, int]]:
    out = []
    for spec in specs:
        layer, sep, index = spec.partition(".")
        if not (sep and layer.isdigit() and index.isdigit()):
            raise InputError(f"--{what} takes LAYER.INDEX such as 12.100, got {spec!r}")
        out.append((int(layer), int(index)))
    return out


@weights_app.command("conv")
@placed
def conv_cmd(
    src: str = typer.Argument(..., help="The earlier site, e.g. net._blocks.11."),
    dst: str = typer.Argument(..., help="The later site, e.g. net._blocks.12."),
    unit: int = typer.Option(..., "--unit", help="The channel of DST whose inputs to read."),
    model: str = typer.Option("efficientnet-lite0", "--model", help="A vision model (as for viz)."),
    weights: Path = typer.Option(None, "--weights", help="A weights file for --model."),
    k: int = typer.Option(6, "--k", help="Exciting and inhibiting channels shown."),
    viz_steps: int = typer.Option(256, "--viz-steps", help="Steps per visualisation (0: none)."),
    viz_size: int = typer.Option(96, "--viz-size", help="Visualisation side in pixels."),
    out: Path = typer.Option(None, "--out", help="Run folder (default: runs/weights-DST-UNIT)."),
    *,
    place: Placement,
) -> None:
    """Expanded weights from every channel of SRC into one channel of DST (the car-detector figure)."""
    from .. import weights as w
    from ..vision import load_vision

    if k < 1 or viz_steps < 0 or not 16 <= viz_size <= MAX_SIZE:
        raise InputError(
            f"--k must be at least 1, --viz-steps at least 0, --viz-size 16 to {MAX_SIZE}"
        )
    m = load_vision(model, weights=weights, device=place.device, dtype=place.torch_dtype)
    target = out or Path("runs") / f"weights-{dst.replace('.', '-')}-{unit}"
    result = w.conv_weights_run(m, src, dst, unit, target, k=k, viz_size=viz_size,
                                viz_steps=viz_steps)  # fmt: skip
    console.print(result.render(k))
    console.print(f"saved to {target}; view it: mechscope serve {target}")


@weights_app.command("lm")
@placed
def lm_cmd(
    neuron: list[str] = typer.Option([], "--neuron", help="LAYER.NEURON, repeatable (12.100)."),
    head: list[str] = typer.Option([], "--head", help="LAYER.HEAD, repeatable (27.1)."),
    model: str = typer.Option("smollm2-135m", "--model", help="Model spec (default: SmolLM2)."),
    via: str = typer.Option(None, "--via", help="Gated MLPs: read the neuron's gate or up input."),
    k: int = typer.Option(10, "--k", help="Entries per ranking."),
    out: Path = typer.Option(Path("runs/weights-lm"), "--out", help="Run folder."),
    *,
    place: Placement,
) -> None:
    """OV/QK circuits and composition of heads, virtual weights into neurons, copying scores."""
    from ..weights.runs import lm_weights_run

    neurons, heads = _pairs(neuron, "neuron"), _pairs(head, "head")
    m = place.load(model)
    summary = lm_weights_run(m, out, neurons=neurons, heads=heads, k=k, via=via)
    console.print(lm_weights(summary, out, neurons, k))
    console.print(f"saved to {out}; view it: mechscope serve {out}")

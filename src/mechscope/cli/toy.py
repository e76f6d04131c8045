"""``mechscope toy``: toy models of superposition (Elhage et al. 2022) from the shell."""

from __future__ import annotations

from pathlib import Path

import torch
import typer
from rich.console import Console
from rich.table import Table

from ..errors import InputError
from .options import Placement, floats, placed

console = Console()


@placed
def toy_cmd(
    n: int = typer.Option(20, "--n", help="Features n."),
    m: int = typer.Option(5, "--m", help="Hidden dimensions m (fewer than n)."),
    sparsities: str = typer.Option(
        None,
        "--sparsities",
        help="Sparsities S in [0, 1), comma-separated, e.g. 0,0.9,0.99,0.999 "
        "(default: 1 − S from 1 down to 0.001 in 8 log steps).",
    ),
    decay: float = typer.Option(0.7, "--decay", help="Importance of feature i is DECAY**i."),
    steps: int = typer.Option(3000, "--steps", help="Adam steps."),
    seed: int = typer.Option(0, "--seed"),
    phase: bool = typer.Option(
        True, "--phase/--no-phase", help="Also train the one-extra-feature phase diagram."
    ),
    out: Path = typer.Option(Path("runs/toy"), "--out", help="Run folder to write."),
    *,
    place: Placement,
) -> None:
    """Train toy models of superposition over sparsities; print features represented; write a run."""
    from ..sae.runs import toy_run
    from ..sae.toy import DEFAULT_SPARSITIES

    if place.torch_device.type != "cpu" or place.torch_dtype != torch.float32:
        # a few hundred parameters per model, trained as one batched tensor: a GPU has nothing to do
        raise InputError(
            "toy models of superposition train on the CPU in float32 (they are a few hundred "
            f"parameters each); drop --device {place.device} / --dtype {place.dtype}"
        )
    chosen = None if sparsities is None else floats(sparsities, "--sparsities")
    results = toy_run(
        out,
        n_features=n,
        d_hidden=m,
        sparsities=DEFAULT_SPARSITIES if chosen is None else chosen,
        decay=decay,
        steps=steps,
        seed=seed,
        phase=phase,
    )
    table = Table(title=f"toy model, n={n} features in m={m} dimensions, importance {decay}^i")
    for column in ("sparsity S", "1 − S", "features represented", "dims per feature", "loss"):
        table.add_column(column, justify="right")
    table.add_column("linear model", justify="right")
    linear = results["linear"].rows()
    for row, lin in zip(results["relu"].rows(), linear, strict=True):
        table.add_row(
            f"{row['sparsity']:.4g}",
            f"{1 - row['sparsity']:.2g}",
            str(row["features_represented"]),
            f"{row['dims_per_feature']:.3f}",
            f"{row['loss']:.3g}",
            str(lin["features_represented"]),
        )
    console.print(table)
    console.print(f"figures in {out / 'figures'}; view it: mechscope serve {out}")

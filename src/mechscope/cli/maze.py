"""``mechscope maze train|eval|steer``: the shard-theory maze agent from the shell."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from ..display import maze_behaviour, maze_steering
from ..errors import InputError
from .options import Placement, floats, numbers, placed

console = Console()
maze_app = typer.Typer(
    help="The maze agent: train a policy with cheese in the top-right corner, measure its "
    "misgeneralisation, steer it with the cheese vector and retarget it.",
    no_args_is_help=True,
)
POLICY_ARG = typer.Argument(
    Path("runs/maze-train"), help="A maze-train run folder or a policy .safetensors file."
)


@maze_app.command("train")
@placed
def train_cmd(
    steps: int = typer.Option(6000, "--steps", help="Optimiser steps of 256 squares each."),
    region: int = typer.Option(5, "--region", help="Cheese lies in the top-right REGION×REGION squares."),
    mazes: int = typer.Option(20_000, "--mazes", help="Training mazes."),
    eval_mazes: int = typer.Option(500, "--eval-mazes", help="Held-out mazes for the reach rate."),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(Path("runs/maze-train"), "--out", help="Run folder."),
    *,
    place: Placement,
) -> None:  # fmt: skip
    """Train the maze policy by imitating shortest paths to cheese in the top-right corner."""
    from ..maze import train_run

    if steps < 1 or mazes < 1 or eval_mazes < 1:
        raise InputError("--steps, --mazes and --eval-mazes must be positive")
    train_run(out, steps=steps, region=region, n_mazes=mazes, seed=seed, n_eval=eval_mazes,
              device=place.device)  # fmt: skip
    record = json.loads((out / "run.json").read_text())
    console.print(record["summary"], highlight=False)
    console.print(
        f"policy: {out / 'policy.safetensors'}; figures in {out / 'figures'}", highlight=False
    )


@maze_app.command("eval")
@placed
def eval_cmd(
    policy: Path = POLICY_ARG,
    mazes: int = typer.Option(1000, "--mazes", help="Mazes of each kind (training, deployment)."),
    seed: int = typer.Option(1, "--seed"),
    out: Path = typer.Option(Path("runs/maze-eval"), "--out", help="Run folder."),
    *,
    place: Placement,
) -> None:  # fmt: skip
    """Where the mouse goes: cheese reached in training vs deployment mazes, by distance; vector fields."""
    from ..maze import eval_run
    from ..maze.reports import BehaviourReport

    eval_run(policy, out, n=mazes, seed=seed, device=place.device)
    console.print(maze_behaviour(BehaviourReport.load(out / "report.safetensors")))
    console.print(f"figures in {out / 'figures'}", highlight=False)


@maze_app.command("steer")
@placed
def steer_cmd(
    policy: Path = POLICY_ARG,
    site: str = typer.Option("block2.res1", "--site", help="Where the cheese vector is added."),
    coeffs: str = typer.Option("0,-0.5,-1,-2", "--coeffs", help="Coefficients of the cheese vector."),
    retarget_site: str = typer.Option("block1.res2", "--retarget-site", help="Where channels are edited."),
    channels: str = typer.Option("4,6,8", "--channels", help="How many cheese channels to try editing."),
    strengths: str = typer.Option("1,2,3", "--strengths", help="Edit strengths to try."),
    mazes: int = typer.Option(200, "--mazes", help="Mazes with a decision square (and retargeting trials)."),
    seed: int = typer.Option(2, "--seed"),
    out: Path = typer.Option(Path("runs/maze-steer"), "--out", help="Run folder."),
    *,
    place: Placement,
) -> None:  # fmt: skip
    """Subtract the cheese vector (and a control) at decision squares; retarget by editing channels."""
    from ..maze import steer_run

    try:
        counts = numbers(channels)
    except ValueError:
        raise InputError(f"--channels takes counts such as 4,8, got {channels!r}") from None
    report = steer_run(policy, out, n=mazes, site=site, coeffs=floats(coeffs, "--coeffs"),
                       retarget_site=retarget_site, channel_counts=counts,
                       strengths=floats(strengths, "--strengths"), seed=seed,
                       device=place.device)  # fmt: skip
    console.print(maze_steering(report))
    console.print(f"figures in {out / 'figures'}", highlight=False)

"""Terminal renderings of what is not one `Result`, shared by the CLI and the tour.

A result prints itself (``console.print(result)``, through its `__rich__`); the
functions here render the rest: a model's next tokens, an explain run's score
summary, a weights-lm run (its head circuits and neurons), and the reports of the maze
runs. Each returns a rich renderable; the caller prints it on its own console.
No torch is imported.

Example::

    console.print(score_table(result.summary.records(), "16 units"))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from jaxtyping import Float
    from torch import Tensor

    from .core.model import Model
    from .maze.reports import BehaviourReport, SteerReport
    from .weights.results import HeadCircuits

__all__ = [
    "lm_weights",
    "maze_behaviour",
    "maze_steering",
    "score_table",
    "top_tokens",
]


def top_tokens(model: Model, prompt: str, logits: Float[Tensor, " vocab"], k: int) -> Group:
    """The `k` most likely next tokens after `prompt`, from its last position's `logits`.

    Example: ``console.print(top_tokens(model, p, model.run(p).logits[0, -1], 5))``.
    """
    probs = logits.float().softmax(-1)
    top = probs.topk(min(k, probs.numel()))
    table = Table()
    table.add_column("#", justify="right")
    table.add_column("token")
    table.add_column("prob", justify="right")
    table.add_column("logit", justify="right")
    for rank, (p, i) in enumerate(zip(top.values.tolist(), top.indices.tolist(), strict=True)):
        token = model.tokenizer.decode([i]) if model.tokenizer is not None else str(i)
        table.add_row(str(rank + 1), repr(token), f"{p:.3f}", f"{logits[i].item():.2f}")
    return Group(Text.assemble("next token after ", (repr(prompt), "bold")), table)


def score_table(summary: Sequence[Mapping[str, Any]], what: str) -> Table:
    """An explain run's summary: mean score per method and scorer with its 95% CI.

    Example: ``console.print(score_table(explain_run(...).summary.records(), "16 units"))``.
    """
    table = Table(title=f"{what}: mean score (95% bootstrap CI)")
    for col in ("method", "scorer", "mean", "95% CI", "units"):
        table.add_column(col)
    for row in summary:
        table.add_row(
            row["method"],
            row["scorer"],
            f"{row['mean']:.3f}",
            f"[{row['lo']:+.3f}, {row['hi']:+.3f}]",
            str(row["n"]),
        )
    return table


def lm_weights(
    circuits: HeadCircuits, out: Path, neurons: Sequence[tuple[int, int]], k: int
) -> Group:
    """A weights-lm run: its `HeadCircuits`, then each neuron's saved `NeuronWiring` (top `k`).

    Example: ``console.print(lm_weights(lm_weights_run(model, out), out, [(12, 100)], 5))``.
    """
    from .weights.results import NeuronWiring, wiring_file

    wirings = [NeuronWiring.load(out / wiring_file(layer, n)).render(k) for layer, n in neurons]
    return Group(circuits.render(), *wirings)


def _fmt(x: object) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def maze_behaviour(report: BehaviourReport) -> Group:
    """A maze-eval run's `BehaviourReport`: reach rates and the two binnings by distance.

    Example: ``console.print(maze_behaviour(BehaviourReport.load("runs/maze-eval/report")))``.
    """
    r = report
    parts: list[Table | Text] = [Text(
        f"cheese reached: training mazes {r.train_reach:.1%} ({r.train_mazes}), deployment "
        f"mazes {r.deploy_reach:.1%} ({r.deploy_mazes}; top-right corner first {r.corner_first:.1%})"
    )]  # fmt: skip
    for bins, what in ((r.by_corner_distance, "cheese ↔ top-right corner"),
                       (r.by_decision_distance, "cheese ↔ decision square")):  # fmt: skip
        table = Table(title=f"deployment mazes by distance {what} (Euclidean, squares)")
        head = ("distance", "mazes", "cheese reached", "corner first", "P(→cheese)", "P(→corner)")
        for col in head:  # P(→…): at the decision square
            table.add_column(col, justify="right")
        for b in bins:
            table.add_row(f"{b.lo:g}–{b.hi:g}", str(b.mazes), _fmt(b.cheese), _fmt(b.corner),
                          _fmt(b.p_cheese), _fmt(b.p_corner))  # fmt: skip
        parts.append(table)
    return Group(*parts)


def maze_steering(report: SteerReport) -> Group:
    """A maze-steer run's `SteerReport`: the cheese vector sweep with its control, the cheese
    channels, and the retargeting result.

    Example: ``console.print(maze_steering(steer_run(policy, Path("runs/maze-steer"))))``.
    """
    table = Table(title=f"P(toward cheese) at {report.mazes} decision squares, "
                  f"vector added at {report.site}")  # fmt: skip
    for col in ("coefficient", "cheese vector", "control"):
        table.add_column(col, justify="right")
    for p in report.sweep:
        table.add_row(f"{p.coeff:g}", _fmt(p.cheese_vector), _fmt(p.control))
    pairs = list(zip(report.channel_order, report.correlation, strict=True))[:6]
    top = ", ".join(f"{c} ({r:.2f})" for c, r in pairs)
    rt = report.retarget
    return Group(
        table,
        Text(f"channels of {rt.site} tracking the cheese (Pearson r, largest |r| first): {top}"),
        Text(
            f"retargeting channels {rt.channels} × {rt.strength:g}: the mouse reached the "
            f"chosen square in {rt.reached:.1%} of {rt.mazes} cheese-free mazes (without the "
            f"edit {rt.reached_plain:.1%}; a real cheese there is reached in "
            f"{rt.reached_cheese:.1%})"
        ),
    )

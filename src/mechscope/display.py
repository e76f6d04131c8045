"""Terminal renderings of what is not one `Result`, shared by the CLI and the tour.

A result prints itself (``console.print(result)``, through its `__rich__`); the
functions here render the rest: a model's next tokens, an explain run's score
summary, GCG prompts beside their top examples, the head circuits of a
weights-lm run, and the JSON records of the maze runs. Each returns a rich
renderable; the caller prints it on its own console. No torch is imported.

Example::

    console.print(score_table(result.summary, "16 units"))
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
    from .prompts import UnitComparison

__all__ = [
    "head_circuits",
    "lm_weights",
    "maze_behaviour",
    "maze_steering",
    "prompt_table",
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

    Example: ``console.print(score_table(explain_units(...).summary, "16 units"))``.
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


def prompt_table(rows: Sequence[UnitComparison]) -> Group:
    """Each unit's top dataset example beside its GCG prompt (and soft prompt), and the tally.

    Example: ``console.print(prompt_table(prompts_run(model, units, store, out)))``.
    """
    soft = any(r.soft for r in rows)
    table = Table(
        title="optimised prompts against the top dataset example (activation at the last token)"
    )
    for col in (
        "unit",
        "top example (…peak)",
        "act",
        "GCG prompt",
        "act",
        "NLL",
        *(("soft", "→ text") if soft else ()),
    ):
        table.add_column(
            col, justify="right" if col in ("act", "NLL", "soft", "→ text") else "left"
        )
    for r in rows:
        extra = (f"{r.soft.activation:.1f}", f"{r.soft.projected_activation:.2f}") if r.soft else ()
        table.add_row(f"{r.site.split('.')[1]}.{r.unit}", repr("".join(r.top_context[-8:])),
                      f"{r.top_act:.2f}", repr(r.gcg.text), f"{r.gcg.activation:.2f}", f"{r.gcg.nll:.1f}",
                      *extra)  # fmt: skip
    wins = sum(r.gcg.activation > r.top_act for r in rows)
    return Group(table, f"GCG beats the top example on {wins} of {len(rows)} units")


def head_circuits(summary: Mapping[str, Mapping[str, Any]]) -> Group:
    """Per head of a weights-lm summary: its OV circuit on tokens, and its strongest composition.

    Example: ``console.print(head_circuits(lm_weights_run(model, out, heads=[(27, 1)])))``.
    """
    parts: list[Table | Text] = []
    for name, info in summary.items():
        table = Table(
            title=f"head {name} (copying score {info['copying']:.3f}): OV, source → top outputs"
        )
        table.add_column("source")
        table.add_column("raises")
        for src, top in info["ov"].items():
            table.add_row(repr(src), ", ".join(repr(t) for t, _ in top[:6]))
        parts.append(table)
        comp = ", ".join(f"{kind}: " + " ".join(f"{a}.{b} ({v:.2f})" for a, b, v in rows[:3])
                         for kind, rows in info["composition"].items())  # fmt: skip
        parts.append(Text(f"strongest composition from earlier heads — {comp}"))
    return Group(*parts)


def lm_weights(
    summary: Mapping[str, Mapping[str, Any]], out: Path, neurons: Sequence[tuple[int, int]], k: int
) -> Group:
    """A weights-lm run: `head_circuits`, then each neuron's saved `NeuronWiring` (top `k`).

    Example: ``console.print(lm_weights(summary, Path("runs/weights-lm"), [(12, 100)], 5))``.
    """
    from .weights.results import NeuronWiring, wiring_file

    wirings = [NeuronWiring.load(out / wiring_file(layer, n)).render(k) for layer, n in neurons]
    return Group(head_circuits(summary), *wirings)


def _fmt(x: object) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def maze_behaviour(record: Mapping[str, Any]) -> Group:
    """A maze-eval run's ``behaviour.json``: reach rates and the two binnings by distance.

    Example: ``console.print(maze_behaviour(json.loads(Path("runs/maze-eval/behaviour.json").read_text())))``.
    """
    parts: list[Table | Text] = [Text(
        f"cheese reached: training mazes {record['train']['reach']:.1%} "
        f"({record['train']['mazes']}), deployment mazes {record['deploy']['reach']:.1%} "
        f"({record['deploy']['mazes']}; top-right corner first {record['deploy']['corner_first']:.1%})"
    )]  # fmt: skip
    for key, what in (("by_corner_distance", "cheese ↔ top-right corner"),
                      ("by_decision_distance", "cheese ↔ decision square")):  # fmt: skip
        table = Table(title=f"deployment mazes by distance {what} (Euclidean, squares)")
        head = ("distance", "mazes", "cheese reached", "corner first", "P(→cheese)", "P(→corner)")
        for col in head:  # P(→…): at the decision square
            table.add_column(col, justify="right")
        for r in record[key]:
            table.add_row(f"{r['from']:g}–{r['to']:g}", str(r["mazes"]), _fmt(r["cheese"]),
                          _fmt(r["corner"]), _fmt(r["p_cheese"]), _fmt(r["p_corner"]))  # fmt: skip
        parts.append(table)
    return Group(*parts)


def maze_steering(record: Mapping[str, Any]) -> Group:
    """A maze-steer run's record: the cheese vector sweep with its control, the cheese
    channels, and the retargeting result.

    Example: ``console.print(maze_steering(steer_run(policy, Path("runs/maze-steer"))))``.
    """
    table = Table(title=f"P(toward cheese) at {record['mazes']} decision squares, "
                  f"vector added at {record['site']}")  # fmt: skip
    for col in ("coefficient", "cheese vector", "control"):
        table.add_column(col, justify="right")
    for r in record["sweep"]:
        table.add_row(f"{r['coeff']:g}", _fmt(r["cheese_vector"]), _fmt(r["control"]))
    ch = record["channels"]
    top = ", ".join(
        f"{c} ({r:.2f})" for c, r in list(zip(ch["order"], ch["correlation"], strict=True))[:6]
    )
    rt = record["retarget"]
    return Group(
        table,
        Text(f"channels of {ch['site']} tracking the cheese (Pearson r, largest |r| first): {top}"),
        Text(
            f"retargeting channels {rt['channels']} × {rt['strength']:g}: the mouse reached the "
            f"chosen square in {rt['reached']:.1%} of {rt['mazes']} cheese-free mazes (without the "
            f"edit {rt['reached_plain']:.1%}; a real cheese there is reached in "
            f"{rt['reached_cheese']:.1%})"
        ),
    )

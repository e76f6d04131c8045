"""The results of prompt optimisation, on the one `Result` contract, readable without torch.

`PromptResult` is the best prompt found for one unit (by GCG or as a soft
prompt), `UnitComparison` one unit's prompts beside its top dataset example,
and `PromptComparisons` a ``prompts`` run's units in order
(``comparisons.safetensors``; `mechscope.prompts.prompts_run` writes it). The
prompt searches themselves are in `mechscope.prompts` (torch).

Example::

    rows = PromptComparisons.load("runs/prompts/comparisons.safetensors", arrays="numpy")
    rows.wins, rows.units[0].gcg.text      # units where GCG beats the top example, one prompt
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import InputError
from .results import Result, result

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = ["PromptComparisons", "PromptResult", "UnitComparison"]


@dataclass
class PromptResult:
    """The best prompt found for one unit, and how the search went.

    Example::

        r = hard_prompt(model, "blocks.10.mlp.post", 42)
        r.text, r.activation, r.nll                    # the prompt, the unit on it, nats per token
    """

    site: str
    unit: int
    method: str  # "gcg" or "soft"
    ids: list[int]  # the free tokens (after the prefix); for "soft", the nearest tokens
    text: str
    activation: float  # the unit at the last token (for "soft": of the embeddings themselves)
    nll: float  # mean negative log-likelihood of the free tokens, nats per token
    history: list[float] = field(default_factory=list)  # the best objective after each step
    projected_activation: float | None = None  # "soft" only: the nearest tokens' activation


@dataclass
class UnitComparison:
    """One unit: the GCG prompt (and soft prompt) beside its top dataset example.

    Example::

        (row,) = compare_units(model, [("blocks.10.mlp.post", 42)], open_harvest("runs/harvest"))
        row.ratio, row.gcg.text, "".join(row.top_context)
    """

    site: str
    unit: int
    gcg: PromptResult
    top_act: float  # the harvest's largest activation of the unit
    top_context: list[str]  # the top example's tokens up to and including its peak (the last 16)
    soft: PromptResult | None = None

    @property
    def ratio(self) -> float:
        """GCG activation / top example activation (> 1: the prompt wins)."""
        return self.gcg.activation / self.top_act if self.top_act > 0 else math.inf

    @property
    def wins(self) -> bool:
        """True where the GCG prompt excites the unit more than its top dataset example."""
        return self.gcg.activation > self.top_act


@result
class PromptComparisons(Result):
    """The units of a ``prompts`` run, in order: each one's prompts beside its top example.

    Example::

        rows = prompts_run(model, units, store, "runs/prompts")   # a PromptComparisons
        console.print(rows)                                       # the table and the tally
        PromptComparisons.load("runs/prompts/comparisons.safetensors") == rows   # True
    """

    format = "mechscope.prompt_comparisons/1"

    units: list[UnitComparison]

    def __post_init__(self) -> None:
        for i, u in enumerate(self.units):
            if not isinstance(u, UnitComparison) or not isinstance(u.gcg, PromptResult):
                raise InputError(f"prompt comparisons: unit {i} is not a UnitComparison")
            if not all(isinstance(t, str) for t in u.top_context):
                raise InputError(f"prompt comparisons: the top context of unit {i} is not tokens")

    @property
    def wins(self) -> int:
        """On how many units the GCG prompt beats the top dataset example."""
        return sum(u.wins for u in self.units)

    @property
    def soft(self) -> bool:
        """True when some unit has a soft prompt."""
        return any(u.soft is not None for u in self.units)

    def summary(self) -> str:
        return f"GCG beats the top dataset example on {self.wins} of {len(self.units)} units"

    def __rich__(self) -> RenderableType:
        """Each unit's top dataset example beside its GCG prompt (and soft prompt), the tally."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(
            title="optimised prompts against the top dataset example (activation at the last token)"
        )
        right = ("act", "NLL", "soft", "→ text")
        cols = ["unit", "top example (…peak)", "act", "GCG prompt", "act", "NLL"]
        for col in cols + (["soft", "→ text"] if self.soft else []):
            table.add_column(col, justify="right" if col in right else "left")
        for r in self.units:
            extra = []
            if self.soft:
                s = r.soft
                proj = s.projected_activation if s is not None else None
                extra = [
                    f"{s.activation:.1f}" if s is not None else "—",
                    f"{proj:.2f}" if proj is not None else "—",
                ]
            table.add_row(
                f"{r.site.split('.')[1] if '.' in r.site else r.site}.{r.unit}",
                repr("".join(r.top_context[-8:])),
                f"{r.top_act:.2f}",
                repr(r.gcg.text),
                f"{r.gcg.activation:.2f}",
                f"{r.gcg.nll:.1f}",
                *extra,
            )
        tally = f"GCG beats the top example on {self.wins} of {len(self.units)} units"
        return Group(table, Text(tally))

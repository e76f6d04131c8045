"""What a harvest says about one unit, as a result that saves and reopens without torch.

`UnitRecord` (the statistics, activation histogram and top and random
examples of one unit, as `HarvestStore.unit` reads them from the Parquet
tables) is a frozen `Result`: ``record.save("unit-342")`` writes one
safetensors file, ``UnitRecord.load(path)`` reopens it. Its parts,
`UnitStats` and `Example`, are plain frozen dataclasses.

Example::

    record = open_harvest("runs/harvest").unit("blocks.12.mlp.post", 345)
    record.top[0].tokens[record.top[0].max_pos]    # the token of its top activation
"""

from __future__ import annotations

from dataclasses import dataclass

from ..results import Result, result


@dataclass(frozen=True)
class UnitStats:
    """Statistics of one unit over every harvested token.

    Example: ``store.stats("blocks.12.mlp.post", 345).frac_active`` → a share in [0, 1].
    """

    site: str
    unit: int
    count: int
    mean: float
    std: float
    max: float
    frac_active: float


@dataclass(frozen=True)
class Example:
    """One window shown for a unit: its tokens and the unit's activation on each.

    Example: ``ex = store.unit("blocks.12.mlp.post", 345).top[0]``; ``ex.tokens[ex.max_pos]``.
    """

    kind: str  # "top" or "random"
    rank: int
    window: int
    tokens: list[str]
    acts: list[float]
    max_act: float
    max_pos: int


@result
class UnitRecord(Result):
    """Everything a unit page shows. `hist_edges` has one more entry than `hist_counts`.

    Example: ``store.unit("blocks.12.mlp.post", 345).stats.max`` → ``17.03``.
    """

    format = "mechscope.unit/1"

    stats: UnitStats
    hist_edges: list[float]
    hist_counts: list[int]
    top: list[Example]
    random: list[Example]

    def summary(self) -> str:
        s = self.stats
        peak = ""
        if self.top:
            best = self.top[0]
            if 0 <= best.max_pos < len(best.tokens):
                peak = f"; top example peaks on {best.tokens[best.max_pos]!r}"
        return (
            f"{s.site} unit {s.unit}: max {s.max:.4g}, mean {s.mean:.4g}, std {s.std:.4g}, "
            f"active on {s.frac_active:.1%} of {s.count} tokens; {len(self.top)} top and "
            f"{len(self.random)} random examples{peak}"
        )

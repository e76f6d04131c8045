"""Samples of the harvest package's results: one unit's record."""

from __future__ import annotations

import math

from mechscope.harvest.results import Example, UnitRecord, UnitStats
from mechscope.results import Result


def samples() -> list[Result]:
    stats = UnitStats("blocks.3.mlp.post", 12, 4096, -0.0115, 0.749, 5.5, 0.425)
    top = [
        Example("top", 0, 17, ["<|bos|>", "The", " cat", "\n", "<b>"], [0.0, 1.5, 5.5, -0.25, 2.0],
                5.5, 2),
        Example("top", 1, 3, ["a", " Paris", "&"], [0.5, 4.0, math.nan], 4.0, 1),
    ]  # fmt: skip
    random = [Example("random", 0, 40, ["x", "y"], [-0.5, 0.125], 0.125, 1)]
    edges = [-10.0, -1.0, 0.0, 1.0, 10.0]
    return [UnitRecord(stats, edges, [3, 100, 40, 2], top, random)]

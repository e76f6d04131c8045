"""Samples of the autointerp package's results: an explain run's summary of scores."""

from __future__ import annotations

import math

from mechscope.autointerp.results import ExplainSummary, MethodScore
from mechscope.results import Result


def samples() -> list[Result]:
    nan = math.nan
    rows = [
        MethodScore("llm", "correlation", 0.412, 0.25, 0.57, 3),
        MethodScore("llm", "detection", 0.75, 0.5, 1.0, 3),
        MethodScore("top_tokens", "correlation", -0.125, -0.5, 0.25, 2),
        MethodScore("random", "fuzzing", nan, nan, nan, 0),  # no unit had a score
    ]
    units = [("blocks.1.mlp.post", 0), ("blocks.1.mlp.post", 7), ("blocks.2.mlp.post", 3)]
    return [ExplainSummary(rows, units, 1), ExplainSummary([])]

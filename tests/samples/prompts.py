"""Samples of the prompts results: units with and without soft prompts, and none at all."""

from __future__ import annotations

from mechscope.prompts_results import PromptComparisons, PromptResult, UnitComparison
from mechscope.results import Result


def samples() -> list[Result]:
    gcg = PromptResult("blocks.3.mlp.post", 12, "gcg", [5, 6], " cat <b>sat</b>", 6.0, 3.25,
                       [1.0, 2.5, float("nan")])  # fmt: skip
    soft = PromptResult("blocks.3.mlp.post", 12, "soft", [7], " dog\n&", 12.5, 5.5, [0.5], 2.5)
    rows = PromptComparisons(
        [
            UnitComparison("blocks.3.mlp.post", 12, gcg, 4.0, ["<|endoftext|>", "The", "\n"], soft),
            UnitComparison(
                "blocks.5.mlp.post", 0, PromptResult("blocks.5.mlp.post", 0, "gcg", [], "", 1.0, 0.0),
                0.0, ["z"],
            ),
        ]
    )  # fmt: skip
    return [rows, PromptComparisons([])]

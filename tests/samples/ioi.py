"""Filled-in `IOIDataset`, `HeadScores`, `IOIAttentionScores` and `HeadClassification`."""

from __future__ import annotations

import math

import torch

from mechscope.ioi.results import (
    HeadClassification,
    HeadLabel,
    HeadScores,
    IOIAttentionScores,
    IOIDataset,
    render,
)
from mechscope.results import Result

TEMPLATE = "When {IO} and {S} went to the {PLACE}, {S} gave a {OBJECT} to"


def samples() -> list[Result]:
    gen = torch.Generator().manual_seed(0)
    name_ids = {"Mary": 11, "John": 12, "Anna": 13, "Paul": 14, "Kate": 15}
    fillers = [
        {"IO": "Mary", "S1": "John", "S2": "John", "PLACE": "store", "OBJECT": "drink"},
        {"IO": "Paul", "S1": "Anna", "S2": "Anna", "PLACE": "park", "OBJECT": "book"},
    ]
    tokens = torch.randint(20, 100, (2, 14), generator=gen)
    positions = {
        k: torch.tensor(v) for k, v in {"IO": [2, 2], "S1": [4, 4], "S2": [10, 10]}.items()
    }
    positions["END"] = torch.tensor([13, 13])
    rows = torch.arange(2)
    for key in ("IO", "S1", "S2"):
        tokens[rows, positions[key]] = torch.tensor([name_ids[f[key]] for f in fillers])
    dataset = IOIDataset(
        prompts=[render(TEMPLATE, f) for f in fillers],
        tokens=tokens,
        io_ids=tokens[rows, positions["IO"]],
        s_ids=tokens[rows, positions["S1"]],
        positions=positions,
        template_ids=torch.tensor([0, 0]),
        templates=(TEMPLATE, TEMPLATE.replace("{IO} and {S}", "{S} and {IO}")),
        fillers=fillers,
        name_ids=name_ids,
        seed=3,
        model_name="tiny-llama",
    )
    scores = torch.rand(3, 4, generator=gen)
    scores[0, 0] = math.nan
    induction = HeadScores(
        "induction",
        scores,
        "tiny-llama",
        {"n_prompts": 20, "seq_len": 20, "seed": 0, "data": "repeated_random"},
    )
    copying = HeadScores("copying", torch.randn(3, 4, generator=gen))
    attention = IOIAttentionScores(
        torch.rand(3, 4, generator=gen),
        torch.rand(3, 4, generator=gen),
        torch.rand(3, 4, generator=gen),
        "tiny-llama",
        {"n_prompts": 2, "seed": 3, "corruption": None},
    )
    classes = HeadClassification(
        [
            HeadLabel(2, 1, "induction", 0.875),
            HeadLabel(2, 3, "name_mover", 1.5),
            HeadLabel(1, 0, "s_inhibition", -0.25),
            HeadLabel(1, 2, "s_inhibition_candidate", 0.5),
        ],
        {"top": 5, "z_threshold": 3.0, "copying_z": 1.0, "with_s_inhibition_effect": True},
    )
    return [dataset, dataset.corrupt("ABC"), induction, copying, attention, classes]

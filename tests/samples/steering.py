"""Filled-in steering results: vectors of one and several positions, and a layer × coef sweep."""

from __future__ import annotations

import torch

from mechscope.results import Result
from mechscope.steering.results import SteeringExamples, SteeringSweep, SteeringVector, cell_key


def samples() -> list[Result]:
    g = torch.Generator().manual_seed(2)
    front = SteeringVector(
        torch.randn(5, 16, generator=g),
        8,
        "actadd",
        {"plus": "I talk about weddings", "minus": "I do not talk about weddings", "pad": None},
    )
    every = SteeringVector(
        torch.randn(16, generator=g), 17, "probe:logistic", {"topic": ["wedding", "bride"]}
    )
    layers, coefs = [2, 8], [0.0, 1.0, 4.0]
    shape = (len(layers), len(coefs))
    sweep = SteeringSweep(
        layers=layers,
        coefs=coefs,
        probability=torch.rand(shape, generator=g) * 0.01,
        effect=torch.rand(shape, generator=g),
        perplexity=10 + torch.rand(shape, generator=g) * 3,
        kl=torch.rand(shape, generator=g),
        baseline_probability=0.002,
        baseline_effect=0.0625,
        baseline_perplexity=10.5,
        target="share mentioning wedding/bride…",
        words=["wedding", "bride"],
        method="actadd",
        n_generations=8,
        samples={"unsteered": ["I said hello."],
                 **{cell_key(lay, c): [f"L{lay} × {c:g}: a <b>wedding</b>!"] for lay in layers
                    for c in coefs}},
        max_rise=0.2,
    )  # fmt: skip
    examples = SteeringExamples(
        8,
        4.0,
        ["hello there", "<b>bold</b>"],
        [" friend", " text"],
        [" wedding!", " bride & groom"],
    )
    return [front, every, sweep, examples]

"""Filled-in probe results: one direction with its normaliser, and a sweep with its directions."""

from __future__ import annotations

import torch

from mechscope.probes.results import (
    METHODS,
    Accuracy,
    ContrastPair,
    LinearDirection,
    Normaliser,
    ProbePairs,
    ProbeResults,
)
from mechscope.results import Result


def samples() -> list[Result]:
    g = torch.Generator().manual_seed(1)
    d, layers = 8, [0, 3, 6]

    def normaliser() -> Normaliser:
        return Normaliser(*(torch.randn(d, generator=g) for _ in range(2)),
                          *(torch.rand(d, generator=g) + 0.5 for _ in range(2)))  # fmt: skip

    direction = LinearDirection(torch.randn(d, generator=g), -0.25, 3, "logistic", normaliser())
    bare = LinearDirection(torch.randn(d, generator=g))  # no layer, method or normaliser
    accuracy = {
        m: [Accuracy(0.5 + 0.1 * i, 40, 0.35 + 0.1 * i, 0.65 + 0.1 * i) for i in range(3)]
        for m in METHODS
    }
    results = ProbeResults(
        layers=layers,
        accuracy=accuracy,
        zero_shot=Accuracy(0.532, 40, 0.38, 0.68),
        n_train=60,
        n_test=40,
        ccs_loss=[0.2, 0.1, float("nan")],
        zero_shot_calibrated=Accuracy(0.703, 40, 0.55, 0.82),
        weights={m: torch.randn(len(layers), d, generator=g) for m in METHODS},
        biases={m: [0.0, -0.5, 1.25] for m in METHODS},
        normalisers=[normaliser() for _ in layers],
    )
    uncalibrated = ProbeResults(
        layers=[2],
        accuracy={"logistic": [Accuracy(1.0, 4, 0.51, 1.0)]},
        zero_shot=Accuracy(0.25, 4, 0.05, 0.7),
        n_train=8,
        n_test=4,
    )
    pairs = ProbePairs(
        [ContrastPair("Paris is in <b>France</b>.", True),
         ContrastPair("A good day", False, "positive", "negative", "sentiment", "Tweet: {}?")],
        1,
        "sentiment",
    )  # fmt: skip
    return [direction, bare, results, uncalibrated, pairs]

"""Samples of the weights package's results: expanded conv weights, one neuron's wiring, the
copying scores of every head and the circuits of two heads."""

from __future__ import annotations

import torch

from mechscope.results import Result
from mechscope.weights.results import (
    ConvWeights,
    CopyingScores,
    HeadCircuit,
    HeadCircuits,
    NeuronWiring,
)


def samples() -> list[Result]:
    g = torch.Generator().manual_seed(0)
    conv = ConvWeights("net._blocks.11", "net._blocks.12", 5, torch.randn(8, 3, 5, generator=g))
    wiring = NeuronWiring(
        layer=2, neuron=7, via="gate",
        neurons=torch.randn(4, 16, generator=g), heads=torch.rand(4, 3, generator=g),
        embed=[(" cat", 2.5), ("<script>", 1.5)], logits_up=[(" dog", 3.0)],
        logits_down=[("\n", -1.0), (" the", float("nan"))],
    )  # fmt: skip
    copying = torch.rand(3, 4, generator=g)
    copying[0, 1] = float("nan")
    heads = HeadCircuits([
        HeadCircuit(1, 2, 0.0625, ov={" Paris": [(" Paris", 7.5), ("<script>", 1.0)], "\n": []},
                    qk={" Paris": [(" France", 3.5)]},
                    composition={"q": [(0, 1, 0.25)], "k": [], "v": [(0, 0, 0.5)]}),
        HeadCircuit(2, 0, float("nan")),
    ])  # fmt: skip
    return [conv, wiring, CopyingScores(copying), heads, HeadCircuits([])]

"""Samples of the weights package's results: expanded conv weights and one neuron's wiring."""

from __future__ import annotations

import torch

from mechscope.results import Result
from mechscope.weights.results import ConvWeights, NeuronWiring


def samples() -> list[Result]:
    g = torch.Generator().manual_seed(0)
    conv = ConvWeights("net._blocks.11", "net._blocks.12", 5, torch.randn(8, 3, 5, generator=g))
    wiring = NeuronWiring(
        layer=2, neuron=7, via="gate",
        neurons=torch.randn(4, 16, generator=g), heads=torch.rand(4, 3, generator=g),
        embed=[(" cat", 2.5), ("<script>", 1.5)], logits_up=[(" dog", 3.0)],
        logits_down=[("\n", -1.0), (" the", float("nan"))],
    )  # fmt: skip
    return [conv, wiring]

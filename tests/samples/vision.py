"""Samples of the vision package's results: a feature visualisation's snapshots."""

from __future__ import annotations

import torch

from mechscope.results import Result
from mechscope.vision.results import Rendering


def samples() -> list[Result]:
    g = torch.Generator().manual_seed(0)
    images = {step: torch.rand(2, 3, 8, 8, generator=g) for step in (0, 4, 16)}
    losses = [-0.5 - 0.125 * i for i in range(16)]
    return [Rendering(images, "channels(net._blocks.8:1,3)", losses)]

"""Samples of the transcoders package's results: a transcoder set's evaluation."""

from __future__ import annotations

import torch

from mechscope.results import Result
from mechscope.transcoders.results import TranscoderEval


def samples() -> list[Result]:
    g = torch.Generator().manual_seed(0)
    freqs = [torch.rand(16, generator=g) * 0.2 for _ in range(2)]
    freqs[0][:2] = 0.0  # dead latents
    ev = TranscoderEval(
        model="tiny-llama", layers=[0, 1], tokens=480, predictions=470,
        fvu=torch.tensor([0.0625, 0.125]), mse=torch.tensor([0.5, 0.75]),
        l0=torch.tensor([8.0, 8.0]), cosine=torch.tensor([0.875, 0.8125]), frequencies=freqs,
        ce_clean=3.25, ce_replaced=3.5, ce_with_errors=3.25, ce_zero=9.0, kl_replaced=0.0625,
        top1_agreement=0.96875, max_logit_diff_with_errors=0.0, config={"width": 16, "k": 8},
    )  # fmt: skip
    return [ev]

"""Samples of the SAE package's results: an SAE evaluation, a training history and a toy-model
sweep."""

from __future__ import annotations

import torch

from mechscope.results import Result
from mechscope.sae.results import SAEEval, ToyResult, TrainingHistory


def samples() -> list[Result]:
    g = torch.Generator().manual_seed(0)
    freqs = torch.rand(32, generator=g) * 0.2
    freqs[:3] = 0.0  # dead latents
    # cosine left at its default, NaN
    ev = SAEEval(
        site="blocks.1.resid_post", tokens=512, l0=4.0, fvu=0.125, mse=0.5, ce_clean=3.25,
        ce_sae=3.5, ce_zero=9.0, kl_sae=0.0625, frequencies=freqs,
    )  # fmt: skip
    k, m, n = 6, 2, 5
    toy = ToyResult(
        W=torch.randn(k, m, n, generator=g),
        b=torch.randn(k, n, generator=g),
        sparsity=torch.tensor([0.0, 0.9, 0.99] * 2),
        importance=torch.rand(k, n, generator=g),
        loss=torch.rand(k, generator=g),
        grid={"decay": (0.9, 0.5), "sparsity": (0.0, 0.9, 0.99)},
        relu=False,
        config={"steps": 10, "lr": 0.01, "seed": 1, "restarts": 1, "batch_size": 64},
    )
    history = TrainingHistory(
        [
            {"step": 0.0, "tokens": 512.0, "lr": 0.0004, "loss": 1.5, "eval_fvu": 0.5},
            {"step": 3.0, "tokens": 2048.0, "lr": 0.0004, "loss": 0.75, "eval_fvu": float("nan")},
            {"stopped_early_at_step": 4.0},
        ]
    )
    return [ev, toy, history]

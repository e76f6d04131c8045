"""Filled-in `PatchResult`, `AttributionPatching`, `EdgeScores` and `Circuit` for the round trip."""

from __future__ import annotations

import math

import torch

from mechscope.patching.results import AttributionPatching, Circuit, EdgeScores, PatchResult
from mechscope.results import Result


def samples() -> list[Result]:
    gen = torch.Generator().manual_seed(0)
    raw = torch.randn(3, 2, 4, generator=gen)
    values = (raw - 0.1) / 0.9
    values[0, 1, 0] = math.nan  # a sender not below its receivers (path patching)
    patch = PatchResult(
        values=values,
        raw=raw,
        axes=("layer", "head", "pos"),
        labels={
            "layer": ["0", "1", "2"],
            "head": ["0", "1"],
            "pos": ["0:<s>", "1: Mary", "2: and", "3: John"],
        },
        site="attn.z",
        direction="denoise",
        clean_metric=1.0,
        corrupted_metric=0.1,
        meta={"prompts": 2, "positions": 4, "patches": 24, "run": 18},
    )
    heads_by_pos = torch.randn(3, 2, 4, generator=gen)
    attribution = AttributionPatching(
        heads=heads_by_pos.sum(-1),
        heads_by_pos=heads_by_pos,
        mlps=torch.randn(3, generator=gen),
        neurons=torch.randn(3, 8, generator=gen),
        resid=torch.randn(3, 4, generator=gen),
        clean_metric=2.5,
        corrupted_metric=-0.25,
    )
    senders = ["embed", "L0H0", "L0H1", "MLP0", "L1H0", "L1H1", "MLP1"]
    receivers = ["L0H0.q", "L0H1.q", "L0H0.k", "L0H0.v", "MLP0"]
    receivers += ["L1H0.q", "L1H1.q", "L1H0.k", "L1H0.v", "MLP1", "logits"]
    valid = torch.zeros(len(senders), len(receivers), dtype=torch.bool)
    valid[:1, :4] = True
    valid[:3, 4] = True
    valid[:4, 5:9] = True
    valid[:6, 9] = True
    valid[:, 10] = True
    scores = torch.randn(len(senders), len(receivers), generator=gen) * valid
    edge_scores = EdgeScores(
        scores=scores,
        valid=valid,
        senders=senders,
        receivers=receivers,
        metric_clean=2.5,
        metric_corrupted=-0.25,
        n_layers=2,
        n_heads=2,
        n_kv_heads=1,
        model_name="tiny-llama",
        meta={"prompts": 2, "positions": 4, "seconds": 0.125},
    )
    circuit = Circuit(
        nodes=["embed", "L0H1", "L1H0", "MLP1", "logits"],
        edges=[("L1H0", "logits", 0.75), ("L0H1", "L1H0.k", -0.5), ("embed", "MLP1", 0.25)],
        metric_model=2.5,
        metric_circuit=2.0,
        metric_corrupted=-0.25,
        n_layers=2,
        heads_per_layer=2,
        kv_heads_per_layer=1,
        method="acdc",
        threshold=0.05,
        model_name="tiny-llama",
        meta={"tried": 6, "evaluations": 9, "order": "scores", "try_quantile": None},
    )
    eap = Circuit(
        nodes=["embed", "logits"],
        edges=[],
        metric_model=2.5,
        metric_circuit=math.nan,  # not evaluated
        metric_corrupted=-0.25,
        n_layers=2,
        heads_per_layer=2,
        method="eap",
        meta={"top_k_edges": 0, "prune_dangling": True},
    )
    return [patch, attribution, edge_scores, circuit, eap]

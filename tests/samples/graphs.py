"""Samples of the graphs package's results: a small attribution graph and its check."""

from __future__ import annotations

import torch

from mechscope.graphs.results import AttributionGraph
from mechscope.graphs.validate import GraphCheck
from mechscope.results import Result


def sample_graph() -> AttributionGraph:
    """Two latents, two errors, two tokens and one logit, hand-wired."""
    kind = torch.tensor([0, 0, 1, 1, 2, 2, 3], dtype=torch.int8)
    adj = torch.zeros(7, 7)
    adj[0, 4], adj[0, 2] = 1.5, 0.25  # latent 0 ← token 0, error (layer 0)
    adj[1, 0], adj[1, 5], adj[1, 3] = 2.0, -0.5, 0.125  # latent 1 ← latent 0, token 1, error
    adj[6, 1], adj[6, 3], adj[6, 5] = 3.0, 0.5, 0.25  # logit ← latent 1, error, token 1
    mask = adj != 0
    return AttributionGraph(
        model="tiny-llama", prompt="hi there", tokens=["hi", " there"], token_ids=[104, 105],
        n_layers=2, transcoders="runs/tc",
        kind=kind, layer=torch.tensor([0, 1, 0, 1, -1, -1, 2], dtype=torch.int32),
        pos=torch.tensor([0, 1, 1, 1, 0, 1, 1], dtype=torch.int32),
        index=torch.tensor([7, 3, -1, -1, 104, 105, 42]),
        activation=torch.tensor([1.0, 2.0, 0.5, 0.5, 1.0, 1.0, 0.75]),
        value=torch.tensor([1.75, 1.625, 0, 0, 0, 0, 3.75]), bias=torch.zeros(7),
        influence=torch.tensor([0.3, 0.6, 0.1, 0.2, 0.2, 0.1, 0.0]), adjacency=adj,
        node_mask=torch.ones(7, dtype=torch.bool), edge_mask=mask,
        scores={"replacement": 0.75, "completeness": 0.875, "pruned_replacement": 0.75,
                "pruned_completeness": 0.875},
        node_threshold=0.8, edge_threshold=0.98, labels={"1_3_1": "greeting"},
        supernodes=[["hello", "0_7_0", "1_3_1"]],
        config={"active_features": 2, "logit_texts": {"42": "!"}},
    )  # fmt: skip


def samples() -> list[Result]:
    check = GraphCheck(
        model="tiny-llama", prompt="hi there", nodes=["1_3_1", "0_7_0"], target="3_42_1",
        factor=0.0, predicted_logit=torch.tensor([-3.0, -6.0]),
        measured_logit=torch.tensor([-2.5, -5.0]),
        predicted_downstream=torch.tensor([[float("nan")] * 2, [-4.0, float("nan")]]),
        measured_downstream=torch.tensor([[float("nan")] * 2, [-3.5, float("nan")]]),
        frozen_logit=torch.tensor([-2.75, -5.5]),
        frozen_downstream=torch.tensor([[float("nan")] * 2, [-3.75, float("nan")]]),
        logit_correlation=1.0, downstream_correlation=float("nan"), frozen_logit_correlation=1.0,
        frozen_downstream_correlation=float("nan"), config={"top": 2},
    )  # fmt: skip
    return [sample_graph(), check]

"""Influence on the logits, pruning, and the replacement and completeness scores.

All work on an adjacency ``A`` [node, node] (row = target, column = source,
entry = direct effect) and the logit weights ``w`` [node] (each logit node's
probability, zero elsewhere). With Â the absolute adjacency normalised so that
each row sums to 1, a node's influence on the logits is

    influence = w (Â + Â² + Â³ + …)

(the graph is acyclic: the series ends after its depth). As in Ameisen et
al. (2025):

- pruning keeps the latents of highest influence up to `node_threshold` of
  their total, then the edges of highest score Â[t, s] · (influence(t) + w(t))
  up to `edge_threshold` of the total, then the nodes still connected;
- the replacement score is the share of the end-to-end influence that starts
  at token embeddings rather than at error nodes;
- the completeness score is the share of each node's normalised input that
  comes from non-error nodes, averaged over the nodes with inputs (latents and
  logits) weighted by their influence plus logit weight.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from .results import EMBEDDING, ERROR, FEATURE, LOGIT  # noqa: E402 (the kinds, light)

__all__ = ["EMBEDDING", "ERROR", "FEATURE", "LOGIT", "influence", "normalized", "prune", "scores"]


def normalized(adjacency: Float[Tensor, "node node"]) -> Float[Tensor, "node node"]:
    """|A| with each non-empty row scaled to sum to 1.

    Example: ``normalized(torch.tensor([[0., -1., 3.], [0., 0., 0.], [0., 0., 0.]]))[0]``
    → ``[0, 0.25, 0.75]``.
    """
    a = adjacency.abs().float()
    return a / a.sum(-1, keepdim=True).clamp_min(1e-30)


def influence(
    adjacency: Float[Tensor, "node node"], logit_weight: Float[Tensor, " node"], depth: int
) -> Float[Tensor, " node"]:
    """w (Â + Â² + … + Â^depth): each node's influence on the weighted logits.

    Example: ``influence(adj, w, n_layers + 2)[k]`` — the share of the logits' input that
    flows, along all paths, from node k.
    """
    a = normalized(adjacency)
    cur = logit_weight.float()
    total = torch.zeros_like(cur)
    for _ in range(depth):
        cur = cur @ a
        if not cur.any():
            break
        total += cur
    return total


def _keep_share(scores: Tensor, share: float) -> Tensor:
    """Mask of the largest entries of `scores` whose sum first reaches `share` of the total."""
    flat = scores.reshape(-1)
    total = flat.sum()
    keep = torch.zeros_like(flat, dtype=torch.bool)
    if total <= 0:
        return keep.reshape(scores.shape)
    order = flat.argsort(descending=True)
    cum = flat[order].cumsum(0) / total
    n = int((cum < share).sum()) + 1
    keep[order[: min(n, len(order))]] = True
    keep &= flat > 0
    return keep.reshape(scores.shape)


def prune(
    adjacency: Float[Tensor, "node node"],
    logit_weight: Float[Tensor, " node"],
    kind: Tensor,
    node_threshold: float,
    edge_threshold: float,
    depth: int,
) -> tuple[Bool[Tensor, " node"], Bool[Tensor, "node node"]]:
    """(nodes kept, edges kept) by influence, as the module docstring says.

    Example: ``node_mask, edge_mask = prune(adj, w, kind, 0.8, 0.98, n_layers + 2)``.
    """
    kind = kind.long()
    infl = influence(adjacency, logit_weight, depth)
    features = kind == FEATURE
    keep_nodes = ~features
    keep_nodes[features] = _keep_share(infl[features], node_threshold)
    masked = adjacency * (keep_nodes[:, None] & keep_nodes[None, :])
    infl = influence(masked, logit_weight, depth)
    score = normalized(masked) * (infl + logit_weight)[:, None]
    edges = _keep_share(score, edge_threshold)
    connected = edges.any(0) | edges.any(1) | (kind == LOGIT)
    nodes = keep_nodes & connected
    edges &= nodes[:, None] & nodes[None, :]
    return nodes, edges


def scores(
    adjacency: Float[Tensor, "node node"],
    logit_weight: Float[Tensor, " node"],
    kind: Tensor,
    depth: int,
) -> dict[str, float]:
    """The replacement and completeness scores of a graph (see the module docstring).

    Example: ``scores(adj, w, kind, n_layers + 2)`` → ``{"replacement": 0.61,
    "completeness": 0.83}``.
    """
    kind = kind.long()
    a = normalized(adjacency)
    infl = influence(adjacency, logit_weight, depth)
    token = float(infl[kind == EMBEDDING].sum())
    error = float(infl[kind == ERROR].sum())
    replacement = token / (token + error) if token + error > 0 else float("nan")
    with_inputs = (kind == FEATURE) | (kind == LOGIT)
    non_error = 1.0 - a[:, kind == ERROR].sum(-1)
    weight = (infl + logit_weight)[with_inputs]
    completeness = (
        float((non_error[with_inputs] * weight).sum() / weight.sum())
        if weight.sum() > 0
        else float("nan")
    )
    return {"replacement": replacement, "completeness": completeness}

"""Circuits in the graph of attention heads and MLPs: from EAP scores, and by ACDC.

`circuit_from_scores` keeps the edges with the largest edge attribution
patching scores (`mechscope.patching.eap`). `acdc` (Conmy et al. 2023) prunes
at node level with real patching (`mechscope.patching.ablation`): from the
last layer down, each node's output is tentatively replaced by its value on
the corrupted input, and the node stays out when the metric moves by less
than ``threshold`` × |metric(clean) − metric(corrupted)|. Candidates are
evaluated speculatively several per batch (one experiment per group of rows,
each resumed from the lowest layer it ablates), which is exact. The graph
itself (senders, receivers, edges) is described in `mechscope.patching.graph`.

Example::

    scores = edge_attribution_patching(model, clean, corrupted, metric)
    circuit = acdc(model, clean, corrupted, metric, threshold=0.02, edge_scores=scores)
    circuit.ratio, circuit.n_heads
    circuit.figure("runs/ioi/circuit")      # .png, .svg, .html
"""

from __future__ import annotations

import math
import time
from typing import Literal

import torch
from tqdm.auto import tqdm

from ..core.model import Inputs, Model
from ..errors import InputError
from .ablation import _Ablation
from .eap import _since, edge_attribution_patching
from .graph import _graph
from .nodes import head_node, mlp_node, receiver_nodes
from .results import Circuit, Edge, EdgeScores
from .sweep import Metric

# --- circuits -------------------------------------------------------------------------


def _edges_between(scores: EdgeScores, nodes: set[str], min_score: float) -> list[Edge]:
    def heads(r: str) -> list[str]:
        return receiver_nodes(r, scores.n_heads, scores.n_kv_heads)

    return [
        (s, r, v)
        for s, r, v in scores.edges(threshold=min_score)
        if s in nodes and any(node in nodes for node in heads(r))
    ]


def circuit_from_scores(
    scores: EdgeScores,
    *,
    top_k_edges: int | None = None,
    threshold: float | None = None,
    prune_dangling: bool = True,
    evaluate_on: tuple[Model, Inputs, Inputs, Metric] | None = None,
    last_only: bool = False,
) -> Circuit:
    """A pure EAP circuit: the `top_k_edges` largest |scores| (or all with |score| ≥ `threshold`).

    With `prune_dangling`, edges are dropped until every kept node but the
    embeddings has an input edge and every one but the logits an output
    edge. ``evaluate_on=(model, clean, corrupted, metric)`` fills
    ``metric_circuit`` by node-level patching (`evaluate_circuit`; edges
    between kept nodes that were not selected stay clean); otherwise it is NaN.

    Example::

        circuit = circuit_from_scores(scores, top_k_edges=200)
    """
    if (top_k_edges is None) == (threshold is None):
        raise InputError("give exactly one of top_k_edges and threshold")

    def heads(r: str) -> list[str]:
        return receiver_nodes(r, scores.n_heads, scores.n_kv_heads)

    edges = scores.edges(top_k=top_k_edges, threshold=threshold)
    embeds = {s for s in scores.senders if s in ("embed", "pos_embed")}
    while prune_dangling:
        fed = {node for _, r, _ in edges for node in heads(r)} | embeds
        feeding = {s for s, _, _ in edges} | {"logits"}
        kept = [
            (s, r, v) for s, r, v in edges if s in fed and any(node in feeding for node in heads(r))
        ]
        if len(kept) == len(edges):
            break
        edges = kept
    # a key/value input belongs to the heads of its group that are in the circuit anyway
    nodes_set = {s for s, _, _ in edges} | embeds | {"logits"}
    nodes_set |= {heads(r)[0] for _, r, _ in edges if not r.endswith((".k", ".v"))}
    for _, r, _ in edges:
        group = heads(r)
        if r.endswith((".k", ".v")) and not nodes_set & set(group):
            nodes_set |= set(group)
    nodes = [n for n in [*scores.senders, "logits"] if n in nodes_set]
    metric_circuit = math.nan
    model_metric, corrupt_metric = scores.metric_clean, scores.metric_corrupted
    if evaluate_on is not None:
        model, clean, corrupted, metric = evaluate_on
        g = _graph(model)
        ablation = _Ablation(model, g, clean, corrupted, metric, last_only)
        metric_circuit = float(ablation.evaluate([[s for s in g.senders if s not in nodes_set]])[0])
        model_metric, corrupt_metric = ablation.m_model, ablation.m_corrupt
    return Circuit(
        nodes=nodes,
        edges=edges,
        metric_model=model_metric,
        metric_circuit=metric_circuit,
        metric_corrupted=corrupt_metric,
        n_layers=scores.n_layers,
        heads_per_layer=scores.n_heads,
        kv_heads_per_layer=scores.n_kv_heads,
        method="eap",
        threshold=threshold,
        model_name=scores.model_name,
        meta={"top_k_edges": top_k_edges, "prune_dangling": prune_dangling},
    )


# --- ACDC -----------------------------------------------------------------------------


def acdc(
    model: Model,
    clean: Inputs,
    corrupted: Inputs,
    metric: Metric,
    threshold: float,
    *,
    edge_scores: EdgeScores | None = None,
    try_quantile: float | None = None,
    order: Literal["reverse", "scores"] = "reverse",
    include_mlps: bool = True,
    batch_size: int = 8,
    last_only: bool = False,
    min_edge_score: float = 0.0,
    memory_budget: int = 1 << 30,
    progress: bool = True,
) -> Circuit:
    """ACDC at node level: greedily patch away heads and MLPs that barely move the metric.

    Nodes are visited from the last layer to the first (within a layer the
    MLP, then heads from the last index down). A node is patched to its value
    on `corrupted`; it stays out when |metric(without it) − metric(now)| <
    `threshold` × |metric(clean) − metric(corrupted)|, otherwise it is
    restored. The embeddings and the logits always stay.

    Speed, exactly: each batch tests up to `batch_size` candidates as
    separate experiments. While most recent candidates were removed it
    tests a chain (experiment j removes candidates 1..j, each compared with
    j−1), otherwise each candidate alone against the current circuit; the
    decisions up to the first one that breaks the assumption are kept, and
    the next batch speculates about as far as this one held. Experiments
    resume the forward from the lowest layer they patch.

    `edge_scores` (computed if None) give the circuit's edges (EAP scores
    between kept nodes with |score| > `min_edge_score`); with ``order="scores"``
    nodes within a layer are tried least important first (by
    `EdgeScores.node_scores`), and with `try_quantile` q only nodes whose
    node score is at most the q-quantile are tried (the others are kept
    untested: a shortcut, no longer pure ACDC). `include_mlps=False` keeps
    every MLP. `metric` gets ``logits[:, -1:]`` with `last_only` (faster).

    Example::

        circuit = acdc(model, clean, corrupted, logit_diff, threshold=0.02, last_only=True)
    """
    graph = _graph(model)
    start = time.perf_counter()
    if threshold < 0:
        raise InputError(f"threshold must be ≥ 0, got {threshold}")
    if order not in ("reverse", "scores"):
        raise InputError(f"order must be 'reverse' or 'scores', got {order!r}")
    if try_quantile is not None and not 0 < try_quantile <= 1:
        raise InputError(f"try_quantile must be in (0, 1], got {try_quantile}")
    ablation = _Ablation(model, graph, clean, corrupted, metric, last_only)
    denom = abs(ablation.m_model - ablation.m_corrupt)
    if denom < 1e-12:
        raise InputError("clean and corrupted inputs give the same metric: nothing to explain")
    if edge_scores is None:
        edge_scores = edge_attribution_patching(model, clean, corrupted, metric, progress=False)
    node_score = edge_scores.node_scores()

    candidates: list[str] = []
    for layer in reversed(range(graph.n_layers)):
        here = [mlp_node(layer)] if include_mlps else []
        here += [head_node(layer, h) for h in reversed(range(graph.n_heads))]
        if order == "scores":
            here.sort(key=lambda node: node_score[node])
        candidates += here
    if try_quantile is not None:
        values = torch.tensor([node_score[c] for c in candidates])
        cut = float(values.quantile(try_quantile))
        candidates = [c for c in candidates if node_score[c] <= cut]

    rows_fit = max(1, memory_budget // (ablation.row_bytes * ablation.n))
    most = max(1, min(batch_size, rows_fit))
    width = most
    ablated: list[str] = []
    current = ablation.m_model
    accept_rate = 1.0  # running estimate: chains pay off when most candidates go
    batches = total_accepted = 0
    bar = tqdm(
        total=len(candidates), desc=f"ACDC τ={threshold:g}", unit="node", disable=not progress
    )
    i = 0
    while i < len(candidates):
        chunk = candidates[i : i + width]
        chain = accept_rate >= 0.5
        if chain:
            sets = [ablated + chunk[: j + 1] for j in range(len(chunk))]
        else:
            sets = [[*ablated, c] for c in chunk]
        values = ablation.evaluate(sets).tolist()
        batches += 1
        decided = accepted = 0
        for j, c in enumerate(chunk):
            before = (values[j - 1] if j else current) if chain else current
            removed = abs(values[j] - before) < threshold * denom
            decided += 1
            if removed:
                ablated.append(c)
                current = values[j]
                accepted += 1
            if removed != chain:  # the speculation behind later experiments no longer holds
                break
        accept_rate = 0.5 * accept_rate + 0.5 * accepted / decided
        # speculate as far as the last batch's guess held: double after a full run
        width = min(most, 2 * width) if decided == len(chunk) else max(1, decided)
        i += decided
        total_accepted += accepted
        bar.update(decided)
        bar.set_postfix(kept=i - total_accepted)
    bar.close()

    final = float(ablation.evaluate([ablated])[0])
    removed = set(ablated)
    nodes = [n for n in graph.nodes() if n not in removed]
    return Circuit(
        nodes=nodes,
        edges=_edges_between(edge_scores, set(nodes), min_edge_score),
        metric_model=ablation.m_model,
        metric_circuit=final,
        metric_corrupted=ablation.m_corrupt,
        n_layers=graph.n_layers,
        heads_per_layer=graph.n_heads,
        kv_heads_per_layer=graph.n_kv_heads,
        method="acdc",
        threshold=threshold,
        model_name=model.name,
        meta={
            "tried": len(candidates),
            "evaluations": ablation.evaluations,
            "batches": batches,
            "seconds": _since(start),
            "order": order,
            "try_quantile": try_quantile,
            "include_mlps": include_mlps,
            "last_only": last_only,
        },
    )

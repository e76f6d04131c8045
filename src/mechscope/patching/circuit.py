"""Automatic circuit discovery on the graph of attention heads and MLPs: EAP and ACDC.

The graph: senders are the input embedding (``embed``; also ``pos_embed`` on
GPT-2), every head ``a{L}.{h}`` (its ``z`` pushed through its slice of the
output projection) and every MLP ``m{L}``; receivers are each head's query
input ``a{L}.{h}.q``, each key/value head's inputs ``a{L}.{g}.k`` /
``a{L}.{g}.v`` (shared by its query heads under grouped-query attention),
each MLP's input ``m{L}`` and the ``logits``. An edge joins a sender to every
receiver that reads the residual stream after it: a head at layer l feeds
layers > l and the MLP of layer l (not under GPT-NeoX's parallel residual).

`edge_attribution_patching` (Syed et al. 2023) scores every edge at once,
score(u→r) = Σ (a_u(corrupted) − a_u(clean)) · ∂metric/∂x_r, with the
gradient taken through receiver r only; the receiver-specific gradients are
exact vector-Jacobian products on one clean forward kept with its graph
(``keep_graph``), so no family-specific code is needed. `acdc` (Conmy et al.
2023) prunes at node level with real patching: from the last layer down,
each node's output is tentatively replaced by its value on the corrupted
input, and the node stays out when the metric moves by less than
``threshold`` × |metric(clean) − metric(corrupted)|. Candidates are
evaluated speculatively several per batch (one experiment per group of
rows, each resumed from the lowest layer it ablates), which is exact.

Example::

    scores = edge_attribution_patching(model, clean, corrupted, metric)
    circuit = acdc(model, clean, corrupted, metric, threshold=0.02, edge_scores=scores)
    circuit.ratio, circuit.n_heads
    circuit.draw("runs/ioi/circuit")      # .png, .svg, .html
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..core import interventions as iv
from ..core.model import Inputs, Model
from ..core.weights import output_projection
from ..errors import InputError, MechscopeError
from .nodes import NODE_RE, receiver_nodes
from .results import Circuit, Edge, EdgeScores
from .sweep import Metric, _per_prompt, _tokens

# --- the graph ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Graph:
    """Senders and receivers of one model, in forward order, and which edges exist."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    parallel: bool  # attention and MLP read the same resid_pre (GPT-NeoX / Pythia)
    embeds: tuple[str, ...]  # ("embed",) or ("embed", "pos_embed")

    @property
    def senders(self) -> list[str]:
        out = list(self.embeds)
        for layer in range(self.n_layers):
            out += [f"a{layer}.{h}" for h in range(self.n_heads)] + [f"m{layer}"]
        return out

    def layer_receivers(self, layer: int) -> list[str]:
        return (
            [f"a{layer}.{h}.q" for h in range(self.n_heads)]
            + [f"a{layer}.{g}.k" for g in range(self.n_kv_heads)]
            + [f"a{layer}.{g}.v" for g in range(self.n_kv_heads)]
            + [f"m{layer}"]
        )

    @property
    def receivers(self) -> list[str]:
        return [r for layer in range(self.n_layers) for r in self.layer_receivers(layer)] + [
            "logits"
        ]

    def first_sender(self, layer: int) -> int:
        """Index of the first sender of `layer` (= how many senders precede it)."""
        return len(self.embeds) + layer * (self.n_heads + 1)

    def n_valid(self, layer: int, mlp: bool) -> int:
        """How many senders (a prefix in forward order) reach an input of `layer`."""
        start = self.first_sender(layer)
        return start + (self.n_heads if mlp and not self.parallel else 0)

    def valid(self) -> Tensor:
        """[senders, receivers] bool: the edges of the graph."""
        mask = torch.zeros(len(self.senders), len(self.receivers), dtype=torch.bool)
        col = 0
        for layer in range(self.n_layers):
            n = len(self.layer_receivers(layer))
            mask[: self.n_valid(layer, False), col : col + n - 1] = True
            mask[: self.n_valid(layer, True), col + n - 1] = True
            col += n
        mask[:, -1] = True
        return mask

    def nodes(self) -> list[str]:
        return [*self.senders, "logits"]


def _graph(model: Model) -> _Graph:
    if model.dims is None or model.adapter is None:
        raise InputError(f"{model.name} is not a transformer with known sites: no head graph")
    a = model.adapter
    if a.attn_out != a.attn or not a.mlp_down.startswith(a.mlp_out + "."):
        raise MechscopeError(
            f"circuit discovery needs the attention and MLP outputs to be added to the residual "
            f"stream as they are; the {a.family} family norms them first (post-norm, as in "
            f"Gemma 2/3), so a head's contribution is not its slice of the output projection. "
            f"Supported: Llama-style (Llama, Mistral, Qwen, SmolLM), GPT-2, GPT-NeoX"
        )
    d = model.dims
    parallel = bool(getattr(model.hf.config, "use_parallel_residual", False))
    embeds = ("embed", "pos_embed") if a.pos_embed is not None else ("embed",)
    return _Graph(d.n_layers, d.n_heads, d.n_kv_heads, parallel, embeds)


def _pair(model: Model, clean: Inputs, corrupted: Inputs) -> tuple[Tensor, Tensor]:
    clean_x, corrupt_x = _tokens(model, clean), _tokens(model, corrupted)
    if clean_x.shape != corrupt_x.shape:
        raise InputError(
            f"clean and corrupted inputs must have the same shape, got {tuple(clean_x.shape)} "
            f"and {tuple(corrupt_x.shape)}"
        )
    return clean_x, corrupt_x


def _mean_metric(metric: Metric, logits: Tensor, n: int) -> float:
    return float(_per_prompt(metric(logits), n).mean())


# --- edge attribution patching --------------------------------------------------------


def edge_attribution_patching(
    model: Model,
    clean: Inputs,
    corrupted: Inputs,
    metric: Metric,
    *,
    progress: bool = True,
) -> EdgeScores:
    """Score every edge of the head/MLP graph with one corrupted and one clean forward.

    `metric` maps logits [batch, pos, vocab] to one value per prompt (the mean
    is taken). Scores are summed over prompts, positions and d_model, as
    derivatives of the mean metric, so summing a sender's scores over every
    receiver gives attribution patching's estimate of the effect of patching
    that sender alone.

    Example::

        scores = edge_attribution_patching(model, clean_ids, corrupt_ids, logit_diff)
        scores.edges(top_k=20)
    """
    graph = _graph(model)
    assert model.dims is not None
    clean_x, corrupt_x = _pair(model, clean, corrupted)
    n, last = clean_x.shape[0], graph.n_layers - 1
    start = time.perf_counter()
    z = [f"blocks.{layer}.attn.z" for layer in range(graph.n_layers)]
    mlp = [f"blocks.{layer}.mlp.out" for layer in range(graph.n_layers)]
    embed_sites = ["blocks.0.resid_pre", *(["pos_embed"] if len(graph.embeds) > 1 else [])]
    corr = model.run(corrupt_x, save=[*embed_sites, *z, *mlp])
    m_corrupt = _mean_metric(metric, corr.logits, n)
    saves = ["blocks.*.resid_pre", "blocks.*.attn.q", "blocks.*.attn.k", "blocks.*.attn.v"]
    saves += ["blocks.*.attn.out", *z, *mlp, f"blocks.{last}.resid_post", *embed_sites]
    out = model.run(clean_x, save=saves, keep_graph=True)
    live, cache = out.cache.live, out.cache
    if not live["blocks.0.resid_pre"].requires_grad:
        raise MechscopeError(
            "edge attribution patching needs the autograd graph, but no gradient reaches the "
            "embeddings: are the model's parameters frozen (requires_grad=False)?"
        )

    with torch.no_grad():  # sender deltas [senders, batch, pos, d_model], forward order
        deltas = [corr.cache["blocks.0.resid_pre"] - cache["blocks.0.resid_pre"]]
        if len(graph.embeds) > 1:
            pos = (corr.cache["pos_embed"] - cache["pos_embed"]).expand_as(deltas[0])
            deltas = [deltas[0] - pos, pos]
        for layer in range(graph.n_layers):
            dz = corr.cache[z[layer]] - cache[z[layer]]
            w = output_projection(model, layer)[0].to(dz.dtype)
            deltas += list(torch.einsum("bphe,hed->hbpd", dz, w))
            deltas.append(corr.cache[mlp[layer]] - cache[mlp[layer]])
        delta = torch.stack(deltas).float().flatten(1)  # [senders, batch·pos·d_model]

    scores = torch.zeros(len(graph.senders), len(graph.receivers))
    with torch.enable_grad():
        m = _per_prompt_live(metric(out.logits), n).mean()
        sites = [f"blocks.{layer}.attn.{k}" for layer in range(graph.n_layers) for k in "qkv"]
        targets = [live[s] for s in sites] + [live[s] for s in mlp]
        targets.append(live[f"blocks.{last}.resid_post"])
        grads = torch.autograd.grad(m, targets, retain_graph=True, allow_unused=True)
        g = {
            name: torch.zeros_like(t) if gr is None else gr
            for name, t, gr in zip([*sites, *mlp, "final"], targets, grads, strict=True)
        }
        col = 0
        bar = tqdm(range(graph.n_layers), desc="EAP", unit="layer", disable=not progress)
        for layer in bar:
            resid = live[f"blocks.{layer}.resid_pre"]
            rows = []
            for kind, n_idx in (
                ("q", graph.n_heads),
                ("k", graph.n_kv_heads),
                ("v", graph.n_kv_heads),
            ):
                name = f"blocks.{layer}.attn.{kind}"
                rows += _per_head_vjp(live[name], resid, g[name], n_idx)
            mlp_in = resid if graph.parallel else live[f"blocks.{layer}.attn.out"]
            rows.append(_vjp(live[mlp[layer]], mlp_in, g[mlp[layer]]))
            grad_in = torch.stack(rows).float().flatten(1)  # [receivers of layer, batch·pos·d]
            k = graph.n_valid(layer, mlp=False)
            scores[:k, col : col + len(rows) - 1] = delta[:k] @ grad_in[:-1].T
            k = graph.n_valid(layer, mlp=True)
            scores[:k, col + len(rows) - 1] = delta[:k] @ grad_in[-1]
            col += len(rows)
        scores[:, -1] = delta @ g["final"].float().flatten()
    del out, live
    return EdgeScores(
        scores=scores,
        valid=graph.valid(),
        senders=graph.senders,
        receivers=graph.receivers,
        metric_clean=float(m.detach()),
        metric_corrupted=m_corrupt,
        n_layers=graph.n_layers,
        n_heads=graph.n_heads,
        n_kv_heads=graph.n_kv_heads,
        model_name=model.name,
        meta={"prompts": n, "positions": int(clean_x.shape[1]), "seconds": _since(start)},
    )


def _per_head_vjp(output: Tensor, inputs: Tensor, grad_output: Tensor, n: int) -> list[Tensor]:
    """The VJP of each head's slice of `output` [batch, pos, head, d_head] on its own."""
    one_hot = torch.eye(n, dtype=grad_output.dtype, device=grad_output.device)
    per_head = grad_output.unsqueeze(0) * one_hot[:, None, None, :, None]  # [n, *output.shape]
    try:
        (grads,) = torch.autograd.grad(
            output, inputs, grad_outputs=per_head, retain_graph=True, is_grads_batched=True
        )
        return list(grads)
    except RuntimeError:  # an op without a batching rule: one VJP per head
        return [_vjp(output, inputs, g) for g in per_head]


def _vjp(output: Tensor, inputs: Tensor, grad_output: Tensor) -> Tensor:
    (grad,) = torch.autograd.grad(
        output, inputs, grad_outputs=grad_output, retain_graph=True, allow_unused=True
    )
    return torch.zeros_like(inputs) if grad is None else grad


def _per_prompt_live(value: Tensor, n: int) -> Tensor:
    """Like `_per_prompt`, keeping the graph."""
    value = value.float().reshape(-1)
    if value.numel() not in (1, n):
        raise InputError(
            f"metric must return one value per prompt ({n}) or a scalar, got {value.numel()}"
        )
    return value


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 3)


# --- node-level ablation by patching --------------------------------------------------


class _Ablation:
    """Evaluates the metric with sets of nodes patched to their corrupted values.

    Each set is one experiment: a group of rows (experiment-major, as in
    `Model.resume`), all resumed from the lowest layer any set touches.
    """

    def __init__(
        self,
        model: Model,
        graph: _Graph,
        clean: Inputs,
        corrupted: Inputs,
        metric: Metric,
        last_only: bool,
    ) -> None:
        assert model.dims is not None
        clean_x, corrupt_x = _pair(model, clean, corrupted)
        self.model, self.graph, self.metric, self.last_only = model, graph, metric, last_only
        self.n = int(clean_x.shape[0])
        embed_sites = ["blocks.0.resid_pre", *(["pos_embed"] if len(graph.embeds) > 1 else [])]
        sites = ["blocks.*.attn.z", "blocks.*.mlp.out", *embed_sites]
        self.base, self.context = model.capture(clean_x, save=embed_sites)
        corr = model.run(corrupt_x, save=sites)
        self.corr = corr.cache
        view = (lambda lg: lg[:, -1:]) if last_only else (lambda lg: lg)
        self.m_model = _mean_metric(metric, view(self.base.logits), self.n)
        self.m_corrupt = _mean_metric(metric, view(corr.logits), self.n)
        d = model.dims
        per_row = clean_x.shape[1] * (10 * d.d_model + 3 * d.d_mlp + d.n_heads * clean_x.shape[1])
        per_row += (1 if last_only else clean_x.shape[1]) * d.d_vocab
        self.row_bytes = model.dtype.itemsize * per_row  # bf16 rows take half of fp32's
        self.evaluations = 0

    def evaluate(self, ablated: Sequence[Iterable[str]]) -> Tensor:
        """The mean metric of each experiment (a set of ablated node names)."""
        sets = [set(a) for a in ablated]
        k, n, graph = len(sets), self.n, self.graph
        if not any(sets):
            return torch.full((k,), self.m_model)
        self.evaluations += k
        layers = [_layer_of(node) for s in sets for node in s]
        low = max(0, min(layers))
        resid = self.base.cache[f"blocks.{low}.resid_pre"].repeat(k, 1, 1)
        if min(layers) < 0:  # the embeddings: add their deltas to blocks.0.resid_pre
            clean0 = self.base.cache["blocks.0.resid_pre"]
            pos = (
                self.corr["pos_embed"] - self.base.cache["pos_embed"]
                if "pos_embed" in graph.embeds
                else torch.zeros_like(clean0)
            )
            tok = self.corr["blocks.0.resid_pre"] - clean0 - pos
            for e, s in enumerate(sets):
                rows = slice(e * n, (e + 1) * n)
                if "embed" in s:
                    resid[rows] += tok
                if "pos_embed" in s:
                    resid[rows] += pos
        ivs = []
        for layer in range(low, graph.n_layers):
            heads = torch.tensor(
                [[f"a{layer}.{h}" in s for h in range(graph.n_heads)] for s in sets]
            )
            if heads.any():
                site = f"blocks.{layer}.attn.z"
                ivs.append(_rowwise(site, self.corr[site], heads.repeat_interleave(n, 0), k))
            mlps = torch.tensor([f"m{layer}" in s for s in sets])
            if mlps.any():
                site = f"blocks.{layer}.mlp.out"
                ivs.append(_rowwise(site, self.corr[site], mlps.repeat_interleave(n, 0), k))
        out = self.model.resume(
            low, resid, self.context, ivs, logits_at=-1 if self.last_only else None
        )
        return _per_prompt(self.metric(out.logits), k * n).view(k, n).mean(1)


def _rowwise(site: str, source: Tensor, mask: Tensor, tile: int) -> iv.Intervention:
    """Per-row patch: where `mask` (rows, or rows × heads) is set, take the tiled `source`."""
    where = mask[:, None, :, None] if mask.ndim == 2 else mask[:, None, None]
    return iv.replace(site, source.repeat(tile, *([1] * (source.ndim - 1))), mask=where)


def _layer_of(node: str) -> int:
    """Layer of an ablatable node; -1 for the embeddings."""
    m = NODE_RE.match(node)
    if m is None or node == "logits":
        raise InputError(
            f"{node!r} is not an ablatable node; nodes are 'a{{layer}}.{{head}}', "
            f"'m{{layer}}', 'embed' or 'pos_embed'"
        )
    if m.group(1) is not None:
        return int(m.group(1))
    if m.group(3) is not None:
        return int(m.group(3))
    return -1


def _check_nodes(graph: _Graph, nodes: Iterable[str]) -> set[str]:
    known = set(graph.nodes())
    nodes = set(nodes)
    unknown = sorted(nodes - known)
    if unknown:
        raise InputError(
            f"unknown nodes {unknown[:5]}; nodes are 'a{{layer}}.{{head}}' (layers 0.."
            f"{graph.n_layers - 1}, heads 0..{graph.n_heads - 1}), 'm{{layer}}', "
            f"{', '.join(repr(e) for e in graph.embeds)} and 'logits'"
        )
    return nodes


def evaluate_circuit(
    model: Model,
    clean: Inputs,
    corrupted: Inputs,
    metric: Metric,
    nodes: Iterable[str],
    *,
    last_only: bool = False,
) -> float:
    """The metric on `clean` with every node not in `nodes` patched from `corrupted`.

    Nodes are named as in `Circuit` ("a12.3", "m12", "embed"); leaving out
    ``embed`` patches the token embeddings too, so ``nodes=[]`` gives the
    corrupted metric and every node gives the clean one. `metric` sees
    ``logits[:, -1:]`` with `last_only`.

    Example::

        evaluate_circuit(model, clean, corrupted, logit_diff, circuit.nodes)
    """
    graph = _graph(model)
    keep = _check_nodes(graph, nodes)
    ablation = _Ablation(model, graph, clean, corrupted, metric, last_only)
    ablated = [s for s in graph.senders if s not in keep]
    return float(ablation.evaluate([ablated])[0])


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
        here = [f"m{layer}"] if include_mlps else []
        here += [f"a{layer}.{h}" for h in reversed(range(graph.n_heads))]
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

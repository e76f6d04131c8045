"""Edge attribution patching (Syed et al. 2023): every edge of the head/MLP graph scored at once.

score(u→r) = Σ (a_u(corrupted) − a_u(clean)) · ∂metric/∂x_r, with the
gradient taken through receiver r only (the graph is `mechscope.patching.graph`'s);
the receiver-specific gradients are exact vector-Jacobian products on one
clean forward kept with its graph (``keep_graph``), so no family-specific
code is needed.

Example::

    scores = edge_attribution_patching(model, clean, corrupted, metric)
    scores.edges(top_k=20)
"""

from __future__ import annotations

import time

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..core.model import Inputs, Model
from ..core.weights import output_projection
from ..errors import InputError, MechscopeError
from .graph import _graph, _mean_metric, _pair
from .results import EdgeScores
from .sweep import Metric


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

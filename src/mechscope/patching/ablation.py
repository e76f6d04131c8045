"""Node-level ablation by patching: the metric with heads, MLPs or embeddings patched away.

A node of the head/MLP graph (`mechscope.patching.graph`) is ablated by
replacing its output with its value on the corrupted input. `_Ablation`
evaluates many sets of ablated nodes in one batch (one experiment per group
of rows, each resumed from the lowest layer it ablates), which is exact;
ACDC and the evaluation of EAP circuits are built on it.

Example::

    evaluate_circuit(model, clean, corrupted, logit_diff, circuit.nodes)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from ..core import interventions as iv
from ..core.model import Inputs, Model
from ..errors import InputError
from .graph import _Graph, _graph, _mean_metric, _pair
from .nodes import NODE_RE, head_node, mlp_node
from .sweep import Metric, _per_prompt


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
                [[head_node(layer, h) in s for h in range(graph.n_heads)] for s in sets]
            )
            if heads.any():
                site = f"blocks.{layer}.attn.z"
                ivs.append(_rowwise(site, self.corr[site], heads.repeat_interleave(n, 0), k))
            mlps = torch.tensor([mlp_node(layer) in s for s in sets])
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
            f"{node!r} is not an ablatable node; nodes are 'L{{layer}}H{{head}}', "
            f"'MLP{{layer}}', 'embed' or 'pos_embed'"
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
            f"unknown nodes {unknown[:5]}; nodes are 'L{{layer}}H{{head}}' (layers 0.."
            f"{graph.n_layers - 1}, heads 0..{graph.n_heads - 1}), 'MLP{{layer}}', "
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

    Nodes are named as in `Circuit` ("L12H3", "MLP12", "embed"); leaving out
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

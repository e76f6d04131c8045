"""Attribution graphs (Ameisen et al. 2025, "Circuit Tracing"): direct effects between nodes.

Nodes, for one prompt of T tokens: the token embeddings (T), every active
transcoder latent at every position, one error node per layer and position
(n_layers · T) and the top output logits (up to `logit_mass` of probability,
at most `max_logits`, each demeaned over the vocabulary as in the paper).
The edge s → t is the direct effect of s on t in the local replacement model
(`mechscope.graphs.local`): s's write into the residual stream times the
gradient of t's pre-activation (a latent's encoder input, a logit) at the
point s writes, through frozen attention and norms only. Edges into t sum,
with t's constant part (the biases), to t's value exactly.

Rows come from batched backwards: one forward of `batch` copies of the
prompt, then one backward per `batch` target nodes, each copy's gradient its
own target's. Which latents become targets is chosen as circuit-tracer does:
the logits first, then repeatedly the not-yet-expanded latents of highest
estimated influence on the logits, up to `max_feature_nodes`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import InputError
from ..transcoders.model import TranscoderSet
from .local import (
    CleanRun,
    Forward,
    GraphError,
    LocalReplacement,
    check_batch,
    check_model,
    clean_run,
)
from .prune import influence, prune, scores
from .results import EMBEDDING, ERROR, FEATURE, LOGIT, AttributionGraph

if TYPE_CHECKING:
    from ..core.model import Model


def _prompt_ids(model: Model, prompt: str | Tensor) -> Tensor:
    if isinstance(prompt, Tensor):
        if prompt.ndim == 1:
            prompt = prompt[None]
        if prompt.ndim != 2 or prompt.shape[0] != 1 or prompt.dtype not in (torch.long, torch.int):
            raise GraphError(
                "prompt ids must be one row of integer token ids [1, pos] (int64 or int32), "
                f"got {str(prompt.dtype).replace('torch.', '')} {list(prompt.shape)}"
            )
        vocab = model.dims.d_vocab if model.dims is not None else None
        if prompt.numel() == 0:
            raise GraphError("prompt ids are empty: give at least one token")
        if vocab is not None and (int(prompt.min()) < 0 or int(prompt.max()) >= vocab):
            bad = int(prompt.min()) if int(prompt.min()) < 0 else int(prompt.max())
            raise GraphError(f"prompt ids must be token ids in 0..{vocab - 1}, got {bad}")
        return prompt.long()
    if not isinstance(prompt, str) or not prompt.strip():
        raise GraphError(f"prompt must be non-empty text or a row of token ids, got {prompt!r}")
    return model.to_tokens(prompt)


def _logit_targets(
    model: Model, last: Tensor, logits: Sequence[str | int] | None, max_logits: int, mass: float
) -> tuple[list[int], list[float]]:
    probs = last.float().softmax(-1)
    if logits is not None:
        if isinstance(logits, (str, bytes)) or not isinstance(logits, Sequence) or not logits:
            hint = f"; for one token: logits=[{logits!r}]" if isinstance(logits, str) else ""
            raise GraphError(
                "logits must be a non-empty list of output tokens (texts or token ids), "
                f"got {logits!r}{hint}"
            )
        toks = []
        for t in logits:
            if isinstance(t, bool) or not isinstance(t, (int, str)):
                raise GraphError(f"logits holds {t!r}: each entry is a token's text or its id")
            if isinstance(t, str):
                try:
                    t = model.to_single_token(t)
                except InputError as e:
                    raise GraphError(f"logits: {e}") from None
            toks.append(t)
        vocab = probs.shape[-1]
        for t in toks:
            if not 0 <= t < vocab:
                raise GraphError(f"logit token id {t} is outside the vocabulary (0..{vocab - 1})")
        return toks, [float(probs[t]) for t in toks]
    order = probs.argsort(descending=True)
    toks, ps, total = [], [], 0.0
    for t in order[:max_logits].tolist():
        toks.append(int(t))
        ps.append(float(probs[t]))
        total += ps[-1]
        if total >= mass:
            break
    return toks, ps


def attribution_graph(
    model: Model,
    transcoders: TranscoderSet,
    prompt: str | Tensor,
    *,
    logits: Sequence[str | int] | None = None,
    max_logits: int = 10,
    logit_mass: float = 0.95,
    max_feature_nodes: int = 1024,
    batch: int = 64,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    source: str = "",
    first_as_error: bool = True,
    progress: bool = True,
) -> AttributionGraph:
    """The attribution graph of `prompt` through `transcoders` (one per layer; a layer
    without one is all error), pruned by influence on the logits.

    `logits` names the output tokens to explain (default: the top ones up to
    `logit_mass`); `max_feature_nodes` caps the latents expanded as targets;
    `batch` is how many target rows one backward computes; `source` names the set
    (its folder) in the result. `first_as_error` (default) leaves position 0's latents
    out: its MLP outputs are error nodes (`clean_run`). The result holds the
    whole adjacency and the pruned masks (`node_threshold`, `edge_threshold`: shares
    of influence kept), with the replacement and completeness scores of both.

    Example::

        g = attribution_graph(model, tcs, "The capital of France is", logits=[" Paris"])
        g.scores["replacement"], g.top_features(5)
    """
    check_model(model, transcoders)
    for name, value, low in (("max_logits", max_logits, 1), ("max_feature_nodes", max_feature_nodes, 0),
                             ("batch", batch, 1)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise GraphError(f"{name} must be an integer ≥ {low}, got {value!r}")
    for name, value in (("logit_mass", logit_mass), ("node_threshold", node_threshold),
                        ("edge_threshold", edge_threshold)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise GraphError(f"{name} must be in (0, 1], got {value!r}")
    t0 = time.perf_counter()
    ids = _prompt_ids(model, prompt)
    model.check_length(ids.shape[1], "the prompt")
    check_batch(model, batch, ids.shape[1])
    transcoders = transcoders.to(model.device)
    clean = clean_run(model, transcoders, ids, first_as_error=first_as_error)
    toks, probs = _logit_targets(model, clean.logits[-1], logits, max_logits, logit_mass)
    builder = _Builder(model, transcoders, clean, toks, batch, progress)
    builder.source, builder.first_as_error = source, first_as_error
    builder.expand(max_feature_nodes)
    graph = builder.graph(probs, node_threshold, edge_threshold, time.perf_counter() - t0)
    return graph


class _Builder:
    """The nodes of one prompt and the rows of the adjacency computed so far."""

    def __init__(
        self,
        model: Model,
        transcoders: TranscoderSet,
        clean: CleanRun,
        logit_tokens: list[int],
        batch: int,
        progress: bool,
    ) -> None:
        assert model.dims is not None
        self.model, self.transcoders, self.clean = model, transcoders, clean
        self.n_layers, self.t = model.dims.n_layers, clean.ids.shape[1]
        self.logit_tokens, self.progress = logit_tokens, progress
        # the active latents, ordered by (layer, position, index)
        layer, pos, index, act = [], [], [], []
        for lay in sorted(clean.latents):
            f = clean.latents[lay]
            p, i = f.nonzero(as_tuple=True)
            layer.append(torch.full_like(p, lay))
            pos.append(p)
            index.append(i)
            act.append(f[p, i])
        cat = lambda xs, dt: torch.cat(xs) if xs else torch.zeros(0, dtype=dt)  # noqa: E731
        self.f_layer = cat(layer, torch.long).cpu()
        self.f_pos = cat(pos, torch.long).cpu()
        self.f_index = cat(index, torch.long).cpu()
        self.f_act = cat(act, torch.float32).cpu()
        self.n_features = len(self.f_act)
        # no more copies of the prompt than there are targets
        self.batch = max(1, min(batch, self.n_features + len(logit_tokens)))
        self.n_sources = self.n_features + self.n_layers * self.t + self.t
        self.rows: dict[int, Tensor] = {}  # target (feature index, or -1 - logit number) → row
        self.values: dict[int, float] = {}
        self.passes = 0
        self.local = LocalReplacement(model, transcoders, clean)
        self._fwd: Forward | None = None
        self._bar = tqdm(total=None, desc="graph rows", unit="row", disable=not progress)

    # --- rows ---------------------------------------------------------------------------

    def _forward(self) -> Forward:
        if self._fwd is None:
            with torch.enable_grad():
                self._fwd = self.local.forward(self.batch)
        return self._fwd

    def compute(self, targets: list[int]) -> None:
        """The rows (direct effects of every source) of `targets`, one backward per batch."""
        for start in range(0, len(targets), self.batch):
            chunk = targets[start : start + self.batch]
            vals, rows = self.backward(self._forward(), chunk, keep=True)
            for k, target in enumerate(chunk):
                self.rows[target] = rows[k].cpu()
                self.values[target] = float(vals[k])
            self.passes += 1
            self._bar.update(len(chunk))

    def backward(
        self, fwd: Forward, targets: list[int], keep: bool = False
    ) -> tuple[Tensor, Tensor]:
        """One backward pass through `fwd` for `targets` (row k of the batch is target k's):
        their values [t] and rows [t, n_sources]; `keep` keeps the graph for more passes."""
        with torch.enable_grad():
            vals = self._target_values(fwd, targets)
            grads = torch.autograd.grad(
                vals.sum(), fwd.writes, retain_graph=keep, allow_unused=True
            )
        rows = self._edges([
            (torch.zeros_like(w) if g is None else g)[: len(targets)].detach()
            for g, w in zip(grads, fwd.writes, strict=True)
        ])  # fmt: skip
        return vals.detach(), rows

    def _target_values(self, fwd: Forward, targets: list[int]) -> Tensor:
        vals = []
        for row, target in enumerate(targets):
            if target < 0:
                logits = fwd.logits[row, -1].float()
                tok = self.logit_tokens[-1 - target]
                vals.append(logits[tok] - logits.mean())
            else:
                layer, pos, i = (int(self.f_layer[target]), int(self.f_pos[target]),
                                 int(self.f_index[target]))  # fmt: skip
                tc = self.transcoders[layer]
                x = fwd.mlp_in[layer][row, pos].to(tc.W_enc.dtype)
                vals.append((x @ tc.W_enc[:, i] + tc.b_enc[i]).float())
        return torch.stack(vals)

    def _edges(self, grads: list[Tensor]) -> Tensor:
        """Rows [b, n_sources]: latents, then errors (layer-major), then tokens."""
        clean = self.clean
        g_embed, g_layers = grads[0].float(), [g.float() for g in grads[1:]]
        parts = []
        for layer in sorted(clean.latents):
            sel = self.f_layer == layer
            if not sel.any():
                continue
            pos, idx, act = self.f_pos[sel], self.f_index[sel], self.f_act[sel]
            tc = self.transcoders[layer]
            dec = tc.W_dec.detach()[idx.to(tc.W_dec.device)].float()  # [n, d]
            g = g_layers[layer][:, pos.to(g_embed.device)]  # [b, n, d]
            parts.append((g * dec[None]).sum(-1) * act.to(g.device)[None])
        errors = [
            (g_layers[layer] * clean.errors[layer][None]).sum(-1) for layer in range(self.n_layers)
        ]
        parts += errors
        parts.append((g_embed * clean.resid0[None]).sum(-1))
        return torch.cat(parts, dim=1) if parts else torch.zeros(len(g_embed), 0)

    # --- which latents to expand ------------------------------------------------------

    def expand(self, max_feature_nodes: int) -> None:
        """Logit rows, then latents by estimated influence, `batch` at a time."""
        logit_targets = [-1 - k for k in range(len(self.logit_tokens))]
        budget = min(max_feature_nodes, self.n_features)
        first = self.f_act.argsort(descending=True)[
            : max(0, min(budget, self.batch - len(logit_targets)))
        ]
        self.compute(logit_targets + first.tolist())
        while len(self.expanded) < budget:
            est = self._estimate()
            est[self.expanded_tensor] = -math.inf
            take = min(self.batch, budget - len(self.expanded))
            nxt = est.topk(take).indices.tolist()
            self.compute(nxt)
        self._bar.close()

    @property
    def expanded(self) -> list[int]:
        return sorted(t for t in self.rows if t >= 0)

    @property
    def expanded_tensor(self) -> Tensor:
        return torch.tensor(self.expanded, dtype=torch.long)

    def _estimate(self) -> Tensor:
        """Each latent's influence on the logits through the rows computed so far."""
        targets = sorted(self.rows)
        rows = torch.stack([self.rows[t] for t in targets]).abs()
        rows = rows / rows.sum(-1, keepdim=True).clamp_min(1e-30)
        # node index space: the sources, then the logits
        weight = torch.zeros(self.n_sources + len(self.logit_tokens))
        logit_w = self.clean.logits[-1].softmax(-1)[self.logit_tokens].cpu()
        weight[self.n_sources :] = logit_w
        row_node = torch.tensor([t if t >= 0 else self.n_sources + (-1 - t) for t in targets])
        total = torch.zeros(self.n_sources)
        cur = weight
        for _ in range(self.n_layers + 2):
            src = cur[row_node] @ rows  # [n_sources]
            total += src
            cur = torch.zeros_like(weight)
            cur[: self.n_sources] = src
            if not src.any():
                break
        return total[: self.n_features]

    # --- the result ------------------------------------------------------------------

    def graph(
        self, probs: list[float], node_threshold: float, edge_threshold: float, seconds: float
    ) -> AttributionGraph:
        model, clean = self.model, self.clean
        kept = self.expanded
        keep_f = torch.tensor(kept, dtype=torch.long)
        nf, ne, nt, nl = len(kept), self.n_layers * self.t, self.t, len(self.logit_tokens)
        n = nf + ne + nt + nl
        # source columns: the kept latents, then every error and token column
        cols = torch.cat([keep_f, torch.arange(self.n_features, self.n_sources)])
        adj = torch.zeros(n, n)
        value = torch.zeros(n)
        for r, target in enumerate(kept):
            adj[r, : nf + ne + nt] = self.rows[target][cols]
            value[r] = self.values[target]
        for k in range(nl):
            adj[nf + ne + nt + k, : nf + ne + nt] = self.rows[-1 - k][cols]
            value[nf + ne + nt + k] = self.values[-1 - k]
        bias = value - adj.sum(-1)
        bias[nf : nf + ne + nt] = 0.0
        kind = torch.cat([torch.full((nf,), FEATURE), torch.full((ne,), ERROR),
                          torch.full((nt,), EMBEDDING), torch.full((nl,), LOGIT)]).to(torch.int8)  # fmt: skip
        err_layer = torch.arange(self.n_layers).repeat_interleave(self.t)
        err_pos = torch.arange(self.t).repeat(self.n_layers)
        last = self.t - 1
        layer = torch.cat([self.f_layer[keep_f], err_layer, torch.full((nt,), -1),
                           torch.full((nl,), self.n_layers)]).to(torch.int32)  # fmt: skip
        pos = torch.cat([self.f_pos[keep_f], err_pos, torch.arange(nt),
                         torch.full((nl,), last)]).to(torch.int32)  # fmt: skip
        ids = clean.ids[0].cpu()
        index = torch.cat([self.f_index[keep_f], torch.full((ne,), -1), ids,
                           torch.tensor(self.logit_tokens, dtype=torch.long)])  # fmt: skip
        err_norm = torch.stack([clean.errors[lay].norm(dim=-1) for lay in range(self.n_layers)])
        activation = torch.cat([self.f_act[keep_f], err_norm.reshape(-1).cpu(),
                                clean.resid0.norm(dim=-1).cpu(), torch.tensor(probs)])  # fmt: skip
        logit_weight = torch.zeros(n)
        logit_weight[nf + ne + nt :] = torch.tensor(probs)
        infl = influence(adj, logit_weight, self.n_layers + 2)
        node_mask, edge_mask = prune(adj, logit_weight, kind, node_threshold, edge_threshold,
                                     self.n_layers + 2)  # fmt: skip
        full = scores(adj, logit_weight, kind, self.n_layers + 2)
        pruned = scores(adj * edge_mask, logit_weight, kind, self.n_layers + 2)
        all_scores = {**full, **{f"pruned_{k}": v for k, v in pruned.items()}}
        tokens = (
            model.to_str_tokens(clean.ids[0])
            if model.tokenizer is not None
            else [str(i) for i in ids.tolist()]
        )
        return AttributionGraph(
            model=model.name,
            prompt=_text(model, clean.ids),
            tokens=list(tokens),
            token_ids=ids.tolist(),
            n_layers=self.n_layers,
            transcoders=self.source,
            kind=kind,
            layer=layer,
            pos=pos,
            index=index,
            activation=activation.float(),
            value=value,
            bias=bias,
            influence=infl,
            adjacency=adj,
            node_mask=node_mask,
            edge_mask=edge_mask,
            scores=all_scores,
            node_threshold=float(node_threshold),
            edge_threshold=float(edge_threshold),
            config={
                "active_features": self.n_features,
                "expanded_features": nf,
                "backward_passes": self.passes,
                "batch": self.batch,
                "first_as_error": self.first_as_error,
                "seconds": seconds,
                "logit_texts": {
                    str(t): (model.tokenizer.decode([t]) if model.tokenizer is not None else str(t))
                    for t in self.logit_tokens
                },
            },
        )


def _text(model: Model, ids: Tensor) -> str:
    if model.tokenizer is None:
        return " ".join(str(i) for i in ids[0].tolist())
    return str(model.tokenizer.decode(ids[0].tolist()))


def head_contributions(
    model: Model,
    transcoders: TranscoderSet,
    graph: AttributionGraph,
    edges: Sequence[tuple[int, int]],
    *,
    batch: int = 64,
    progress: bool = True,
) -> Tensor:
    """How much of each graph edge (source node, target node) runs through each attention
    head: [edge, layer, head], the edge's weight minus its weight with the gradient through
    that head stopped (paths through several heads count for each).

    An edge between positions is carried by attention; this says by which heads. One
    backward row per (target, head), `batch` rows per pass.

    Example::

        shares = head_contributions(model, tcs, g, [(g.find("E_3303_3"), g.find("31_3303_14"))])
        shares[0].flatten().topk(3)      # the heads that move that token to the logit
    """
    assert model.dims is not None
    check_model(model, transcoders)
    transcoders = transcoders.to(model.device)
    n_layers, n_heads = model.dims.n_layers, model.dims.n_heads
    ids = torch.tensor([graph.token_ids], device=model.device)
    first = bool(graph.config.get("first_as_error", False))
    clean = clean_run(model, transcoders, ids, first_as_error=first)
    logits = graph.nodes_of(LOGIT)
    tokens = [int(graph.index[i]) for i in logits]
    b = _Builder(model, transcoders, clean, tokens, batch, progress=False)
    feature_col = {(int(la), int(p), int(i)): k for k, (la, p, i) in
                   enumerate(zip(b.f_layer, b.f_pos, b.f_index, strict=True))}  # fmt: skip
    t_len = b.t

    def column(node: int) -> int:
        kind, layer, pos = int(graph.kind[node]), int(graph.layer[node]), int(graph.pos[node])
        if kind == FEATURE:
            return feature_col[(layer, pos, int(graph.index[node]))]
        if kind == ERROR:
            return b.n_features + layer * t_len + pos
        if kind == EMBEDDING:
            return b.n_features + n_layers * t_len + pos
        raise GraphError(f"node {graph.node_id(node)} is a logit: it has no out-edges")

    def target_of(node: int) -> int:
        if int(graph.kind[node]) == FEATURE:
            return column(node)
        if int(graph.kind[node]) == LOGIT:
            return -1 - logits.index(node)
        raise GraphError(f"node {graph.node_id(node)} has no in-edges (an error or a token)")

    heads = [(layer, h) for layer in range(n_layers) for h in range(n_heads)]
    out = torch.zeros(len(edges), n_layers, n_heads)
    bar = tqdm(total=len({t for _, t in edges}) * (len(heads) + 1), desc="head rows",
               unit="row", disable=not progress)  # fmt: skip
    for target in sorted({t for _, t in edges}):
        specs: list[tuple[int, int] | None] = [None, *heads]
        rows = []
        for start in range(0, len(specs), batch):
            chunk = specs[start : start + batch]
            blocked = [(r, s[0], s[1]) for r, s in enumerate(chunk) if s is not None]
            with torch.enable_grad():
                fwd = b.local.forward(len(chunk), blocked=blocked)
            rows.append(b.backward(fwd, [target_of(target)] * len(chunk))[1])
            bar.update(len(chunk))
        table = torch.cat(rows)  # [1 + heads, n_sources]
        for e, (s, t) in enumerate(edges):
            if t == target:
                col = column(s)
                out[e] = (table[0, col] - table[1:, col]).reshape(n_layers, n_heads).cpu()
    bar.close()
    return out

"""Checking a graph by intervention: does changing a latent do what its edges predict?

For each of a graph's top latents (by influence, in the pruned graph), the
latent is scaled by `factor` (0: zero-ablated) at its position through the
transcoder sites (`mechscope.transcoders.attach`), and the change of the target
logit (demeaned) and of every other checked latent downstream is measured, in
two models:

- the model itself: the sites keep each layer's error term, so the change
  reaches later layers through the real MLPs (their error terms recomputed);
- the replacement model the graph describes: every layer's error term held at
  its clean value, so later MLPs answer through their transcoders (attention,
  norms and the latents' nonlinearity still live).

The
graph predicts those changes by propagating the change linearly along its
edges (each latent's edges are per its whole activation, so per unit they are
``A[t, s] / a_s``; an active latent passes on a change of its pre-activation
one to one): the prediction keeps attention and norms frozen and every latent
active, so it differs from the measurement where those assumptions fail. The
agreement is the Spearman rank correlation over the checked latents (target
logit) and over the (latent, downstream latent) pairs.

All interventions run in one batched forward: row r holds latent r's change.
"""

from __future__ import annotations

from dataclasses import field
from typing import TYPE_CHECKING, Any

import numpy as np

from .._arrays import as_numpy
from ..errors import InputError
from ..results import Result, result
from .results import FEATURE, LOGIT, AttributionGraph

if TYPE_CHECKING:
    from jaxtyping import Float
    from torch import Tensor

    from ..core.model import Model
    from ..transcoders.model import TranscoderSet

FORMAT = "mechscope.graph_check/1"
CHECK_FILE = "check.safetensors"


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two equal-length vectors (ties get mean ranks); nan
    for fewer than 3 values or a constant one.

    Example: ``spearman(np.array([1., 2, 3]), np.array([10., 30, 20]))`` → 0.5.
    """
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if len(a) != len(b):
        raise InputError(f"spearman takes two vectors of one length, got {len(a)} and {len(b)}")
    if len(a) < 3:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = x.argsort(kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for v in np.unique(x):  # ties: the mean rank
        sel = x == v
        if sel.sum() > 1:
            ranks[sel] = ranks[sel].mean()
    return ranks


@result
class GraphCheck(Result):
    """Predicted and measured effects of scaling a graph's top latents.

    ``predicted_logit`` / ``measured_logit`` [latent]: change of the target logit
    (demeaned) when latent r is scaled by `factor`; ``predicted_downstream`` /
    ``measured_downstream`` [latent, latent]: change of checked latent c's activation
    when latent r is scaled (nan where c is not downstream of r).

    Example: ``check_graph(model, tcs, g).logit_correlation`` → 0.9.
    """

    format = FORMAT
    model: str
    prompt: str
    nodes: list[str]  # the checked latents' node ids
    target: str  # the target logit's node id
    factor: float
    predicted_logit: Float[Tensor, " latent"]
    measured_logit: Float[Tensor, " latent"]
    predicted_downstream: Float[Tensor, "latent latent"]
    measured_downstream: Float[Tensor, "latent latent"]
    frozen_logit: Float[Tensor, " latent"]  # measured with every error term held at its clean value
    frozen_downstream: Float[Tensor, "latent latent"]
    logit_correlation: float
    downstream_correlation: float
    frozen_logit_correlation: float
    frozen_downstream_correlation: float
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.nodes)
        for name in ("predicted_logit", "measured_logit", "frozen_logit"):
            if list(getattr(self, name).shape) != [n]:
                raise InputError(
                    f"{name} should be [latent={n}], got {list(getattr(self, name).shape)}"
                )
        for name in ("predicted_downstream", "measured_downstream", "frozen_downstream"):
            if list(getattr(self, name).shape) != [n, n]:
                raise InputError(
                    f"{name} should be [{n}, {n}], got {list(getattr(self, name).shape)}"
                )

    def rows(self) -> list[dict[str, Any]]:
        """One row per checked latent: node id, predicted and measured logit changes."""
        p, m = as_numpy(self.predicted_logit), as_numpy(self.measured_logit)
        f = as_numpy(self.frozen_logit)
        return [
            {"node": node, "predicted": float(p[i]), "measured": float(m[i]),
             "measured_frozen_errors": float(f[i])}
            for i, node in enumerate(self.nodes)
        ]  # fmt: skip

    def summary(self) -> str:
        return (
            f"GraphCheck({self.model}, {len(self.nodes)} latents × {self.factor:g} → "
            f"{self.target}: Spearman ρ predicted vs measured — model: target logit "
            f"{self.logit_correlation:.3f}, downstream latents {self.downstream_correlation:.3f}; "
            f"errors frozen: {self.frozen_logit_correlation:.3f}, "
            f"{self.frozen_downstream_correlation:.3f})"
        )


def _predict(graph: AttributionGraph, source: int, delta: float, depth: int) -> np.ndarray:
    """The graph's linear prediction of every node's change when `source` changes by `delta`."""
    adj = as_numpy(graph.adjacency).astype(np.float64)
    kind = as_numpy(graph.kind).astype(int)
    act = as_numpy(graph.activation).astype(np.float64)
    feats = kind == FEATURE
    per_unit = np.zeros_like(adj)
    per_unit[:, feats] = adj[:, feats] / np.where(act[feats] > 0, act[feats], np.inf)
    rows = feats | (kind == LOGIT)
    per_unit[~rows] = 0.0
    change = np.zeros(len(kind))
    change[source] = delta
    total = change.copy()
    for _ in range(depth):
        change = per_unit @ change
        change[source] = 0.0
        if not change.any():
            break
        total += change
    return total


def check_graph(
    model: Model,
    transcoders: TranscoderSet,
    graph: AttributionGraph,
    *,
    top: int = 10,
    factor: float = 0.0,
    target: str | None = None,
) -> GraphCheck:
    """Scale each of the graph's `top` latents by `factor` in the model and compare the
    measured changes with the graph's predictions (see the module docstring).

    Example::

        check = check_graph(model, tcs, g, top=10)      # zero-ablate the top 10
        check.logit_correlation, check.rows()
    """
    import torch

    from ..core.interventions import replace, scale
    from ..transcoders.attach import attach_transcoders

    if not isinstance(graph, AttributionGraph):
        raise InputError(
            f"graph must be an AttributionGraph (attribution_graph, open_graph_run), got "
            f"{type(graph).__name__}"
        )
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise InputError(f"top must be an integer ≥ 1, got {top!r}")
    if not isinstance(factor, (int, float)) or not np.isfinite(factor) or factor == 1:
        raise InputError(f"factor must be a finite number other than 1, got {factor!r}")
    picked = [r["node"] for r in graph.top_features(top)]
    if not picked:
        raise InputError("the pruned graph has no latents to check")
    kind = as_numpy(graph.kind).astype(int)
    logits = [i for i in range(graph.n_nodes) if kind[i] == LOGIT]
    if target is None:
        acts = as_numpy(graph.activation)
        tnode = max(logits, key=lambda i: float(acts[i]))
    else:
        tnode = graph.find(target)
        if kind[tnode] != LOGIT:
            raise InputError(f"target {target!r} is not a logit node of the graph")
    layer, pos, index = (as_numpy(getattr(graph, k)).astype(int) for k in ("layer", "pos", "index"))
    act = as_numpy(graph.activation).astype(np.float64)
    ids = torch.tensor([graph.token_ids], device=model.device)
    n = len(picked)
    depth = graph.n_layers + 2
    with attach_transcoders(model, transcoders) as sites:
        errors = [sites.error(la) for la in sites.layers]
        save = sorted({sites.latents(int(layer[i])) for i in picked})
        ivs = [
            scale(sites.latents(int(layer[s])), float(factor), rows=[r], positions=[int(pos[s])],
                  neurons=[int(index[s])])
            for r, s in enumerate(picked)
        ]  # fmt: skip
        with torch.no_grad():
            base = model.run(ids, save=[*save, *errors])
            out = model.run(ids.expand(n, -1), save=save, interventions=ivs)
            held = [replace(e, base.cache[e].expand(n, *base.cache[e].shape[1:])) for e in errors]
            frozen = model.run(ids.expand(n, -1), save=save, interventions=[*held, *ivs])
    assert base.logits is not None and out.logits is not None and frozen.logits is not None
    tok = int(index[tnode])

    def demeaned(logits: Tensor) -> Tensor:
        last = logits[:, -1].float()
        return last[:, tok] - last.mean(-1)

    measured_logit = (demeaned(out.logits) - demeaned(base.logits)).cpu().numpy()
    frozen_logit = (demeaned(frozen.logits) - demeaned(base.logits)).cpu().numpy()
    pred_logit = np.zeros(n)
    pred_down = np.full((n, n), np.nan)
    meas_down = np.full((n, n), np.nan)
    froz_down = np.full((n, n), np.nan)
    for r, s in enumerate(picked):
        change = _predict(graph, s, (factor - 1.0) * act[s], depth)
        pred_logit[r] = change[tnode]
        for c, u in enumerate(picked):
            if layer[u] <= layer[s]:
                continue  # not downstream
            site = sites.latents(int(layer[u]))
            before = float(base.cache[site][0, int(pos[u]), int(index[u])])
            after = float(out.cache[site][r, int(pos[u]), int(index[u])])
            meas_down[r, c] = after - before
            froz_down[r, c] = float(frozen.cache[site][r, int(pos[u]), int(index[u])]) - before
            pred_down[r, c] = change[u]
    ok = ~np.isnan(pred_down)
    ids_ = graph.node_ids()
    return GraphCheck(
        model=graph.model,
        prompt=graph.prompt,
        nodes=[ids_[i] for i in picked],
        target=ids_[tnode],
        factor=float(factor),
        predicted_logit=torch.tensor(pred_logit, dtype=torch.float32),
        measured_logit=torch.tensor(measured_logit, dtype=torch.float32),
        predicted_downstream=torch.tensor(pred_down, dtype=torch.float32),
        measured_downstream=torch.tensor(meas_down, dtype=torch.float32),
        frozen_logit=torch.tensor(frozen_logit, dtype=torch.float32),
        frozen_downstream=torch.tensor(froz_down, dtype=torch.float32),
        logit_correlation=spearman(pred_logit, measured_logit),
        downstream_correlation=spearman(pred_down[ok], meas_down[ok]),
        frozen_logit_correlation=spearman(pred_logit, frozen_logit),
        frozen_downstream_correlation=spearman(pred_down[ok], froz_down[ok]),
        config={"top": top, "pairs": int(ok.sum())},
    )

"""Attribution patching: the gradient's linear approximation of activation patching.

Denoising a component a from corrupted to clean changes the metric by about
(a_clean − a_corrupted) · ∂metric/∂a, the gradient taken on the corrupted run
(Nanda 2023; Syed et al. 2023). Two forwards and one backward give the
approximation for every head, MLP layer, neuron and residual position at once.
`rank_agreement` checks how well it ranks components against real patching.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.model import Inputs, Model
from ..errors import InputError
from .results import AttributionPatching
from .sweep import Metric, _per_prompt, _tokens


def attribution_patching(
    model: Model, clean: Inputs, corrupted: Inputs, metric: Metric
) -> AttributionPatching:
    """Estimate denoising patching for every head, MLP, neuron and resid position (2 forwards, 1 backward).

    Example::

        approx = attribution_patching(model, clean_tokens, corrupted_tokens, metric)
        approx.heads   # [layer, head], compare with activation_patching(..., "attn.z", per_position=False)
    """
    if model.dims is None:
        raise InputError("attribution patching needs a transformer with known sites")
    clean_x, corrupt_x = _tokens(model, clean), _tokens(model, corrupted)
    if clean_x.shape != corrupt_x.shape:
        raise InputError(
            f"clean and corrupted inputs must have the same shape, got {tuple(clean_x.shape)} "
            f"and {tuple(corrupt_x.shape)}"
        )
    n = clean_x.shape[0]
    sites = ["blocks.*.attn.z", "blocks.*.mlp.out", "blocks.*.mlp.post", "blocks.*.resid_pre"]
    clean_run = model.run(clean_x, save=sites)
    m_clean = _per_prompt(metric(clean_run.logits), n).mean().item()
    corrupt_metric: list[float] = []

    def backward(logits: Tensor) -> Tensor:
        value = _per_prompt_grad(metric(logits), n).mean()
        corrupt_metric.append(value.item())
        return value

    corrupt_run = model.run(corrupt_x, save=sites, save_grad=sites, backward=backward)
    m_corrupt = corrupt_metric[0]
    denom = m_clean - m_corrupt
    if not (math.isfinite(m_clean) and math.isfinite(m_corrupt)):
        raise InputError(
            f"the metric must be finite on the clean and corrupted runs, got {m_clean} and "
            f"{m_corrupt}"
        )
    if abs(denom) < 1e-12:
        raise InputError("clean and corrupted metrics are equal: nothing to attribute")

    def effect(site: str, keep: tuple[int, ...]) -> Tensor:
        delta = clean_run.cache[site] - corrupt_run.cache[site]
        prod = delta * corrupt_run.cache.grads[site]
        reduce = tuple(i for i in range(prod.ndim) if i not in keep)
        return prod.sum(reduce) / denom  # the gradient is of the batch mean already

    n_layers = model.dims.n_layers
    heads_by_pos = torch.stack(
        [effect(f"blocks.{layer}.attn.z", (1, 2)).T for layer in range(n_layers)]
    )  # [layer, head, pos]
    return AttributionPatching(
        heads=heads_by_pos.sum(-1),
        heads_by_pos=heads_by_pos,
        mlps=torch.stack([effect(f"blocks.{layer}.mlp.out", ()) for layer in range(n_layers)]),
        neurons=torch.stack(
            [effect(f"blocks.{layer}.mlp.post", (2,)) for layer in range(n_layers)]
        ),
        resid=torch.stack([effect(f"blocks.{layer}.resid_pre", (1,)) for layer in range(n_layers)]),
        clean_metric=m_clean,
        corrupted_metric=m_corrupt,
    )


def _per_prompt_grad(value: Tensor, n: int) -> Tensor:
    """Like `_per_prompt` but keeps the graph."""
    value = value.reshape(-1)
    if value.numel() not in (1, n):
        raise InputError(
            f"metric must return one value per prompt ({n}) or a scalar, got {value.numel()}"
        )
    return value


@dataclass(frozen=True)
class RankAgreement:
    """How well an approximation ranks components against real patching.

    Example: ``rank_agreement(approx.heads, real.values).spearman`` → a float in [−1, 1].
    """

    spearman: float
    pearson: float
    top_k_overlap: float
    k: int

    def __repr__(self) -> str:
        return (
            f"RankAgreement(spearman {self.spearman:.3f}, pearson {self.pearson:.3f}, "
            f"top-{self.k} overlap {self.top_k_overlap:.0%})"
        )


def rank_agreement(approx: Tensor, real: Tensor, k: int = 10) -> RankAgreement:
    """Spearman and Pearson correlation, and the overlap of the top-k by |effect|.

    Example::

        approx = attribution_patching(model, clean, corrupted, metric)
        real = activation_patching(model, clean, corrupted, metric, "attn.z", per_position=False)
        rank_agreement(approx.heads, real.values, k=10)  # RankAgreement(spearman 0.961, …)
    """
    from scipy.stats import pearsonr, spearmanr

    a, r = approx.flatten().double().numpy(), real.flatten().double().numpy()
    k = min(k, a.size)
    top_a = set(torch.from_numpy(abs(a)).topk(k).indices.tolist())
    top_r = set(torch.from_numpy(abs(r)).topk(k).indices.tolist())
    return RankAgreement(
        float(spearmanr(a, r).statistic), float(pearsonr(a, r).statistic), len(top_a & top_r) / k, k
    )

"""Probes on contrast pairs: CCS, logistic regression, difference of means, and zero-shot.

`hidden_states` reads the residual stream after every block at the last
token of x+ and x−. Each side is normalised over the data set (its mean
removed and divided by its standard deviation, as Burns et al. do) so the
probes cannot read the answer token itself.

- `CCSProbe`: p(x) = σ(θᵀφ(x) + b) trained without labels to be consistent,
  p(x+) ≈ 1 − p(x−), and confident, min(p(x+), p(x−)) ≈ 0; several random
  restarts, the lowest loss kept. Its sign is arbitrary: accuracies are
  reported as max(acc, 1 − acc), and `orient` fixes the sign with labels.
- `LogisticProbe`: supervised logistic regression on φ(x+) − φ(x−).
- `MeanDiffProbe`: the difference of the class means of φ(x+) − φ(x−).
- `zero_shot`: the model's own P("Yes") against P("No") after the question.

`Accuracy`, `Normaliser` and `LinearDirection` live in `probes.results` (no
torch) and are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from ..core.interventions import stop
from ..core.model import Model
from ..errors import InputError
from .data import ContrastPair, pair_texts, question_head
from .results import Accuracy, LinearDirection, Normaliser

__all__ = [
    "Accuracy",
    "CCSProbe",
    "LinearDirection",
    "Normaliser",
    "hidden_states",
    "logistic_probe",
    "mean_diff_probe",
    "normalise",
    "zero_shot",
    "zero_shot_logodds",
]


@torch.no_grad()
def hidden_states(
    model: Model,
    pairs: Sequence[ContrastPair],
    *,
    batch_size: int = 16,
    chat: bool | None = None,
    progress: bool = True,
) -> tuple[Float[Tensor, "n layer d"], Float[Tensor, "n layer d"]]:
    """φ(x+) and φ(x−): ``blocks.L.resid_post`` at the last token, for every layer L (float32, CPU).

    Example: ``pos, neg = hidden_states(model, pairs)`` → two [n_pairs, n_layers, d_model] tensors.
    """
    if model.dims is None:
        raise InputError("probes need a transformer language model")
    if not pairs:
        raise InputError("no contrast pairs")
    sites = [f"blocks.{i}.resid_post" for i in range(model.dims.n_layers)]
    out: dict[bool, list[Tensor]] = {True: [], False: []}
    texts = [pair_texts(model, p, chat=chat) for p in pairs]
    for i in tqdm(range(0, len(pairs), batch_size), desc="hidden states", disable=not progress):
        chunk = texts[i : i + batch_size]
        for side, column in ((True, 0), (False, 1)):
            batch = [t[column] for t in chunk]
            lengths = model.lengths(batch)
            # the forward ends at the last block: no unembedding (262k logits a token on Gemma)
            cache = model.run(batch, save=sites, interventions=[stop(sites[-1])]).cache
            rows = torch.arange(len(batch))
            stacked = torch.stack([cache[s][rows, lengths - 1] for s in sites], dim=1)
            out[side].append(stacked.float().cpu())
    return torch.cat(out[True]), torch.cat(out[False])


def _check_states(what: str, pos: Tensor, neg: Tensor, labels: Tensor | None = None) -> None:
    """Contrast states a probe can fit: φ(x+) and φ(x−) both [n, d], real, finite; labels [n]."""
    for name, t in (("pos", pos), ("neg", neg)):
        if not isinstance(t, Tensor) or not t.is_floating_point() or t.ndim != 2:
            got = f"{t.dtype} {list(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
            raise InputError(f"{what}: {name} must be a float tensor [n, d], got {got}")
        if not bool(torch.isfinite(t).all()):
            raise InputError(f"{what}: {name} holds NaN or infinite entries")
    if pos.shape != neg.shape or len(pos) < 1:
        raise InputError(
            f"{what}: pos and neg must be the same non-empty [n, d], got {list(pos.shape)} and "
            f"{list(neg.shape)}"
        )
    if labels is not None and (not isinstance(labels, Tensor) or labels.shape != pos.shape[:1]):
        got = list(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise InputError(f"{what}: labels must be [n] = [{len(pos)}], got {got}")


def normalise(x: Float[Tensor, "n ... d"]) -> Float[Tensor, "n ... d"]:
    """Each feature centred and scaled over the data set (axis 0).

    Example: ``normalise(pos)`` → the same shape, each feature of mean 0 and std 1 over the pairs.
    """
    return (x - x.mean(0)) / (x.std(0) + 1e-6)


class CCSProbe(torch.nn.Module):
    """Contrast-consistent search: a linear probe trained without labels.

    Example::

        p, n = normalise(pos[:, 16]), normalise(neg[:, 16])  # pos, neg from hidden_states
        probe, loss = CCSProbe.fit(p, n)
        probe.credence(p, n)  # [n] P(true); its sign is arbitrary until `orient`
    """

    def __init__(self, d: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(d, 1)

    def forward(self, x: Float[Tensor, "n d"]) -> Float[Tensor, " n"]:
        return torch.sigmoid(self.linear(x)).squeeze(-1)

    @staticmethod
    def loss(p_pos: Tensor, p_neg: Tensor) -> Tensor:
        """Consistency (p+ − (1 − p−))² plus confidence min(p+, p−)², averaged."""
        return ((p_pos - (1 - p_neg)) ** 2 + torch.minimum(p_pos, p_neg) ** 2).mean()

    @classmethod
    def fit(
        cls,
        pos: Float[Tensor, "n d"],
        neg: Float[Tensor, "n d"],
        *,
        restarts: int = 10,
        epochs: int = 1000,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        seed: int = 0,
    ) -> tuple[CCSProbe, float]:
        """The probe with the lowest loss over `restarts` random starts, and that loss."""
        if restarts < 1:
            raise InputError("CCS needs at least one restart")
        _check_states("CCS", pos, neg)
        best: tuple[CCSProbe, float] | None = None
        g = torch.Generator().manual_seed(seed)
        for _ in range(restarts):
            probe = cls(pos.shape[-1])
            with torch.no_grad():
                w = torch.randn(pos.shape[-1], generator=g)
                probe.linear.weight.copy_(w / w.norm() / math.sqrt(pos.shape[-1]))
                probe.linear.bias.zero_()
            opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
            with torch.enable_grad():
                for _ in range(epochs):
                    opt.zero_grad()
                    loss = cls.loss(probe(pos), probe(neg))
                    loss.backward()
                    opt.step()
            final = float(cls.loss(probe(pos), probe(neg)).detach())
            if best is None or final < best[1]:
                best = (probe, final)
        assert best is not None
        return best

    @torch.no_grad()
    def credence(self, pos: Tensor, neg: Tensor) -> Float[Tensor, " n"]:
        """The probe's P(true): ½(p(x+) + 1 − p(x−))."""
        return 0.5 * (self(pos) + 1 - self(neg))

    def direction(self, layer: int | None = None) -> LinearDirection:
        """The probe as a direction on φ(x+) − φ(x−) (its sign as fitted; `orient` it first).

        The credence ½(p(x+) + 1 − p(x−)) exceeds ½ exactly where θᵀφ(x+) > θᵀφ(x−),
        so the direction is θ with no bias.
        """
        return LinearDirection(self.linear.weight.detach()[0].clone(), 0.0, layer, "ccs")

    @torch.no_grad()
    def orient(self, pos: Tensor, neg: Tensor, labels: Tensor) -> bool:
        """Flip the probe if it is below chance on labelled data; True when it flipped."""
        acc = float(((self.credence(pos, neg) > 0.5) == labels.bool()).float().mean())
        if acc < 0.5:
            self.linear.weight.neg_()
            self.linear.bias.neg_()
            return True
        return False


def logistic_probe(
    pos: Tensor, neg: Tensor, labels: Tensor, *, epochs: int = 500, weight_decay: float = 1e-2
) -> LinearDirection:
    """Supervised logistic regression on φ(x+) − φ(x−) (full-batch L-BFGS-free Adam).

    Example: ``logistic_probe(p, n, labels).predict(p, n)`` → [n] booleans (p, n: normalised
    states [n, d]; labels: [n] booleans).
    """
    _check_states("logistic probe", pos, neg, labels)
    x, y = pos - neg, labels.float()
    w = torch.zeros(x.shape[-1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=1e-2)
    with torch.enable_grad():
        for _ in range(epochs):
            opt.zero_grad()
            logits = x @ w + b
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
            (loss + weight_decay * (w**2).sum()).backward()
            opt.step()
    return LinearDirection(w.detach(), float(b.detach()))


def mean_diff_probe(pos: Tensor, neg: Tensor, labels: Tensor) -> LinearDirection:
    """The difference of the class means of φ(x+) − φ(x−), thresholded halfway between them.

    Example: ``mean_diff_probe(p, n, labels).predict(p, n)`` → [n] booleans.
    """
    _check_states("difference of means", pos, neg, labels)
    x, y = pos - neg, labels.bool()
    if y.all() or not y.any():
        raise InputError("difference of means needs both true and false pairs")
    mu_t, mu_f = x[y].mean(0), x[~y].mean(0)
    w = mu_t - mu_f
    return LinearDirection(w, float(-(mu_t + mu_f) @ w / 2))


@torch.no_grad()
def zero_shot_logodds(
    model: Model,
    pairs: Sequence[ContrastPair],
    *,
    chat: bool | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> Float[Tensor, " n"]:
    """log P(positive) − log P(negative) of the first answer token after each question.

    Example: ``zero_shot_logodds(model, pairs[:8])`` → [8] log-odds (> 0: the positive answer).
    """
    out = []
    for i in tqdm(range(0, len(pairs), batch_size), desc="zero-shot", disable=not progress):
        chunk = pairs[i : i + batch_size]
        heads, pos_ids, neg_ids = [], [], []
        for p in chunk:
            head, sep = question_head(model, p, chat=chat)
            heads.append(head)
            pos_ids.append(model.ids(sep + p.positive, False)[0])
            neg_ids.append(model.ids(sep + p.negative, False)[0])
        lengths = model.lengths(heads)
        logits = model.run(heads).logits[torch.arange(len(chunk)), lengths - 1].float()
        rows = torch.arange(len(chunk))
        out.append((logits[rows, pos_ids] - logits[rows, neg_ids]).cpu())
    return torch.cat(out)


def zero_shot(
    model: Model,
    pairs: Sequence[ContrastPair],
    *,
    chat: bool | None = None,
    calibrated: bool = False,
    progress: bool = True,
) -> Tensor:
    """The model's own answer: True where P(positive) > P(negative) after the question.

    `calibrated` thresholds the log-odds at their median over `pairs`
    instead of 0 (no labels used): a model that leans to one answer is then
    judged on its ranking, as an unsupervised baseline should be.

    Example: ``Accuracy.of(zero_shot(model, pairs), torch.tensor([p.label for p in pairs]))``.
    """
    logodds = zero_shot_logodds(model, pairs, chat=chat, progress=progress)
    return logodds > (logodds.median() if calibrated else 0)

"""Toy models of superposition (Elhage et al. 2022): n sparse features in m < n dimensions.

`train_toy` trains many ReLU output models at once (one tensor with an
instance axis) over a grid of importance decays × feature sparsities;
`phase_diagram` trains the one-extra-feature models (n=2, m=1) whose `phases`
say whether the extra feature is dropped, shares the dimension in
superposition (antipodally) or gets the dimension to itself.
`feature_norms`, `superposition`, `features_represented` and
`dims_per_feature` measure trained weights; the ``plot_*`` functions draw the
paper's figures; `toy_run` writes everything into a run folder. Dense
features give about m orthogonal features (the most important ones, as PCA
would); sparse features give more features than dimensions.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..errors import InputError
from .results import ToyResult

# 1 − S from 1 (dense) down to 0.001 in a log grid, as in the paper's figures
DEFAULT_SPARSITIES: tuple[float, ...] = tuple(1 - 10 ** (-3 * k / 7) for k in range(8))
# the phase diagram's axes: relative importance 0.1 … 10, 1 − S from 1 down to 0.01
PHASE_IMPORTANCES: tuple[float, ...] = tuple(10 ** (k / 3 - 1) for k in range(7))
PHASE_SPARSITIES: tuple[float, ...] = tuple(1 - 10 ** (-k / 3) for k in range(7))
PHASES = ("not represented", "superposition", "dedicated dimension")
PHASE_COLOURS = ("#c7ccd6", "#d1495b", "#2e86ab")


class ToyModel(nn.Module):
    """Many toy models at once: h = W x, x' = ReLU(Wᵀh + b), or x' = Wᵀh + b (the linear model).

    W: [instance, m, n] embeds n features in m < n dimensions; each instance
    is trained on its own data (x_i = 0 with probability S, else uniform on
    [0, 1]) to minimise L = Σ_i I_i (x_i − x'_i)² averaged over x.

    Example::

        toy = ToyModel(n_instances=8, n_features=20, d_hidden=5)
        toy(torch.rand(8, 1024, 20))    # [8, 1024, 20]
    """

    def __init__(
        self,
        n_instances: int,
        n_features: int,
        d_hidden: int,
        *,
        relu: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        std = math.sqrt(2 / (n_features + d_hidden))  # Xavier normal, as in the paper's code
        w = torch.randn(n_instances, d_hidden, n_features, generator=generator) * std
        self.W = nn.Parameter(w)
        self.b = nn.Parameter(torch.zeros(n_instances, n_features))
        self.relu = relu

    def forward(self, x: Float[Tensor, "instance batch n"]) -> Float[Tensor, "instance batch n"]:
        h = torch.bmm(x, self.W.transpose(1, 2))  # [instance, batch, m]
        out = torch.baddbmm(self.b[:, None, :], h, self.W)
        return out.relu() if self.relu else out


def sample_features(
    batch_size: int, sparsity: Float[Tensor, " instance"], n_features: int, g: torch.Generator
) -> Float[Tensor, "instance batch n"]:
    """Features that are 0 with probability S, else uniform on [0, 1], all independent.

    Example: ``sample_features(1024, torch.full((8,), 0.9), 20, torch.Generator())`` →
    [8, 1024, 20].
    """
    density = (1 - sparsity)[:, None, None]
    u = torch.rand(len(sparsity), batch_size, n_features, generator=g)
    # one draw does both: u < 1−S has probability 1−S, and then u / (1−S) is uniform on [0, 1)
    return torch.where(u < density, u / density, 0.0)


def toy_loss(
    out: Float[Tensor, "instance batch n"],
    x: Float[Tensor, "instance batch n"],
    importance: Float[Tensor, "instance 1 n"],
) -> Float[Tensor, " instance"]:
    """Σ_i I_i (x_i − x'_i)², averaged over the batch, per instance.

    Example::

        importance = (0.7 ** torch.arange(20.0)).expand(8, 1, 20)
        toy_loss(toy(x), x, importance)     # [8]
    """
    return (importance * (x - out) ** 2).sum(-1).mean(-1)


# --- measures of trained weights ------------------------------------------------------------


def feature_norms(W: Float[Tensor, "*grid m n"]) -> Float[Tensor, "*grid n"]:
    """||W_i||: how strongly feature i is represented (about 1 when it is, 0 when dropped).

    Example: ``feature_norms(train_toy(20, 5).W)`` → [8, 20], one row per sparsity.
    """
    return W.norm(dim=-2)


def superposition(W: Float[Tensor, "*grid m n"]) -> Float[Tensor, "*grid n"]:
    """Σ_{j≠i} (Ŵ_i·W_j)²: how much other features share feature i's direction (0: none).

    Example: ``superposition(train_toy(20, 5).W)`` → [8, 20], larger at the sparser rows.
    """
    unit = W / W.norm(dim=-2, keepdim=True).clamp_min(1e-8)
    overlap = unit.transpose(-1, -2) @ W  # [..., i, j] = Ŵ_i · W_j
    off_diagonal = 1 - torch.eye(W.shape[-1], dtype=W.dtype)
    return (overlap * off_diagonal).pow(2).sum(-1)


def features_represented(
    W: Float[Tensor, "*grid m n"], threshold: float = 0.5
) -> Int[Tensor, "*grid"]:
    """How many features have ||W_i|| > `threshold`.

    Example: ``features_represented(train_toy(20, 5, sparsities=[0.0, 0.999]).W)`` →
    ``tensor([5, 12])``.
    """
    return (feature_norms(W) > threshold).sum(-1)


def dims_per_feature(W: Float[Tensor, "*grid m n"]) -> Float[Tensor, "*grid"]:
    """m / ||W||_F²: dimensions per feature (1: one each; 0.5: two features share each).

    Example: ``dims_per_feature(train_toy(20, 5, sparsities=[0.0, 0.999]).W)`` →
    ``tensor([1.00, 0.34])``.
    """
    return W.shape[-2] / W.pow(2).sum((-2, -1)).clamp_min(1e-12)


# --- training -------------------------------------------------------------------------------


def _check(n_features: int, d_hidden: int, sparsities: Sequence[float], steps: int) -> None:
    if not 1 <= d_hidden < n_features:
        raise InputError(
            f"need 1 <= m < n (fewer dimensions than features, or nothing is superposed); "
            f"got n={n_features}, m={d_hidden}"
        )
    bad = [s for s in sparsities if not 0 <= s < 1]
    if bad or not sparsities:
        raise InputError(
            f"sparsity S (the probability a feature is zero) must be in [0, 1); got {bad or 'none'}"
        )
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    # these tensors are too small to gain from intra-op threads, and on a busy machine
    # extra threads spin against other work (5x slower, measured on 2 shared cores)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fit(
    axis: tuple[str, Sequence[float]],
    importance: Float[Tensor, "value n"],
    sparsities: Sequence[float],
    d_hidden: int,
    relu: bool,
    **config: Any,
) -> ToyResult:
    """Train a model per (axis value, sparsity), `restarts` each in one batch; keep the best.

    `importance` has one row per value of `axis`, the grid's outer axis; `config`
    (steps, batch_size, lr, restarts, seed) is kept in the result.
    """
    steps, lr, restarts = config["steps"], config["lr"], config["restarts"]
    if restarts < 1 or config["batch_size"] < 1:
        raise InputError(
            f"restarts and batch_size must be >= 1; got {restarts}, {config['batch_size']}"
        )
    g = torch.Generator().manual_seed(config["seed"])
    sparsity = torch.tensor([float(s) for s in sparsities]).repeat(len(axis[1]))
    importance = importance.repeat_interleave(len(sparsities), 0)
    (n_grid, n), batch = importance.shape, config["batch_size"]
    imp = importance.repeat(restarts, 1)[:, None, :]  # restart-major: instance r * n_grid + k
    sp = sparsity.repeat(restarts)
    model = ToyModel(len(sp), n, d_hidden, relu=relu, generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    with _one_thread():
        for step in range(steps):
            # a cosine decay settles the weights within a few thousand steps
            opt.param_groups[0]["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            x = sample_features(batch, sp, n, g)
            # instances are independent: the sum trains each on its own loss
            loss = toy_loss(model(x), x, imp).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            # every restart of a point is judged on the same held-out data
            x = sample_features(8 * batch, sparsity, n, g).repeat(restarts, 1, 1)
            losses = toy_loss(model(x), x, imp).view(restarts, n_grid)
    best = losses.argmin(0) * n_grid + torch.arange(n_grid)
    W, b = model.W.detach()[best], model.b.detach()[best]
    grid = {axis[0]: tuple(map(float, axis[1])), "sparsity": tuple(map(float, sparsities))}
    return ToyResult(W, b, sparsity, importance, losses.min(0).values, grid, relu, config)


def train_toy(
    n_features: int = 20,
    d_hidden: int = 5,
    *,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    decays: Sequence[float] = (0.7,),
    relu: bool = True,
    steps: int = 3000,
    batch_size: int = 1024,
    lr: float = 1e-2,
    restarts: int = 1,
    seed: int = 0,
) -> ToyResult:
    """Train one toy model per (importance decay, sparsity); feature i has importance decay**i.

    `restarts` trains that many models per grid point and keeps the one with
    the lowest held-out loss. Example::

        r = train_toy(20, 5, sparsities=[0.0, 0.999])
        features_represented(r.W)  # tensor([5, 12]): superposition when sparse
    """
    _check(n_features, d_hidden, sparsities, steps)
    if not decays or any(not 0 < d <= 1 for d in decays):
        raise InputError(f"importance decays must be in (0, 1]; got {list(decays)}")
    importance = torch.tensor([[float(d) ** i for i in range(n_features)] for d in decays])
    config = dict(steps=steps, batch_size=batch_size, lr=lr, restarts=restarts, seed=seed)
    return _fit(("decay", decays), importance, sparsities, d_hidden, relu, **config)


def phase_diagram(
    *,
    relative_importances: Sequence[float] = PHASE_IMPORTANCES,
    sparsities: Sequence[float] = PHASE_SPARSITIES,
    n_features: int = 2,
    d_hidden: int = 1,
    steps: int = 1000,
    batch_size: int = 512,
    lr: float = 1e-2,
    restarts: int = 6,
    seed: int = 0,
) -> ToyResult:
    """One extra feature: features 0…n−2 have importance 1, the last r; all share sparsity S.

    The paper's phase diagram is n=2, m=1 (also n=3, m=2); classify the
    points with `phases`. Restarts avoid the local minima the paper warns
    about (same-sign initial weights cannot become antipodal).

    Example: ``phases(phase_diagram())`` → [49], one phase index per (importance, sparsity).
    """
    _check(n_features, d_hidden, sparsities, steps)
    if not relative_importances or any(r <= 0 for r in relative_importances):
        raise InputError(f"relative importances must be > 0; got {list(relative_importances)}")
    importance = torch.ones(len(relative_importances), n_features)
    importance[:, -1] = torch.tensor([float(r) for r in relative_importances])
    config = dict(steps=steps, batch_size=batch_size, lr=lr, restarts=restarts, seed=seed)
    axis = ("relative_importance", relative_importances)
    return _fit(axis, importance, sparsities, d_hidden, True, **config)


def phases(result: ToyResult, threshold: float = 0.5) -> Int[Tensor, " instance"]:
    """Phase of the extra (last) feature per instance, an index into `PHASES`.

    0: not represented (||W_extra|| <= threshold); 1: superposition (it shares
    its direction: superposition > threshold); 2: a dedicated dimension.

    Example: ``[PHASES[i] for i in phases(phase_diagram())]`` → ``["not represented", …]``.
    """
    norm = feature_norms(result.W)[..., -1]
    shared = superposition(result.W)[..., -1]
    return torch.where(norm <= threshold, 0, torch.where(shared > threshold, 1, 2))


def quick_sweep(seed: int = 0) -> ToyResult:
    """The default sparsity sweep (n=20, m=5, importance 0.7^i) in seconds: for the tour.

    Example: ``quick_sweep().features_represented()`` → ``[5, …, 13]``, one per sparsity.
    """
    return train_toy(20, 5, steps=2000, seed=seed)

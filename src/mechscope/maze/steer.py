"""Reading and steering the maze policy: the cheese vector, cheese channels, retargeting.

All of it goes through the core: the policy is a `Model`, ``block2.res1`` a
site, and every edit an intervention.

- *Cheese vector* (Turner, Mini et al. 2023): activations at a site with the
  cheese minus without, the mouse at the start. Subtracting it while the mouse
  stands elsewhere (the decision square) removes the pull toward the cheese.
  The control is the same operation with a vector from two cheese-free mazes,
  scaled to the cheese vector's norm.
- *Cheese channels*: channels whose activation map correlates with where the
  cheese is, over many mazes.
- *Retargeting*: on a cheese-free maze, add each cheese channel's mean
  response to cheese (`CheeseChannels.template`) at a chosen square; the mouse
  then walks there.

The results (`DecisionEffect`, `CheeseChannels`, `Retargeting`) are in
``results.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..core import interventions as ms
from ..core.model import Model
from ..errors import InputError
from .behaviour import LogitsFn, action_probs, decision_squares, toward
from .env import GRID, Mazes, random_squares, rollout
from .results import CheeseChannels, DecisionEffect, Retargeting

SITE = "block2.res1"


def activations(
    model: Model, mazes: Mazes, site: str = SITE, mouse: Int[Tensor, "batch 2"] | None = None
) -> Float[Tensor, "batch channel h w"]:
    """The activation at `site` with the mouse at `mouse` (default: the start).

    Example: ``activations(model, mazes)`` → [batch 32 8 8] at ``block2.res1``.
    """
    obs = mazes.observe(mazes.start if mouse is None else mouse)
    with torch.no_grad():
        _, cache = model.run(obs, save=[site], interventions=[ms.stop(site)])
    return cache[site].cpu()


def cheese_vectors(
    model: Model, mazes: Mazes, site: str = SITE
) -> Float[Tensor, "batch channel h w"]:
    """Per maze: activation with its cheese minus without (mouse at the start).

    Example: ``cheese_vectors(model, mazes)`` → [batch 32 8 8], one vector per maze.
    """
    return activations(model, mazes, site) - activations(model, mazes.without_cheese(), site)


def control_vectors(
    model: Model,
    mazes: Mazes,
    like: Float[Tensor, "batch channel h w"],
    site: str = SITE,
    *,
    seed: int = 0,
) -> Float[Tensor, "batch channel h w"]:
    """Per maze: act(maze j) − act(maze k) for two other cheese-free mazes, at `like`'s norm.

    Example: ``control_vectors(model, mazes, cheese_vectors(model, mazes))`` → [batch 32 8 8].
    """
    n = len(mazes)
    if n < 3:
        raise InputError("control vectors need at least three mazes")
    g = torch.Generator().manual_seed(seed)
    j = (torch.arange(n) + torch.randint(1, n, (n,), generator=g)) % n
    k = (j + torch.randint(1, n - 1, (n,), generator=g)) % n
    k = torch.where(k == torch.arange(n), (k + 1) % n, k)
    free = activations(model, mazes.without_cheese(), site)
    raw = free[j] - free[k]
    scale = like.flatten(1).norm(dim=1) / raw.flatten(1).norm(dim=1).clamp_min(1e-8)
    return raw * scale[:, None, None, None]


def steered(model: Model, site: str, vectors: Tensor, coeff: float) -> LogitsFn:
    """Logits with ``coeff · vectors`` added at `site` (one vector per row, or one for all).

    Example: ``rollout(mazes, steered(model, "block2.res1", cheese_vectors(model, mazes), -1.0))``.
    """

    if vectors.ndim != 4:
        raise InputError(
            f"steering vectors are [batch channel h w] at {site!r}, got {tuple(vectors.shape)}"
        )

    def logits_of(obs: Tensor) -> Tensor:
        if vectors.shape[0] not in (1, obs.shape[0]):
            raise InputError(f"{vectors.shape[0]} steering vectors for {obs.shape[0]} observations")
        logits, _ = model.run(obs, interventions=[ms.add(site, coeff * vectors.to(model.device))])
        return logits

    return logits_of


def plain(model: Model) -> LogitsFn:
    """The policy's logits, through the model's hooks (no interventions).

    Example: ``behaviour(plain(model), mazes)``.
    """

    def logits_of(obs: Tensor) -> Tensor:
        return model.run(obs).logits

    return logits_of


def decision_effects(
    model: Model, mazes: Mazes, vectors: Float[Tensor, "batch channel h w"], coeffs: Sequence[float],
    site: str = SITE,
) -> list[DecisionEffect]:  # fmt: skip
    """`decision_effect` for each of `coeffs` (decision squares and the unsteered run done once).

    Example: ``[e.change for e in decision_effects(model, mazes, vectors, [-0.5, -1.0])]``.
    """
    dec = decision_squares(mazes)
    if (dec[:, 0] < 0).any():
        raise InputError("every maze needs a decision square (filter with decision_squares first)")
    cheese_move = toward(mazes, dec, mazes.cheese)
    rows = torch.arange(len(mazes))
    before = action_probs(plain(model), mazes, dec)[rows, cheese_move]
    return [
        DecisionEffect(
            before, action_probs(steered(model, site, vectors, c), mazes, dec)[rows, cheese_move], c
        )
        for c in coeffs
    ]


def decision_effect(
    model: Model, mazes: Mazes, vectors: Float[Tensor, "batch channel h w"], coeff: float = -1.0,
    site: str = SITE,
) -> DecisionEffect:  # fmt: skip
    """Add ``coeff · vectors[i]`` at `site` with the mouse on maze i's decision square.

    Example: ``decision_effect(model, mazes, cheese_vectors(model, mazes)).after`` → [batch].
    """
    return decision_effects(model, mazes, vectors, [coeff], site)[0]


def cell_of(squares: Int[Tensor, "batch 2"], side: int) -> Int[Tensor, "batch 2"]:
    """The cell of a `side` × `side` activation map over the grid that holds each square.

    On the 8 × 8 maps (one 3 × 3 stride-2 pooling) cell i is centred on square
    2i, so maze cells (even squares) map exactly; other sides scale.

    Example: ``cell_of(torch.tensor([[4, 10]]), 8)`` → ``tensor([[2, 5]])``.
    """
    return (
        (squares * side // GRID).clamp(0, side - 1)
        if side != (GRID + 1) // 2
        else (squares + 1) // 2
    )


def cheese_channels(model: Model, mazes: Mazes, site: str = SITE) -> CheeseChannels:
    """Correlate every channel's map with a one-hot map of the cheese's cell over `mazes`.

    The map is taken relative to the same maze without cheese (with − without),
    so that the maze's walls, which vary far more, do not drown the cheese.

    Example: ``cheese_channels(model, generate(2000, region=None), "block1.res2").top(8)``.
    """
    with_cheese = activations(model, mazes, site)  # [batch channel h w]
    delta = with_cheese - activations(model, mazes.without_cheese(), site)
    n, c, h, w = with_cheese.shape
    cell = cell_of(mazes.cheese, h)
    onehot = torch.zeros(n, h, w)
    onehot[torch.arange(n), cell[:, 0], cell[:, 1]] = 1.0
    a = delta.permute(1, 0, 2, 3).reshape(c, -1)
    b = onehot.reshape(-1)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean()
    r = (a @ b) / (a.norm(dim=1) * b.norm()).clamp_min(1e-8)
    padded = torch.nn.functional.pad(delta, (2, 2, 2, 2))
    windows = torch.stack(
        [padded[i, :, y : y + 5, x : x + 5] for i, (y, x) in enumerate(cell.tolist())]
    )
    # the template is for cheese on a maze cell (even squares), where retargeting puts it
    centred = (mazes.cheese % 2 == 0).all(1)
    return CheeseChannels(site, r, windows[centred if centred.any() else slice(None)].mean(0), h)


def retarget_edit(
    channels: CheeseChannels, picks: Sequence[int], target: Int[Tensor, "batch 2"], strength: float = 1.0
) -> Float[Tensor, "batch channel h w"]:  # fmt: skip
    """What to add at the site to put a synthetic cheese at each `target` square in `picks`.

    Example: ``retarget_edit(channels, channels.top(6), torch.tensor([[4, 10]]))`` → [1 c h w].
    """
    n, side = target.shape[0], channels.side
    c = channels.template.shape[0]
    edit = torch.zeros(n, c, side + 4, side + 4)
    cell = cell_of(target, side)
    idx = torch.tensor(list(picks))
    for i, (y, x) in enumerate(cell.tolist()):
        edit[i, idx, y : y + 5, x : x + 5] = strength * channels.template[idx]
    return edit[:, :, 2:-2, 2:-2]


def retarget(
    model: Model, mazes: Mazes, channels: CheeseChannels, picks: Sequence[int], *,
    target: Int[Tensor, "batch 2"] | None = None, strength: float = 1.0, steps: int = 250,
    seed: int = 0,
) -> Retargeting:  # fmt: skip
    """Roll out cheese-free `mazes` with a synthetic cheese written into channels `picks`.

    Also rolled out: the same mazes without the edit, and with a real cheese
    on the target (what a perfect edit would reach).

    Targets default to random open squares of each maze's cells (even squares)
    other than the start and the top-right corner.

    Example: ``retarget(model, mazes, channels, channels.top(6), strength=2.0).rate``.
    """
    free = mazes.without_cheese()
    if target is None:
        cells = free.open.clone()
        cells[:, 1::2, :] = False
        cells[:, :, 1::2] = False
        rows = torch.arange(len(free))
        cells[rows, free.start[:, 0], free.start[:, 1]] = False
        cells[rows, free.corner[:, 0], free.corner[:, 1]] = False
        target = random_squares(cells, torch.Generator().manual_seed(seed))
    edit = retarget_edit(channels, picks, target, strength)
    goal = free.with_cheese(target).cheese  # checks the targets are open
    marked = Mazes(free.open, free.size, free.offset, goal)  # rollout stops at the goal
    hidden = cheese_blind(model, channels.site, edit)
    path = rollout(marked, hidden, steps=steps, seed=seed)
    base = rollout(marked, cheese_blind(model), steps=steps, seed=seed)
    real = rollout(marked, plain(model), steps=steps, seed=seed)
    reached = [(p[:, -1] == goal).all(1) for p in (path, base, real)]
    return Retargeting(target, *reached, channels=list(picks), strength=strength)


def cheese_blind(model: Model, site: str | None = None, edit: Tensor | None = None) -> LogitsFn:
    """Logits on observations with the cheese channel blanked, plus `edit` added at `site`.

    Retargeting marks its goal as "cheese" so that rollouts stop there; the
    policy must not see it.

    Example: ``rollout(mazes, cheese_blind(model))`` (the mouse no longer sees the cheese).
    """
    ivs = [] if edit is None or site is None else [ms.add(site, edit.to(model.device))]

    def logits_of(obs: Tensor) -> Tensor:
        obs = obs.clone()
        obs[:, 2] = 0.0
        return model.run(obs, interventions=ivs).logits

    return logits_of

"""The maze world of Turner, Mini et al. (2023), in batches: perfect mazes, a mouse and its cheese.

A maze of odd side ``size`` (5…15 squares) is a perfect maze (one path
between any two squares, Kruskal's algorithm on the cells at even
coordinates) padded with wall to a fixed ``GRID`` × ``GRID`` square, so every
observation has the same shape. Its lower-left corner is where the mouse
starts; its upper-right corner is the square the misgeneralising policy heads
to. In training the cheese lies in the top-right ``region`` × ``region``
squares of the maze; in deployment (``region=None``) on any open square.

Coordinates are (row, col) on the padded grid, row 0 at the top. The
observation has three channels: open squares, the mouse, the cheese. Actions
are up, down, left, right; a move into a wall stays put. Everything is
vectorised over the batch and seeded: ``generate(n, seed=s)`` is the same
mazes on every machine. The batch itself, `Mazes`, is a result (in
``results.py``: it saves and reopens as one safetensors file).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from jaxtyping import Bool, Int
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import InputError
from .results import ACTIONS, CHANNELS, GRID, MOVE_STEPS, UNREACHABLE, Mazes  # noqa: F401

SIZES = (5, 7, 9, 11, 13, 15)
MOVES = torch.tensor(MOVE_STEPS)  # [action 2] (drow, dcol)


def _perfect_maze(size: int, rng: np.random.Generator) -> np.ndarray:
    """A `size` × `size` perfect maze (True = open) by Kruskal's algorithm on its cells."""
    k = (size + 1) // 2  # cells per side, at even coordinates
    grid = np.zeros((size, size), dtype=bool)
    grid[::2, ::2] = True
    parent = list(range(k * k))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    walls = [(r, c, r, c + 1) for r in range(k) for c in range(k - 1)]
    walls += [(r, c, r + 1, c) for r in range(k - 1) for c in range(k)]
    for i in rng.permutation(len(walls)):
        r0, c0, r1, c1 = walls[i]
        a, b = root(r0 * k + c0), root(r1 * k + c1)
        if a != b:
            parent[a] = b
            grid[r0 + r1, c0 + c1] = True  # the wall square between the two cells
    return grid


def best_actions(dist: Int[Tensor, "batch grid grid"]) -> Int[Tensor, "batch grid grid"]:
    """The first step of a shortest path to the target from every square (its `distances`).

    Example: ``best_actions(mazes.distances(mazes.cheese))`` → [batch grid grid], into `ACTIONS`.
    """
    padded = torch.nn.functional.pad(dist, (1, 1, 1, 1), value=UNREACHABLE)
    near = torch.stack(
        [padded[:, :-2, 1:-1], padded[:, 2:, 1:-1], padded[:, 1:-1, :-2], padded[:, 1:-1, 2:]], 1
    )  # [batch action grid grid], in ACTIONS order
    return near.argmin(1)


def on_shortest_path(
    d_from: Int[Tensor, "batch grid grid"],
    d_to: Int[Tensor, "batch grid grid"],
    to: Int[Tensor, "batch 2"],
) -> Bool[Tensor, "batch grid grid"]:
    """Squares on the shortest path between two squares, from their `distances` maps (`to` the end).

    Example::

        d_start, d_cheese = mazes.distances(mazes.start), mazes.distances(mazes.cheese)
        on_shortest_path(d_start, d_cheese, mazes.cheese)     # [batch grid grid] bool
    """
    length = d_from[torch.arange(len(to)), to[:, 0], to[:, 1]]
    return d_from + d_to == length[:, None, None]


def random_squares(
    mask: Bool[Tensor, "batch grid grid"], generator: torch.Generator
) -> Int[Tensor, "batch 2"]:
    """One square drawn uniformly from each row's `mask` (which must not be empty).

    Example: ``random_squares(mazes.open, torch.Generator().manual_seed(0))`` → [batch 2].
    """
    if not mask.flatten(1).any(1).all():
        raise InputError("no square to choose from in some maze")
    scores = torch.rand(mask.shape, generator=generator).masked_fill(~mask, -1.0)
    flat = scores.flatten(1).argmax(1)
    return torch.stack([flat // GRID, flat % GRID], 1)


def generate(
    n: int,
    *,
    seed: int = 0,
    region: int | None = 5,
    sizes: Sequence[int] = SIZES,
) -> Mazes:
    """`n` mazes with cheese in the top-right `region` × `region` (anywhere for ``region=None``).

    Maze i depends only on (`seed`, i), so a bigger `n` extends a smaller one.
    Example: ``train = generate(1000, region=5)``; ``deploy = generate(1000, seed=1, region=None)``.
    """
    bad = [s for s in sizes if s % 2 == 0 or not 3 <= s <= GRID]
    if bad or not sizes:
        raise InputError(f"maze sizes must be odd numbers from 3 to {GRID}, got {list(sizes)}")
    if region is not None and not 1 <= region <= max(sizes):
        raise InputError(
            f"cheese region must be 1 to {max(sizes)} squares (the largest maze's side; None "
            f"for anywhere), got {region}"
        )
    grids = torch.zeros(n, GRID, GRID, dtype=torch.bool)
    size = torch.zeros(n, dtype=torch.long)
    offset = torch.zeros(n, dtype=torch.long)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        s = int(rng.choice(sizes))
        o = ((GRID - s) // 2) & ~1  # even, so maze cells sit on even grid squares
        grids[i, o : o + s, o : o + s] = torch.from_numpy(_perfect_maze(s, rng))
        size[i], offset[i] = s, o
    mazes = Mazes(grids, size, offset, torch.full((n, 2), -1, dtype=torch.long))
    choices = mazes.region_mask(region)
    start = mazes.start
    choices[torch.arange(n), start[:, 0], start[:, 1]] = False
    g = torch.Generator().manual_seed(seed)
    return mazes.with_cheese(random_squares(choices, g))


def rollout(
    mazes: Mazes,
    policy: Callable[[Tensor], Tensor],
    *,
    steps: int = 250,
    seed: int = 0,
    greedy: bool = False,
    start: Int[Tensor, "batch 2"] | None = None,
    progress: bool = False,
) -> Int[Tensor, "batch steps+1 2"]:
    """The mouse's path in each maze under `policy` (actions sampled, or argmax with `greedy`).

    `policy` maps observations [batch 3 grid grid] to action logits [batch 4]:
    a `MazePolicy`, or a function running one with interventions. A mouse
    that reaches the cheese stays there; the rollout ends when all have.

    Example: ``rollout(generate(8), MazePolicy(), greedy=True)`` → [8 t 2], (row, col) per step.
    """
    g = torch.Generator().manual_seed(seed)
    mouse = (mazes.start if start is None else start).clone()
    path = [mouse]
    done = (mouse == mazes.cheese).all(1)
    with torch.no_grad():
        for _ in tqdm(range(steps), desc=f"rollouts ({len(mazes)} mazes)", disable=not progress):
            logits = policy(mazes.observe(mouse))
            if greedy:
                action = logits.argmax(-1)
            else:
                action = torch.multinomial(logits.float().softmax(-1).cpu(), 1, generator=g)[:, 0]
            moved = mazes.step(mouse, action.cpu())
            mouse = torch.where(done[:, None], mouse, moved)
            done = done | (mouse == mazes.cheese).all(1)
            path.append(mouse)
            if done.all():
                break
    return torch.stack(path, 1)

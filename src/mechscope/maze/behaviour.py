"""What the mouse does: rollouts, decision squares, and the vector field of its action probabilities.

The *decision square* of a maze is where the path from the start to the
cheese and the path from the start to the top-right corner part; the mouse's
probability of stepping toward the cheese there is the paper's measure of how
much it goes for the cheese rather than the corner. Mazes where one target
lies on the way to the other have no decision square (row of -1). The
results, `VectorField` and `Behaviour`, are in ``results.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .env import ACTIONS, GRID, Mazes, best_actions, on_shortest_path, rollout
from .results import Behaviour, VectorField

LogitsFn = Callable[[Tensor], Tensor]  # observations [batch 3 grid grid] -> logits [batch 4]


def decision_squares(mazes: Mazes) -> Int[Tensor, "batch 2"]:
    """Where the paths start → cheese and start → corner part (-1 where they do not).

    Example: ``decision_squares(generate(100, region=None))`` → [100 2], (row, col) or (-1, -1).
    """
    start, cheese, corner = mazes.start, mazes.cheese, mazes.corner
    d_start = mazes.distances(start)
    d_cheese = mazes.distances(cheese)
    d_corner = mazes.distances(corner)
    shared = on_shortest_path(d_start, d_cheese, cheese) & on_shortest_path(
        d_start, d_corner, corner
    )
    shared &= mazes.open
    depth = torch.where(shared, d_start, torch.full_like(d_start, -1)).flatten(1)
    flat = depth.argmax(1)
    square = torch.stack([flat // GRID, flat % GRID], 1)
    fork = ~(square == cheese).all(1) & ~(square == corner).all(1) & mazes.has_cheese
    return torch.where(fork[:, None], square, torch.full_like(square, -1))


def toward(
    mazes: Mazes, squares: Int[Tensor, "batch 2"], target: Int[Tensor, "batch 2"]
) -> Int[Tensor, " batch"]:
    """The action that steps from each square along the shortest path to `target`.

    Example: ``toward(mazes, mazes.start, mazes.cheese)`` → [batch], indices into `ACTIONS`.
    """
    moves = best_actions(mazes.distances(target))
    return moves[torch.arange(len(mazes)), squares[:, 0], squares[:, 1]]


def action_probs(
    logits_of: LogitsFn, mazes: Mazes, mouse: Int[Tensor, "batch 2"]
) -> Float[Tensor, "batch 4"]:
    """The policy's action probabilities (on the CPU) with the mouse at `mouse` in each maze.

    Example: ``action_probs(plain(model), mazes, mazes.start)`` → [batch 4], in `ACTIONS` order.
    """
    with torch.no_grad():
        return logits_of(mazes.observe(mouse)).float().softmax(-1).cpu()


def vector_field(logits_of: LogitsFn, maze: Mazes) -> VectorField:
    """The policy's action distribution on every open square of `maze` (one maze, batch 1).

    Example: ``vector_field(plain(model), mazes[0]).probs`` → [grid grid 4], zero on walls.
    """
    if len(maze) != 1:
        raise ValueError("vector_field takes one maze (index a batch with mazes[i])")
    squares = maze.open[0].nonzero()  # [square 2]
    many = maze[[0] * len(squares)]
    probs = torch.zeros(GRID, GRID, len(ACTIONS))
    probs[squares[:, 0], squares[:, 1]] = action_probs(logits_of, many, squares)
    cheese = tuple(maze.cheese[0].tolist()) if bool(maze.has_cheese[0]) else None
    return VectorField(probs, maze.open[0].clone(), cheese, int(maze.size[0]), int(maze.offset[0]))  # type: ignore[arg-type]


def behaviour(
    logits_of: LogitsFn, mazes: Mazes, *, steps: int = 250, seed: int = 0, progress: bool = False
) -> Behaviour:
    """Roll the mouse out in every maze and measure where it goes (see `Behaviour`).

    Example: ``behaviour(plain(model), generate(500, region=None)).reached_cheese`` → [500].
    """
    path = rollout(mazes, logits_of, steps=steps, seed=seed, progress=progress)  # [batch t 2]
    at_cheese = (path == mazes.cheese[:, None]).all(-1)
    at_corner = (path == mazes.corner[:, None]).all(-1)
    t = torch.arange(path.shape[1])
    first_cheese = torch.where(at_cheese, t, path.shape[1]).amin(1)
    first_corner = torch.where(at_corner, t, path.shape[1]).amin(1)
    reached = at_cheese.any(1)
    dec = decision_squares(mazes)
    has = dec[:, 0] >= 0
    p_cheese = torch.full((len(mazes),), float("nan"))
    p_corner = torch.full((len(mazes),), float("nan"))
    if has.any():
        sub = mazes[has]
        probs = action_probs(logits_of, sub, dec[has])
        rows = torch.arange(len(sub))
        p_cheese[has] = probs[rows, toward(sub, dec[has], sub.cheese)]
        p_corner[has] = probs[rows, toward(sub, dec[has], sub.corner)]
    dist_dec = torch.where(
        has, (mazes.cheese - dec).float().norm(dim=1), torch.tensor(float("nan"))
    )
    return Behaviour(
        reached_cheese=reached,
        reached_corner=at_corner.any(1) & (first_corner < first_cheese),
        steps=torch.where(reached, first_cheese, torch.tensor(steps)),
        cheese_to_corner=(mazes.cheese - mazes.corner).float().norm(dim=1),
        cheese_to_decision=dist_dec,
        p_cheese=p_cheese,
        p_corner=p_corner,
    )

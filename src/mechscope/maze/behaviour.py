"""What the mouse does: rollouts, decision squares, and the vector field of its action probabilities.

The *decision square* of a maze is where the path from the start to the
cheese and the path from the start to the top-right corner part; the mouse's
probability of stepping toward the cheese there is the paper's measure of how
much it goes for the cheese rather than the corner. Mazes where one target
lies on the way to the other have no decision square (row of -1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .env import ACTIONS, GRID, MOVES, Mazes, best_actions, on_shortest_path, rollout
from .record import TensorRecord

LogitsFn = Callable[[Tensor], Tensor]  # observations [batch 3 grid grid] -> logits [batch 4]


def decision_squares(mazes: Mazes) -> Int[Tensor, "batch 2"]:
    """Where the paths start → cheese and start → corner part (-1 where they do not)."""
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
    """The action that steps from each square along the shortest path to `target`."""
    moves = best_actions(mazes.distances(target))
    return moves[torch.arange(len(mazes)), squares[:, 0], squares[:, 1]]


def action_probs(
    logits_of: LogitsFn, mazes: Mazes, mouse: Int[Tensor, "batch 2"]
) -> Float[Tensor, "batch 4"]:
    with torch.no_grad():
        return logits_of(mazes.observe(mouse)).float().softmax(-1).cpu()


@dataclass(frozen=True)
class VectorField(TensorRecord):
    """Action probabilities with the mouse on every open square of one maze."""

    probs: Float[Tensor, "grid grid 4"]  # zero on walls
    open: Bool[Tensor, "grid grid"]
    cheese: tuple[int, int] | None
    size: int
    offset: int

    @property
    def arrows(self) -> Float[Tensor, "grid grid 2"]:
        """Expected move (drow, dcol) per square: Σ p(a)·move(a)."""
        return self.probs @ MOVES.float()


def vector_field(logits_of: LogitsFn, maze: Mazes) -> VectorField:
    """The policy's action distribution on every open square of `maze` (one maze, batch 1)."""
    if len(maze) != 1:
        raise ValueError("vector_field takes one maze (index a batch with mazes[i])")
    squares = maze.open[0].nonzero()  # [square 2]
    many = maze[[0] * len(squares)]
    probs = torch.zeros(GRID, GRID, len(ACTIONS))
    probs[squares[:, 0], squares[:, 1]] = action_probs(logits_of, many, squares)
    cheese = tuple(maze.cheese[0].tolist()) if bool(maze.has_cheese[0]) else None
    return VectorField(probs, maze.open[0].clone(), cheese, int(maze.size[0]), int(maze.offset[0]))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Behaviour(TensorRecord):
    """Rollouts from the start in a batch of (deployment) mazes, with the paper's features."""

    reached_cheese: Bool[Tensor, " batch"]
    reached_corner: Bool[Tensor, " batch"]  # visited the top-right corner before any cheese
    steps: Int[Tensor, " batch"]  # to the cheese (the budget where it never got there)
    cheese_to_corner: Float[Tensor, " batch"]  # Euclidean, in squares
    cheese_to_decision: Float[Tensor, " batch"]  # Euclidean; nan without a decision square
    p_cheese: Float[Tensor, " batch"]  # P(step toward cheese) at the decision square; nan without
    p_corner: Float[Tensor, " batch"]  # P(step toward the corner) there

    def binned(self, feature: str, edges: list[float]) -> list[dict[str, float]]:
        """Rates per bin of `feature` (``cheese_to_corner`` or ``cheese_to_decision``)."""
        x = getattr(self, feature)
        out = []
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            m = (x >= lo) & (x < hi)
            n = int(m.sum())
            dec = m & ~self.p_cheese.isnan()
            out.append({
                "from": lo, "to": hi, "mazes": n,
                "cheese": float(self.reached_cheese[m].float().mean()) if n else float("nan"),
                "corner": float(self.reached_corner[m].float().mean()) if n else float("nan"),
                "p_cheese": float(self.p_cheese[dec].mean()) if dec.any() else float("nan"),
                "p_corner": float(self.p_corner[dec].mean()) if dec.any() else float("nan"),
            })  # fmt: skip
        return out


def behaviour(
    logits_of: LogitsFn, mazes: Mazes, *, steps: int = 250, seed: int = 0, progress: bool = False
) -> Behaviour:
    """Roll the mouse out in every maze and measure where it goes (see `Behaviour`)."""
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

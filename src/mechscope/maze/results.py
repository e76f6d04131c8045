"""The maze agent's results: mazes, vector fields, behaviour and the steering measures, without torch.

`Mazes` (a batch of mazes with their cheese), `VectorField` (the policy's
action probabilities on every square of one maze), `Behaviour` (rollouts in
a batch of mazes), `DecisionEffect` (P(toward cheese) at the decision squares
before and after a steering vector), `CheeseChannels` and `Retargeting` are
frozen `Result` dataclasses: one safetensors file each (``behaviour``,
``channels`` and ``retarget.safetensors`` in the run folders), reopened with
torch tensors or, with ``arrays="numpy"``, without torch. Their summaries,
rates and rankings work on both kinds of array; the maze world's methods
(`Mazes.observe`, `Mazes.distances`, `Mazes.step`, …) need torch tensors.
Files written before (the old ``TensorRecord`` layout: the class name and the
other fields as JSON in the metadata) still load.

Example::

    b = Behaviour.load("runs/maze-eval/behaviour.safetensors", arrays="numpy")
    b.binned("cheese_to_corner", [0, 3, 6, 9, 12, 22])[-1]
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .._arrays import as_numpy
from ..errors import InputError
from ..results import Result, result

if TYPE_CHECKING:
    from jaxtyping import Bool, Float, Int
    from torch import Tensor

GRID = 15
"""Every maze is padded with wall to GRID × GRID squares."""
ACTIONS = ("up", "down", "left", "right")
MOVE_STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))
"""(drow, dcol) of each action, in `ACTIONS` order."""
CHANNELS = ("open", "mouse", "cheese")
UNREACHABLE = 10_000


def _rate(x: Any) -> float:
    """The share of true entries (NaN when empty)."""
    a = as_numpy(x)
    return float(a.astype(np.float64).mean()) if a.size else math.nan


def _mean(x: Any, mask: Any = None) -> float:
    """The mean of the entries of `x` under `mask` that are not NaN (NaN when none)."""
    a = as_numpy(x).astype(np.float64)
    keep = ~np.isnan(a) if mask is None else as_numpy(mask) & ~np.isnan(a)
    return float(a[keep].mean()) if keep.any() else math.nan


class MazeResult(Result):
    """Base of the maze results: reads the files of the old ``TensorRecord`` layout too.

    Those files carry ``{"kind": class name, "fields": JSON of the other
    fields}`` in their metadata and each tensor field under its name.

    Example: ``Behaviour.load("runs/maze-eval/behaviour.safetensors")`` (an old layout file too).
    """

    @classmethod
    def _upgrade(cls, record: dict[str, Any], found: str, path: object) -> dict[str, Any]:
        legacy = record.get("__legacy__") if not found else None
        if not isinstance(legacy, dict) or legacy.get("kind") != cls.__name__:
            return super()._upgrade(record, found, path)
        try:
            other = json.loads(legacy["fields"])
        except (KeyError, TypeError, ValueError):
            return super()._upgrade(record, found, path)
        out: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name not in other:
                out[f.name] = {"__array__": f.name}  # the old file's tensor of that name
            elif isinstance(other[f.name], list) and "tuple" in str(f.type):
                out[f.name] = {"__tuple__": other[f.name]}
            else:
                out[f.name] = other[f.name]
        return out


# --- the world --------------------------------------------------------------------------


@result
class Mazes(MazeResult):
    """A batch of mazes with their cheese; index it like a tensor (``mazes[3:5]``).

    Example: ``generate(1000, seed=1, region=None)[:4].observe(mazes.start)``.
    """

    format = "mechscope.mazes/1"

    open: Bool[Tensor, "batch grid grid"]
    size: Int[Tensor, " batch"]
    offset: Int[Tensor, " batch"]  # the maze's top-left square is (offset, offset)
    cheese: Int[Tensor, "batch 2"]  # (row, col); -1 where a maze has no cheese

    def __len__(self) -> int:
        return self.open.shape[0]

    def __getitem__(self, i: int | slice | Sequence[int] | Tensor) -> Mazes:
        if isinstance(i, int):
            i = [i]
        return Mazes(self.open[i], self.size[i], self.offset[i], self.cheese[i])

    def summary(self) -> str:
        if not len(self):
            return "no mazes"
        sizes = as_numpy(self.size)
        has = int((as_numpy(self.cheese)[:, 0] >= 0).sum())
        return (
            f"{len(self)} mazes of sizes {int(sizes.min())}–{int(sizes.max())}, {has} with cheese"
        )

    @property
    def start(self) -> Int[Tensor, "batch 2"]:
        """The mouse's start: the maze's lower-left square."""
        import torch

        return torch.stack([self.offset + self.size - 1, self.offset], 1)

    @property
    def corner(self) -> Int[Tensor, "batch 2"]:
        """The maze's upper-right square (where training always had cheese nearby)."""
        import torch

        return torch.stack([self.offset, self.offset + self.size - 1], 1)

    @property
    def has_cheese(self) -> Bool[Tensor, " batch"]:
        return self.cheese[:, 0] >= 0

    def without_cheese(self) -> Mazes:
        import torch

        return replace(self, cheese=torch.full_like(self.cheese, -1))

    def with_cheese(self, cheese: Int[Tensor, "batch 2"]) -> Mazes:
        import torch

        cheese = torch.as_tensor(cheese, dtype=torch.long).reshape(-1, 2)
        rows = torch.arange(len(self))
        if not self.open[rows, cheese[:, 0], cheese[:, 1]].all():
            raise InputError("cheese must lie on an open square of its maze")
        return replace(self, cheese=cheese)

    def observe(self, mouse: Int[Tensor, "batch 2"]) -> Float[Tensor, "batch 3 grid grid"]:
        """The policy's input: open squares, the mouse, the cheese (one channel each)."""
        import torch

        n = len(self)
        obs = torch.zeros(n, len(CHANNELS), GRID, GRID)
        obs[:, 0] = self.open.float()
        rows = torch.arange(n)
        obs[rows, 1, mouse[:, 0], mouse[:, 1]] = 1.0
        has = self.has_cheese
        obs[rows[has], 2, self.cheese[has, 0], self.cheese[has, 1]] = 1.0
        return obs

    def distances(self, target: Int[Tensor, "batch 2"]) -> Int[Tensor, "batch grid grid"]:
        """Steps from every open square to `target` along the maze (UNREACHABLE for walls)."""
        import torch

        n = len(self)
        dist = torch.full((n, GRID + 2, GRID + 2), float(UNREACHABLE))  # padded by one wall square
        dist[torch.arange(n), target[:, 0] + 1, target[:, 1] + 1] = 0
        closed = torch.nn.functional.pad(~self.open, (1, 1, 1, 1), value=True)
        inner = dist[:, 1:-1, 1:-1]
        for _ in range(GRID * GRID):
            near = torch.minimum(
                torch.minimum(dist[:, :-2, 1:-1], dist[:, 2:, 1:-1]),
                torch.minimum(dist[:, 1:-1, :-2], dist[:, 1:-1, 2:]),
            )
            new = torch.minimum(inner, near + 1).masked_fill_(closed[:, 1:-1, 1:-1], UNREACHABLE)
            if torch.equal(new, inner):
                break
            inner.copy_(new)
        return inner.long()

    def step(
        self, mouse: Int[Tensor, "batch 2"], action: Int[Tensor, " batch"]
    ) -> Int[Tensor, "batch 2"]:
        """Where each mouse is after `action` (a move into a wall stays put)."""
        import torch

        new = mouse + torch.tensor(MOVE_STEPS, device=mouse.device)[action]
        inside = ((new >= 0) & (new < GRID)).all(1)
        new = new.clamp(0, GRID - 1)
        ok = inside & self.open[torch.arange(len(self)), new[:, 0], new[:, 1]]
        return torch.where(ok[:, None], new, mouse)

    def region_mask(self, region: int | None) -> Bool[Tensor, "batch grid grid"]:
        """Open squares in the maze's top-right `region` × `region` (all open squares for None)."""
        import torch

        if region is None:
            return self.open.clone()
        r = torch.arange(GRID)
        top = self.offset[:, None]
        right = (self.offset + self.size)[:, None]
        rows = (r[None] >= top) & (r[None] < top + region)
        cols = (r[None] >= right - region) & (r[None] < right)
        return self.open & rows[:, :, None] & cols[:, None, :]


# --- behaviour --------------------------------------------------------------------------


@result
class VectorField(MazeResult):
    """Action probabilities with the mouse on every open square of one maze.

    Example: ``vector_field(plain(model), mazes[0]).arrows[r, c]`` → the expected move there.
    """

    format = "mechscope.vector_field/1"

    probs: Float[Tensor, "grid grid 4"]  # zero on walls
    open: Bool[Tensor, "grid grid"]
    cheese: tuple[int, int] | None
    size: int
    offset: int

    @property
    def arrows(self) -> Float[Tensor, "grid grid 2"]:
        """Expected move (drow, dcol) per square: Σ p(a)·move(a) (the kind of array `probs` is)."""
        if isinstance(self.probs, np.ndarray):
            return self.probs @ np.array(MOVE_STEPS, dtype=self.probs.dtype)
        import torch

        return self.probs @ torch.tensor(MOVE_STEPS, dtype=self.probs.dtype)

    def summary(self) -> str:
        cheese = f"cheese at {self.cheese}" if self.cheese is not None else "no cheese"
        squares = int(as_numpy(self.open).sum())
        return f"maze of side {self.size} at offset {self.offset}, {squares} open squares, {cheese}"


@result
class Behaviour(MazeResult):
    """Rollouts from the start in a batch of (deployment) mazes, with the paper's features.

    Example: ``behaviour(plain(model), deploy).binned("cheese_to_corner", [0, 3, 6, 22])``.
    """

    format = "mechscope.behaviour/1"

    reached_cheese: Bool[Tensor, " batch"]
    reached_corner: Bool[Tensor, " batch"]  # visited the top-right corner before any cheese
    steps: Int[Tensor, " batch"]  # to the cheese (the budget where it never got there)
    cheese_to_corner: Float[Tensor, " batch"]  # Euclidean, in squares
    cheese_to_decision: Float[Tensor, " batch"]  # Euclidean; nan without a decision square
    p_cheese: Float[Tensor, " batch"]  # P(step toward cheese) at the decision square; nan without
    p_corner: Float[Tensor, " batch"]  # P(step toward the corner) there

    def binned(self, feature: str, edges: list[float]) -> list[dict[str, float]]:
        """Rates per bin of `feature` (``cheese_to_corner`` or ``cheese_to_decision``)."""
        x = as_numpy(getattr(self, feature))
        cheese, corner = as_numpy(self.reached_cheese), as_numpy(self.reached_corner)
        out = []
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            m = (x >= lo) & (x < hi)
            n = int(m.sum())
            out.append({
                "from": lo, "to": hi, "mazes": n,
                "cheese": _rate(cheese[m]), "corner": _rate(corner[m]),
                "p_cheese": _mean(self.p_cheese, m), "p_corner": _mean(self.p_corner, m),
            })  # fmt: skip
        return out

    def summary(self) -> str:
        n = len(as_numpy(self.reached_cheese))
        decisions = int((~np.isnan(as_numpy(self.p_cheese))).sum())
        return (
            f"{n} mazes: cheese reached {_rate(self.reached_cheese):.1%}, corner first "
            f"{_rate(self.reached_corner):.1%}; at {decisions} decision squares "
            f"P(toward cheese) {_mean(self.p_cheese):.3f}, P(toward corner) {_mean(self.p_corner):.3f}"
        )


# --- steering ---------------------------------------------------------------------------


@result
class DecisionEffect(MazeResult):
    """P(step toward the cheese) at the decision squares, before and after adding a vector.

    Example: ``decision_effect(model, mazes, cheese_vectors(model, mazes)).change`` → ``-0.34``.
    """

    format = "mechscope.decision_effect/1"

    before: Float[Tensor, " batch"]
    after: Float[Tensor, " batch"]
    coeff: float

    @property
    def change(self) -> float:
        """The mean change of P(toward cheese)."""
        diff = as_numpy(self.after).astype(np.float64) - as_numpy(self.before)
        return float(diff.mean()) if diff.size else math.nan

    def summary(self) -> str:
        return (
            f"× {self.coeff:g} at {len(as_numpy(self.before))} decision squares: P(toward cheese) "
            f"{_mean(self.before):.3f} → {_mean(self.after):.3f} (change {self.change:+.3f})"
        )


@result
class CheeseChannels(MazeResult):
    """Channels of a site ranked by how well their map tracks the cheese, with their response.

    Example: ``cheese_channels(model, mazes, "block1.res2").top(8)`` → the 8 best channels.
    """

    format = "mechscope.cheese_channels/1"

    site: str
    correlation: Float[Tensor, " channel"]  # Pearson r of the map with the cheese's cell
    template: Float[Tensor, "channel 5 5"]  # mean (with − without cheese) around the cheese's cell
    side: int  # the site's map is side × side

    def top(self, k: int) -> list[int]:
        """The `k` channels whose maps track the cheese most, up or down (largest |r|)."""
        r = np.abs(as_numpy(self.correlation).astype(np.float64))
        return np.argsort(-r, kind="stable")[:k].tolist()

    def summary(self) -> str:
        r = as_numpy(self.correlation)
        best = ", ".join(f"{c} (r={float(r[c]):+.2f})" for c in self.top(4))
        return (
            f"{self.site} ({self.side}×{self.side}): {len(r)} channels; tracking the cheese "
            f"most: {best}"
        )


@result
class Retargeting(MazeResult):
    """How often the mouse reaches a chosen square, with and without the edit.

    Example: ``retarget(model, mazes, channels, channels.top(6)).rate`` → ``0.785``.
    """

    format = "mechscope.retargeting/1"

    target: Int[Tensor, "batch 2"]
    reached: Bool[Tensor, " batch"]  # with the edit
    reached_plain: Bool[Tensor, " batch"]  # without it
    reached_cheese: Bool[Tensor, " batch"]  # with a real cheese on the target (the reference)
    channels: list[int]
    strength: float

    @property
    def rate(self) -> float:
        """The share of mazes where the edited mouse reached the target."""
        return _rate(self.reached)

    @property
    def rate_plain(self) -> float:
        """The same without the edit."""
        return _rate(self.reached_plain)

    @property
    def rate_cheese(self) -> float:
        """The same with a real cheese on the target."""
        return _rate(self.reached_cheese)

    def summary(self) -> str:
        return (
            f"channels {self.channels} × {self.strength:g}: target reached in {self.rate:.1%} "
            f"of {len(as_numpy(self.reached))} mazes (without the edit {self.rate_plain:.1%}, "
            f"with a real cheese there {self.rate_cheese:.1%})"
        )

"""The records of the maze runs, without torch: what the CLI prints and the viewer shows.

`TrainingCurve` (``curve.safetensors`` of a ``maze-train`` run: loss, action
accuracy, cheese reached while training, the final reach), `BehaviourReport`
(``report.safetensors`` of a ``maze-eval`` run: reach in training and
deployment mazes, P(toward cheese) at decision squares, rates binned by the
cheese's distance to the corner and to the decision square) and
`SteerReport` (``steer.safetensors`` of a ``maze-steer`` run: the cheese
vector's sweep with its control, the cheese channels, the retargeting edit
and its calibration) are frozen `Result` dataclasses. The per-maze data
they summarise stay in `Behaviour`, `CheeseChannels` and `Retargeting`.

Example::

    report = BehaviourReport.load("runs/maze-eval/report.safetensors", arrays="numpy")
    report.by_corner_distance[-1].cheese
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._arrays import as_numpy
from ..errors import InputError
from ..results import Result, result
from .results import Behaviour, _mean, _rate

CORNER_BINS = [0.0, 3.0, 6.0, 9.0, 12.0, 22.0]  # Euclidean squares from the top-right corner
DECISION_BINS = [0.0, 2.0, 4.0, 6.0, 9.0, 22.0]


@result
class TrainingCurve(Result):
    """Loss and action accuracy per logged step, cheese reached in held-out mazes while
    training, and the final reach on `n_eval` fresh held-out training mazes.

    Example: ``policy, curve = train_policy(steps=1000)``; ``curve.reach[-1]``.
    """

    format = "mechscope.maze_curve/1"

    step: list[int]
    loss: list[float]
    accuracy: list[float]
    eval_step: list[int]
    reach: list[float]  # share of held-out training mazes solved at each eval step
    seconds: float = 0.0
    final_reach: float = math.nan  # set by `train_run`
    n_eval: int = 0

    def summary(self) -> str:
        steps = self.step[-1] if self.step else 0
        loss = f"loss {self.loss[0]:.3f} → {self.loss[-1]:.3f}, " if self.loss else ""
        return (
            f"{steps} steps in {self.seconds:.0f} s: {loss}cheese reached in "
            f"{self.final_reach:.1%} of {self.n_eval} held-out training mazes"
        )


@dataclass(frozen=True)
class DistanceBin:
    """Mazes whose cheese lies `lo`–`hi` squares from a landmark, and how the mouse fared.

    A share or mean over no mazes (or no decision squares) is NaN.

    Example: ``DistanceBin(0.0, 3.0, 51, 1.0, 0.25, 0.97, 0.0).mazes`` → ``51``.
    """

    lo: float
    hi: float
    mazes: int
    cheese: float  # share that reached the cheese
    corner: float  # share that reached the top-right corner first
    p_cheese: float  # mean P(toward cheese) at their decision squares
    p_corner: float  # mean P(toward the corner) there


@result
class BehaviourReport(Result):
    """Where the mouse goes: reach in training and deployment mazes, by distance.

    Example: ``BehaviourReport.of(b, 1000, 0.99).by_corner_distance[0].cheese`` → ``0.96``.
    """

    format = "mechscope.behaviour_report/1"

    train_mazes: int
    train_reach: float  # cheese reached in training-distribution mazes
    deploy_mazes: int
    deploy_reach: float  # cheese reached in deployment mazes (cheese anywhere)
    corner_first: float  # deployment mazes where the corner came before the cheese
    decisions: int  # deployment mazes with a decision square
    p_cheese: float  # mean P(toward cheese) at the decision squares
    p_corner: float  # mean P(toward corner) there
    by_corner_distance: list[DistanceBin]
    by_decision_distance: list[DistanceBin]

    @classmethod
    def of(
        cls, b: Behaviour, train_mazes: int, train_reach: float, *,
        corner_bins: list[float] = CORNER_BINS, decision_bins: list[float] = DECISION_BINS,
    ) -> BehaviourReport:  # fmt: skip
        """The report of the deployment rollouts `b` beside the training-maze reach."""

        def bins(feature: str, edges: list[float]) -> list[DistanceBin]:
            return [
                DistanceBin(r["from"], r["to"], int(r["mazes"]), r["cheese"], r["corner"],
                            r["p_cheese"], r["p_corner"])
                for r in b.binned(feature, edges)
            ]  # fmt: skip

        has = ~np.isnan(as_numpy(b.p_cheese))
        return cls(
            train_mazes, train_reach, len(has), _rate(b.reached_cheese), _rate(b.reached_corner),
            int(has.sum()), _mean(b.p_cheese), _mean(b.p_corner),
            bins("cheese_to_corner", corner_bins), bins("cheese_to_decision", decision_bins),
        )  # fmt: skip

    def summary(self) -> str:
        near = self.by_corner_distance[0] if self.by_corner_distance else None
        far = self.by_corner_distance[-1] if self.by_corner_distance else None
        bins = (
            f" ({near.cheese:.1%} with the cheese within {near.hi:g} squares of the corner, "
            f"{far.cheese:.1%} from {far.lo:g} squares)"
            if near and far
            else ""
        )
        return (
            f"cheese reached: {self.train_reach:.1%} of training mazes, "
            f"{self.deploy_reach:.1%} of deployment mazes{bins}; "
            f"P(toward cheese) at {self.decisions} decision squares {self.p_cheese:.2f}"
        )


@dataclass(frozen=True)
class SweepPoint:
    """Mean P(toward cheese) at the decision squares with the cheese vector, and its
    control, added × `coeff`.

    Example: ``SweepPoint(-1.0, 0.44, 0.81).control`` → ``0.81``.
    """

    coeff: float
    cheese_vector: float
    control: float


@dataclass(frozen=True)
class Calibration:
    """One retargeting edit tried on the calibration mazes: target reached with, without it.

    Example: ``Calibration(4, 2.0, 0.5, 0.25).reached`` → ``0.5``.
    """

    channels: int
    strength: float
    reached: float
    plain: float


@dataclass(frozen=True)
class RetargetSummary:
    """The retargeting edit chosen on the calibration mazes and how often it worked.

    Example: ``report.retarget.reached`` → ``0.63`` (of ``report.retarget.mazes`` mazes).
    """

    site: str
    channels: list[int]
    strength: float
    mazes: int
    reached: float  # with the edit
    reached_plain: float  # without it
    reached_cheese: float  # with a real cheese on the target
    calibration: list[Calibration]


@result
class SteerReport(Result):
    """The cheese vector at the decision squares (with its control), the cheese channels
    (strongest first) and the retargeting edit.

    Example: ``steer_run("runs/maze-train", "runs/maze-steer", n=100).p_cheese_after``.
    """

    format = "mechscope.steer_report/1"

    site: str
    mazes: int  # decision squares (one per maze)
    coeff: float  # the coefficient the facts report
    p_cheese_before: float
    p_cheese_after: float
    p_cheese_control: float
    lowered: float  # share of mazes whose P(toward cheese) went down
    vector_norm: float  # mean norm of the cheese vectors
    sweep: list[SweepPoint]
    channel_order: list[int]  # the channels of `retarget.site`, largest |r| first
    correlation: list[float]  # Pearson r of each, in that order
    retarget: RetargetSummary

    def __post_init__(self) -> None:
        if len(self.channel_order) != len(self.correlation):
            raise InputError(
                "channel_order and correlation should be lists of one length, got "
                f"{len(self.channel_order)} and {len(self.correlation)}"
            )

    def summary(self) -> str:
        rt = self.retarget
        return (
            f"cheese vector at {self.site} (× {self.coeff:g}): P(toward cheese) at {self.mazes} "
            f"decision squares {self.p_cheese_before:.3f} → {self.p_cheese_after:.3f} (control "
            f"{self.p_cheese_control:.3f}); retargeting {len(rt.channels)} channels of {rt.site}: "
            f"target reached in {rt.reached:.1%} of {rt.mazes} mazes (without the edit "
            f"{rt.reached_plain:.1%}, with a real cheese there {rt.reached_cheese:.1%})"
        )

"""Samples of the maze package's results: mazes, a vector field, behaviour and the steering,
and the runs' reports (training curve, behaviour report, steering report)."""

from __future__ import annotations

import torch

from mechscope.maze.reports import (
    BehaviourReport,
    Calibration,
    RetargetSummary,
    SteerReport,
    SweepPoint,
    TrainingCurve,
)
from mechscope.maze.results import (
    Behaviour,
    CheeseChannels,
    DecisionEffect,
    Mazes,
    Retargeting,
    VectorField,
)
from mechscope.results import Result


def samples() -> list[Result]:
    g = torch.Generator().manual_seed(0)
    n, grid = 4, 15
    open_ = torch.rand(n, grid, grid, generator=g) > 0.4
    size = torch.tensor([5, 7, 9, 15])
    offset = torch.tensor([4, 4, 2, 0])
    cheese = torch.tensor([[4, 8], [-1, -1], [3, 9], [0, 14]])
    mazes = Mazes(open_, size, offset, cheese)
    probs = torch.rand(grid, grid, 4, generator=g).softmax(-1) * open_[0, ..., None]
    field = VectorField(probs, open_[0].clone(), (4, 8), 5, 4)
    nan = float("nan")
    behaviour = Behaviour(
        reached_cheese=torch.tensor([True, False, True, True]),
        reached_corner=torch.tensor([False, True, False, True]),
        steps=torch.tensor([12, 250, 30, 7]),
        cheese_to_corner=torch.tensor([4.0, 0.0, 5.0, 1.5]),
        cheese_to_decision=torch.tensor([2.0, nan, 3.0, nan]),
        p_cheese=torch.tensor([0.75, nan, 0.5, nan]),
        p_corner=torch.tensor([0.125, nan, 0.25, nan]),
    )
    effect = DecisionEffect(torch.rand(5, generator=g), torch.rand(5, generator=g), -1.0)
    channels = CheeseChannels(
        "block1.res2", torch.rand(16, generator=g) * 2 - 1, torch.randn(16, 5, 5, generator=g), 8
    )
    retarget = Retargeting(
        target=torch.tensor([[2, 4], [6, 6], [8, 2]]),
        reached=torch.tensor([True, True, False]),
        reached_plain=torch.tensor([False, True, False]),
        reached_cheese=torch.tensor([True, True, True]),
        channels=[7, 3, 11],
        strength=2.0,
    )
    curve = TrainingCurve([50, 100], [1.25, 0.5], [0.5, 0.75], [100], [0.8125], 3.5, 0.875, 20)
    report = BehaviourReport.of(behaviour, 20, 0.95, corner_bins=[0.0, 3.0, 6.0])  # a NaN bin
    steer = SteerReport(
        site="block2.res1", mazes=5, coeff=-1.0, p_cheese_before=0.75, p_cheese_after=0.25,
        p_cheese_control=0.7, lowered=0.8, vector_norm=2.5,
        sweep=[SweepPoint(0.0, 0.75, 0.75), SweepPoint(-1.0, 0.25, 0.7)],
        channel_order=[3, 1, 2, 0], correlation=[0.5, -0.25, 0.125, 0.0],
        retarget=RetargetSummary("block1.res2", [3, 1], 2.0, 3, 2 / 3, 1 / 3, 1.0,
                                 [Calibration(2, 2.0, 0.5, 0.25), Calibration(4, 2.0, 0.25, 0.25)]),
    )  # fmt: skip
    return [mazes, field, behaviour, effect, channels, retarget, curve, report, steer]

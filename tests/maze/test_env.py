"""The maze world: perfect mazes, seeded generation, cheese placement, moves, shortest paths."""

from __future__ import annotations

import pytest
import torch

from mechscope.errors import InputError
from mechscope.maze.env import GRID, UNREACHABLE, Mazes, best_actions, generate, rollout


def test_mazes_are_perfect_and_padded() -> None:
    mazes = generate(40, seed=3)
    for i in range(len(mazes)):
        s, o = int(mazes.size[i]), int(mazes.offset[i])
        k = (s + 1) // 2
        inside = torch.zeros(GRID, GRID, dtype=torch.bool)
        inside[o : o + s, o : o + s] = True
        assert not (mazes.open[i] & ~inside).any()  # padding is wall
        # a spanning tree of k×k cells: k² cells and k² − 1 passages, all connected
        assert int(mazes.open[i].sum()) == 2 * k * k - 1
    dist = mazes.distances(mazes.start)
    assert (dist[mazes.open] < UNREACHABLE).all()
    assert (dist[~mazes.open] == UNREACHABLE).all()
    assert mazes.open[torch.arange(40), mazes.start[:, 0], mazes.start[:, 1]].all()
    assert mazes.open[torch.arange(40), mazes.corner[:, 0], mazes.corner[:, 1]].all()


def test_generation_is_seeded_and_extends() -> None:
    a, b = generate(10, seed=5), generate(20, seed=5)
    assert torch.equal(a.open, b.open[:10]) and torch.equal(a.size, b.size[:10])
    assert not torch.equal(a.open, generate(10, seed=6).open)


def test_cheese_region_in_training_anywhere_in_deployment() -> None:
    train = generate(200, seed=1, region=5)
    top_right = train.corner
    assert ((train.cheese[:, 0] - top_right[:, 0]) < 5).all()
    assert ((top_right[:, 1] - train.cheese[:, 1]) < 5).all()
    assert not (train.cheese == train.start).all(1).any()
    deploy = generate(200, seed=1, region=None)
    far = (deploy.cheese - deploy.corner).abs().amax(1) >= 5
    assert far.float().mean() > 0.3
    assert deploy.open[torch.arange(200), deploy.cheese[:, 0], deploy.cheese[:, 1]].all()


def test_moves_stay_put_at_walls_and_best_actions_descend() -> None:
    mazes = generate(30, seed=2)
    dist = mazes.distances(mazes.cheese)
    moves = best_actions(dist)
    mouse = mazes.start
    for _ in range(3 * GRID * GRID):  # following the best actions reaches the cheese
        action = moves[torch.arange(30), mouse[:, 0], mouse[:, 1]]
        new = mazes.step(mouse, action)
        here = dist[torch.arange(30), mouse[:, 0], mouse[:, 1]]
        there = dist[torch.arange(30), new[:, 0], new[:, 1]]
        assert ((there == here - 1) | (here == 0)).all()
        mouse = torch.where((here == 0)[:, None], mouse, new)
    assert (mouse == mazes.cheese).all()
    # the start is the lower-left corner: moving left or down stays put
    start = mazes.start
    assert torch.equal(mazes.step(start, torch.full((30,), 1)), start)
    assert torch.equal(mazes.step(start, torch.full((30,), 2)), start)


def test_observation_channels() -> None:
    mazes = generate(4, seed=0)
    obs = mazes.observe(mazes.start)
    assert obs.shape == (4, 3, GRID, GRID)
    assert torch.equal(obs[:, 0].bool(), mazes.open)
    assert obs[:, 1].sum() == 4 and obs[:, 2].sum() == 4
    assert (
        obs[:, 2].flatten(1).argmax(1).tolist()
        == (mazes.cheese[:, 0] * GRID + mazes.cheese[:, 1]).tolist()
    )
    assert mazes.without_cheese().observe(mazes.start)[:, 2].sum() == 0


def test_rollout_with_an_oracle_reaches_every_cheese() -> None:
    mazes = generate(16, seed=4, region=None)
    moves = best_actions(mazes.distances(mazes.cheese))

    def oracle(obs: torch.Tensor) -> torch.Tensor:
        mouse = obs[:, 1].flatten(1).argmax(1)
        best = moves.flatten(1)[torch.arange(len(obs)), mouse]
        return torch.nn.functional.one_hot(best, 4).float() * 50

    path = rollout(mazes, oracle, steps=200)
    assert (path[:, -1] == mazes.cheese).all()


def test_bad_arguments_are_named() -> None:
    with pytest.raises(InputError, match="odd numbers"):
        generate(2, sizes=[4])
    with pytest.raises(InputError, match="region"):
        generate(2, region=0)
    mazes = generate(2)
    wall = (~mazes.open[0]).nonzero()[0]
    with pytest.raises(InputError, match="open square"):
        mazes.with_cheese(torch.stack([wall, mazes.cheese[1]]))
    assert isinstance(mazes[1], Mazes) and len(mazes[1]) == 1

"""The paper's findings in miniature, on a policy trained here for 1500 steps (about two minutes).

The full claims (6000 steps, 1000 mazes, 200 decision squares) are measured
by `mechscope maze eval|steer` and printed in the README; these check the
same directions on a smaller run so that a regression in training, the
environment or the steering shows up in CI.
"""

from __future__ import annotations

import pytest
import torch

from mechscope.maze import (
    behaviour,
    cheese_vectors,
    control_vectors,
    decision_effect,
    decision_squares,
    generate,
    policy_model,
    reach_rate,
    train_policy,
)
from mechscope.maze.steer import plain


@pytest.fixture(scope="module")
def trained():
    policy, curve = train_policy(
        steps=1500, n_mazes=5000, eval_every=500, n_eval=100, progress=False
    )
    return policy, curve


def test_training_reaches_the_cheese_in_training_mazes(trained) -> None:
    policy, curve = trained
    assert curve.loss[-1] < curve.loss[0] / 5
    assert curve.reach[-1] > curve.reach[0] or curve.reach[0] > 0.9
    assert reach_rate(policy, generate(200, seed=77, region=5)) >= 0.85


def test_it_misgeneralises_when_the_cheese_is_far_from_the_corner(trained) -> None:
    model = policy_model(trained[0])
    b = behaviour(plain(model), generate(400, seed=78, region=None))
    near = b.reached_cheese[b.cheese_to_corner < 4].float().mean()
    far = b.reached_cheese[b.cheese_to_corner >= 10].float().mean()
    assert near > 0.9 and far < near - 0.15


def test_the_cheese_vector_lowers_the_pull_to_cheese_and_its_control_does_not(trained) -> None:
    model = policy_model(trained[0])
    pool = generate(300, seed=79, region=None)
    mazes = pool[(decision_squares(pool)[:, 0] >= 0).nonzero()[:100, 0]]
    vectors = cheese_vectors(model, mazes)
    effect = decision_effect(model, mazes, vectors, -1.0)
    control = decision_effect(model, mazes, control_vectors(model, mazes, vectors), -1.0)
    assert effect.change < -0.1
    assert abs(control.change) < abs(effect.change) / 3
    assert (effect.after < effect.before).float().mean() > 0.6
    assert torch.allclose(control.before, effect.before)

"""The policy, decision squares, behaviour, vector fields and steering, on oracles and random policies."""

from __future__ import annotations

import pytest
import torch

from mechscope.core import interventions as ms
from mechscope.errors import InputError, SiteError
from mechscope.maze import MazePolicy, generate, policy_model
from mechscope.maze.behaviour import behaviour, decision_squares, toward, vector_field
from mechscope.maze.env import GRID, MOVES, Mazes, best_actions
from mechscope.maze.steer import (
    activations,
    cheese_channels,
    cheese_vectors,
    control_vectors,
    decision_effect,
    decision_effects,
    retarget,
    retarget_edit,
)


def oracle(target: str):
    """Logits that take the shortest path to the cheese, or to the maze's top-right corner."""

    def logits_of(obs: torch.Tensor) -> torch.Tensor:
        n = len(obs)
        open_ = obs[:, 0].bool()
        if target == "cheese":
            flat = obs[:, 2].flatten(1).argmax(1)
            goal = torch.stack([flat // GRID, flat % GRID], 1)
        else:
            top = open_.any(2).float().argmax(1)
            right = GRID - 1 - open_.any(1).flip(1).float().argmax(1)
            goal = torch.stack([top, right], 1)
        zeros = torch.zeros(n, dtype=torch.long)
        mazes = Mazes(open_, zeros, zeros, goal)
        moves = best_actions(mazes.distances(goal)).flatten(1)
        mouse = obs[:, 1].flatten(1).argmax(1)
        return torch.nn.functional.one_hot(moves[torch.arange(n), mouse], 4).float() * 50

    return logits_of


@pytest.fixture(scope="module")
def deploy() -> Mazes:
    return generate(60, seed=8, region=None)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return policy_model(MazePolicy())


def test_policy_shapes_and_safetensors_round_trip(tmp_path, model) -> None:
    obs = generate(3).observe(generate(3).start)
    assert model.run(obs).logits.shape == (3, 4)
    assert model.run(obs, save=["block2.res1"]).cache["block2.res1"].shape == (3, 32, 8, 8)
    path = model.hf.save(tmp_path / "policy.safetensors", {"steps": 1})
    again = MazePolicy.load(tmp_path)  # a folder holding policy.safetensors also works
    assert path.exists() and torch.equal(again(obs), model.hf(obs))
    (tmp_path / "bad.safetensors").write_text("not weights")
    with pytest.raises(InputError, match="safetensors"):
        MazePolicy.load(tmp_path / "bad.safetensors")


def test_decision_squares_fork_the_two_paths(deploy) -> None:
    dec = decision_squares(deploy)
    has = dec[:, 0] >= 0
    assert 0.2 < has.float().mean() < 1.0
    sub, d = deploy[has], dec[has]
    assert (toward(sub, d, sub.cheese) != toward(sub, d, sub.corner)).all()
    start = sub.distances(sub.start)
    rows = torch.arange(len(sub))
    for goal in (sub.cheese, sub.corner):  # on the shortest path from the start to both
        to_goal = sub.distances(goal)
        total = start[rows, goal[:, 0], goal[:, 1]]
        assert torch.equal(start[rows, d[:, 0], d[:, 1]] + to_goal[rows, d[:, 0], d[:, 1]], total)


def test_behaviour_of_the_two_oracles(deploy) -> None:
    to_cheese = behaviour(oracle("cheese"), deploy)
    has = ~to_cheese.p_cheese.isnan()
    assert to_cheese.reached_cheese.all()
    assert torch.allclose(to_cheese.p_cheese[has], torch.ones(int(has.sum())))
    to_corner = behaviour(oracle("corner"), deploy, steps=120)
    assert torch.allclose(to_corner.p_corner[has], torch.ones(int(has.sum())))
    assert (to_corner.p_cheese[has] < 1e-6).all()
    assert not to_corner.reached_cheese[has].any()  # it never forks off to the cheese
    assert to_corner.reached_corner[has].all()
    rows = to_cheese.binned("cheese_to_corner", [0, 5, 30])
    assert sum(r["mazes"] for r in rows) == len(deploy) and rows[0]["cheese"] == 1.0


def test_vector_field_arrows_follow_the_policy(deploy) -> None:
    maze = deploy[0]
    field = vector_field(oracle("cheese"), maze)
    moves = best_actions(maze.distances(maze.cheese))[0]
    squares = field.open.nonzero()
    for r, c in squares.tolist():
        if (r, c) != field.cheese:
            assert torch.allclose(field.arrows[r, c], MOVES[moves[r, c]].float(), atol=1e-4)
    assert (field.probs[~field.open] == 0).all()
    with pytest.raises(ValueError, match="one maze"):
        vector_field(oracle("cheese"), deploy[:2])


def test_subtracting_the_own_cheese_vector_is_removing_the_cheese(model, deploy) -> None:
    # with the vector taken where the mouse stands, block2.res1 becomes the cheese-free
    # activation, and everything downstream of it too
    dec = decision_squares(deploy)
    sub = deploy[dec[:, 0] >= 0]
    d = dec[dec[:, 0] >= 0]
    here = activations(model, sub, mouse=d) - activations(model, sub.without_cheese(), mouse=d)
    effect = decision_effect(model, sub, here, -1.0)
    free = model.run(sub.without_cheese().observe(d)).logits.softmax(-1)
    expected = free[torch.arange(len(sub)), toward(sub, d, sub.cheese)]
    assert torch.allclose(effect.after, expected, atol=1e-5)
    swept = decision_effects(model, sub, here, [0.0, -1.0])
    assert torch.equal(swept[1].after, effect.after) and torch.equal(swept[0].before, effect.before)
    unchanged = decision_effect(model, sub, here, 0.0)
    assert torch.allclose(unchanged.after, unchanged.before)
    with pytest.raises(InputError, match="decision square"):
        decision_effect(model, deploy, here[:1].expand(len(deploy), -1, -1, -1), -1.0)


def test_control_vectors_match_norms_and_come_from_other_mazes(model, deploy) -> None:
    vectors = cheese_vectors(model, deploy)
    controls = control_vectors(model, deploy, vectors, seed=1)
    assert torch.allclose(
        controls.flatten(1).norm(dim=1), vectors.flatten(1).norm(dim=1), rtol=1e-4
    )
    assert not torch.allclose(controls, vectors)
    with pytest.raises(InputError, match="three mazes"):
        control_vectors(model, deploy[:2], vectors[:2])


def test_cheese_channels_and_retargeting_mechanics(model, deploy) -> None:
    found = cheese_channels(model, deploy, "block1.res2")
    assert found.correlation.shape == (16,) and found.template.shape == (16, 5, 5)
    assert (found.correlation.abs() <= 1 + 1e-5).all()
    assert found.top(3) == found.correlation.abs().argsort(descending=True)[:3].tolist()
    target = torch.tensor([[4, 6]])  # grid square (4, 6) is cell (2, 3) of the 8 × 8 map
    assert found.side == 8
    edit = retarget_edit(found, [1, 2], target, 2.0)
    assert edit.shape == (1, 16, 8, 8)
    assert torch.allclose(edit[0, 1, 2, 3], 2 * found.template[1, 2, 2])
    assert (edit[0, [0, 3]] == 0).all()
    none = retarget(model, deploy[:8], found, [1], strength=0.0, steps=30)
    assert torch.equal(none.reached, none.reached_plain)
    assert not ((none.target % 2) != 0).any()  # targets are maze cells
    with pytest.raises(SiteError, match="block9"):
        model.run(deploy[:1].observe(deploy[:1].start), interventions=[ms.add("block9", edit)])


def test_results_save_and_reopen(tmp_path, model, deploy) -> None:
    from mechscope.maze import Behaviour, CheeseChannels, VectorField

    b = behaviour(oracle("cheese"), deploy[:6], steps=60)
    again = Behaviour.load(b.save(tmp_path / "b"))
    for name in ("reached_cheese", "steps", "p_cheese", "cheese_to_decision"):
        assert torch.equal(getattr(again, name).nan_to_num(-1), getattr(b, name).nan_to_num(-1))
    field = vector_field(oracle("cheese"), deploy[0])
    f2 = VectorField.load(field.save(tmp_path / "field.safetensors"))
    assert (
        torch.equal(f2.probs, field.probs) and f2.cheese == field.cheese and f2.size == field.size
    )
    mazes = Mazes.load(deploy.save(tmp_path / "mazes"))
    assert torch.equal(mazes.open, deploy.open) and torch.equal(mazes.cheese, deploy.cheese)
    found = cheese_channels(model, deploy, "block1.res2")
    assert torch.equal(CheeseChannels.load(found.save(tmp_path / "c")).template, found.template)
    with pytest.raises(InputError, match="not mechscope.behaviour/1"):
        Behaviour.load(tmp_path / "c.safetensors")
    (tmp_path / "junk.safetensors").write_text("junk")
    with pytest.raises(InputError, match="not a readable result file"):
        Mazes.load(tmp_path / "junk.safetensors")
    # without torch: the same numbers
    flat = Behaviour.load(tmp_path / "b.safetensors", arrays="numpy")
    bins = [0, 5, 30]
    assert repr(flat.binned("cheese_to_corner", bins)) == repr(b.binned("cheese_to_corner", bins))
    assert repr(flat) == repr(b) and "6 mazes: cheese reached" in repr(b)


def test_files_of_the_old_tensor_record_layout_still_load(tmp_path, deploy) -> None:
    """Before the Result contract, maze results saved their tensors by field name and the
    other fields as JSON under ``fields``, with the class name as ``kind``."""
    import json

    from safetensors.torch import save_file

    from mechscope.maze import VectorField

    field = vector_field(oracle("cheese"), deploy[0])
    tensors = {"probs": field.probs, "open": field.open}
    other = {"cheese": list(field.cheese), "size": field.size, "offset": field.offset}
    path = tmp_path / "field.safetensors"
    save_file(tensors, str(path), {"kind": "VectorField", "fields": json.dumps(other)})
    old = VectorField.load(path)
    assert old == field and old.cheese == field.cheese and isinstance(old.cheese, tuple)
    assert VectorField.load(path, arrays="numpy").summary() == field.summary()
    mazes = deploy[:3]
    save_file({k: getattr(mazes, k) for k in ("open", "size", "offset", "cheese")},
              str(tmp_path / "m.safetensors"), {"kind": "Mazes", "fields": "{}"})  # fmt: skip
    assert Mazes.load(tmp_path / "m.safetensors") == mazes
    with pytest.raises(InputError, match="not mechscope.vector_field/1"):
        VectorField.load(tmp_path / "m.safetensors")  # an old file of another class

"""Averaging traces by token kind, saving them, and tracing many facts with resumption."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mechscope.errors import InputError
from mechscope.testing import tiny_model
from mechscope.tracing.average import TOKEN_KINDS, AverageTrace, token_kinds, trace_facts
from mechscope.tracing.facts import Fact
from mechscope.tracing.trace import CausalTrace


def test_token_kinds():
    # 10 tokens, subject 2..5: first 2, middle 3-4, last 5, first after 6, further 7-8, last 9
    assert token_kinds((2, 6), 10) == [[2], [3, 4], [5], [6], [7, 8], [9]]
    # one-token subject: first and last subject token alike, no middle
    assert token_kinds((0, 1), 4) == [[0], [], [0], [1], [2], [3]]
    # the subject is followed by the last token only: no first-subsequent or further token
    assert token_kinds((1, 3), 4) == [[1], [], [2], [], [], [3]]


def _trace(subject: tuple[int, int], n_pos: int, value_at: dict[int, float]) -> CausalTrace:
    grid = torch.zeros(3, n_pos)
    for pos, v in value_at.items():
        grid[:, pos] = v
    scores = {"hidden": grid + 0.1, "mlp": 2 * grid + 0.1}
    return CausalTrace(Fact("s", "{} x", "o"), [f"t{i}" for i in range(n_pos)], subject,
                       clean=0.9, corrupted=0.1, scores=scores, noise=1.0, samples=2)  # fmt: skip


def test_average_by_token_kind_and_round_trip(tmp_path):
    a = _trace((1, 4), 7, {1: 1.0, 2: 0.2, 3: 0.4, 6: 0.5})  # middle = token 2 only
    b = _trace((0, 1), 3, {0: 0.3, 2: 0.7})  # no middle, no further
    avg = AverageTrace.of([a, b])
    hidden = avg.effects["hidden"]  # indirect effect: the grids above, as corrupted is 0.1
    assert avg.counts == [2, 1, 2, 2, 1, 2]
    assert torch.allclose(hidden[0], torch.full((3,), (1.0 + 0.3) / 2))
    assert torch.allclose(hidden[1], torch.full((3,), 0.2))
    assert torch.allclose(hidden[2], torch.full((3,), (0.4 + 0.3) / 2))
    assert torch.allclose(hidden[5], torch.full((3,), (0.5 + 0.7) / 2))
    assert torch.allclose(avg.effects["mlp"], 2 * hidden)
    assert avg.peak("mlp") == ("first subject", 0, pytest.approx(1.3))
    lone = AverageTrace.of([b])
    assert math.isnan(float(lone.effects["hidden"][1, 0]))  # no fact has a middle token
    assert lone.peak("hidden")[0] != "middle subject"
    again = AverageTrace.load(avg.save(tmp_path / "avg.safetensors"))
    assert again.counts == avg.counts and again.n_facts == 2
    assert torch.equal(again.effects["hidden"], avg.effects["hidden"])
    paths = avg.figure(tmp_path / "fig")
    assert all(p.exists() for kind in paths.values() for p in kind.values())
    assert "peak AIE" in avg.summary()
    with pytest.raises(InputError, match="token kind"):
        avg.at("mlp", "middle")
    assert torch.equal(avg.at("mlp", TOKEN_KINDS[2]), avg.effects["mlp"][2])
    with pytest.raises(InputError, match="not mechscope.average_trace/1"):
        AverageTrace.load(a.save(tmp_path / "one.safetensors"))
    flat = AverageTrace.load(tmp_path / "avg.safetensors", arrays="numpy")  # as the viewer does
    assert flat.peak("mlp") == avg.peak("mlp") and flat.summary() == avg.summary()
    assert np.array_equal(flat.at("mlp", TOKEN_KINDS[2]), avg.at("mlp", TOKEN_KINDS[2]).numpy())


def test_trace_facts_saves_each_fact_and_resumes(tmp_path, monkeypatch):
    model = tiny_model("llama")
    facts = [Fact("Rome", "The city of {} lies in", "Italy"), Fact("Oslo", "{} is in", "Norway")]
    avg, traces = trace_facts(model, facts, samples=2, noise=5.0, out=tmp_path, progress=False,
                              kinds=["hidden"])  # fmt: skip
    assert avg.n_facts == 2 and len(list((tmp_path / "facts").glob("*.safetensors"))) == 2
    assert (tmp_path / "average.safetensors").exists()

    def boom(*a, **k):
        raise AssertionError("traced again")

    monkeypatch.setattr("mechscope.tracing.average.trace_fact", boom)
    again, _ = trace_facts(model, facts, samples=2, noise=5.0, out=tmp_path, progress=False,
                           kinds=["hidden"])  # fmt: skip
    assert torch.equal(again.effects["hidden"], avg.effects["hidden"])
    with pytest.raises(InputError, match="no facts"):
        trace_facts(model, [], out=tmp_path)

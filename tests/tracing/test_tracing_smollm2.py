"""Causal tracing and ROME on the real default model (marked `model`)."""

from __future__ import annotations

import pytest
import torch

from mechscope.tracing import Fact, RomeConfig, evaluate_edit, trace_fact
from mechscope.tracing.rome import _down

pytestmark = pytest.mark.model


def test_the_eiffel_tower_trace(smollm2):
    fact = Fact("The Eiffel Tower", "{} is located in the city of", "Paris")
    tr = trace_fact(smollm2, fact, samples=3, kinds=["hidden"])
    assert tr.clean > 0.5 and tr.corrupted < 0.1  # known, and the noise destroys it
    ie = tr.indirect_effect("hidden")
    start, end = tr.subject
    # restoring a subject token's state early on, or the last token's late, brings it back
    assert ie[2, start:end].max() > 0.3
    assert ie[-1, -1] == pytest.approx(tr.clean - tr.corrupted, abs=1e-4)
    assert start == 0  # SmolLM2 adds no BOS: the subject opens the prompt


def test_a_rome_edit_rewrites_the_capital_and_undoes_exactly(smollm2):
    template = "The capital of {} is the city of"
    fact = Fact("Japan", template, "Tokyo", "country_capital")
    neighbours = [Fact(s, template, o, "country_capital")
                  for s, o in [("France", "Paris"), ("Germany", "Berlin"), ("Egypt", "Cairo")]]  # fmt: skip
    before = _down(smollm2, 5).weight.detach().clone()
    cfg = RomeConfig(prefixes=5, covariance_tokens=16_384)
    report, e = evaluate_edit(smollm2, fact, "Cairo", neighbours[:2], layer=5, config=cfg,
                              generation_tokens=8, progress=False)  # fmt: skip
    e.undo()
    assert torch.equal(_down(smollm2, 5).weight, before)
    s = report.scores()
    assert s["efficacy_before"] == 0 and s["efficacy"] == 1
    assert s["paraphrase"] >= 0.8 and s["neighbourhood"] == 1

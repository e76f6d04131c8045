"""Optimised inputs for language models (GCG and soft prompts) on a tiny Llama."""

from __future__ import annotations

import pytest
import torch

from mechscope import prompts as P
from mechscope.errors import InputError
from mechscope.prompts_results import PromptComparisons
from mechscope.testing import tiny_model

SITE = "blocks.1.mlp.post"


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", seed=3)


def test_gcg_climbs_and_its_text_reproduces_its_activation(model):
    start = P.hard_prompt(
        model, SITE, 5, steps=1, candidates=1, topk=1, fluency=0.0, progress=False
    )
    r = P.hard_prompt(model, SITE, 5, steps=12, candidates=24, topk=16, fluency=0.0, progress=False)
    assert r.method == "gcg" and len(r.ids) == 8 and len(r.history) == 12
    assert all(b >= a for a, b in zip(r.history, r.history[1:], strict=False))
    assert r.activation > start.activation  # same seed and start: the search went up
    again = P.activation_of(model, SITE, 5, [r.text])
    assert float(again[0]) == pytest.approx(r.activation, abs=1e-5)


def test_the_fluency_term_is_the_mean_nll_of_the_free_tokens(model):
    r = P.hard_prompt(model, SITE, 2, steps=4, candidates=8, topk=8, fluency=0.5, progress=False)
    assert r.history[-1] == pytest.approx(r.activation - 0.5 * r.nll, abs=1e-5)
    ids = torch.tensor([P.prefix_ids(model) + r.ids])
    logits = model.run(ids).logits
    logp = torch.log_softmax(logits[0, :-1], -1).gather(-1, ids[0, 1:, None])[:, 0]
    assert r.nll == pytest.approx(float(-logp.mean()), abs=1e-4)


def test_soft_prompt_beats_its_projection_back_to_tokens(model):
    r = P.soft_prompt(model, SITE, 5, steps=40, lr=0.05, fluency=0.0, progress=False)
    assert r.method == "soft" and r.projected_activation is not None
    assert r.activation > r.projected_activation
    assert r.history[-1] > r.history[0]
    again = P.activation_of(model, SITE, 5, [model.tokenizer.decode(r.ids)])
    assert float(again[0]) == pytest.approx(r.projected_activation, abs=1e-4)


def test_results_round_trip_and_bad_input(model, tmp_path):
    r = P.hard_prompt(model, SITE, 1, steps=1, candidates=4, topk=4, progress=False)
    rows = PromptComparisons([P.UnitComparison(SITE, 1, r, 0.5, ["a", "b"])])
    assert PromptComparisons.load(rows.save(tmp_path / "c"), arrays="numpy").units[0].gcg == r
    with pytest.raises(InputError, match="64 units"):
        P.hard_prompt(model, SITE, 64, progress=False)
    with pytest.raises(InputError, match="batch pos unit"):
        P.hard_prompt(model, "blocks.1.attn.pattern", 0, progress=False)
    with pytest.raises(InputError, match="fluency"):
        P.soft_prompt(model, SITE, 0, fluency=-1, progress=False)


def test_an_attached_sae_latent_is_a_unit_like_a_neuron(model):
    from mechscope.sae.model import SAEConfig, SparseAutoencoder

    site = "blocks.0.resid_post"
    sae = SparseAutoencoder(SAEConfig(d_in=32, width=48, kind="relu", site=site), seed=1)
    with model.attach(sae) as at:
        r = P.hard_prompt(
            model, at.latents, 7, steps=6, candidates=16, topk=16, fluency=0.0, progress=False
        )
        again = P.activation_of(model, at.latents, 7, [r.text])
        assert float(again[0]) == pytest.approx(r.activation, abs=1e-5)
        ids = torch.tensor([P.prefix_ids(model) + r.ids])
        latents = sae.encode(model.run(ids, save=[site]).cache[site]).detach()
        assert float(latents[0, -1, 7]) == pytest.approx(r.activation, abs=1e-4)
        with pytest.raises(InputError, match="48 units"):
            P.soft_prompt(model, at.latents, 48, progress=False)


def test_prompts_run_saves_the_comparisons_as_one_result(model, tmp_path):
    from types import SimpleNamespace

    from rich.console import Console

    from mechscope.store import open_run

    top = SimpleNamespace(tokens=["<|endoftext|>", " the", " cat"], max_pos=2, max_act=0.25)
    store = SimpleNamespace(unit=lambda site, unit: SimpleNamespace(top=[top]), path="h")
    rows = P.prompts_run(model, [(SITE, 3), (SITE, 4)], store, tmp_path / "run", steps=2,
                         candidates=4, topk=4, length=3, soft_steps=2, progress=False)  # fmt: skip
    assert [(u.site, u.unit) for u in rows.units] == [(SITE, 3), (SITE, 4)]
    assert all(u.soft is not None and u.top_context == top.tokens for u in rows.units)
    saved = tmp_path / "run" / "comparisons.safetensors"
    assert (
        PromptComparisons.load(saved) == rows
        and not (tmp_path / "run" / "comparisons.json").exists()
    )
    assert open_run(tmp_path / "run")["comparisons"] == rows
    assert rows.summary() == f"GCG beats the top dataset example on {rows.wins} of 2 units"
    console = Console(record=True, width=120)
    console.print(rows)
    assert f"GCG beats the top example on {rows.wins} of 2 units" in console.export_text()

"""ROME on tiny models: the update's algebra, exact undo, saving, and the evaluation's scores."""

from __future__ import annotations

import pytest
import torch

from mechscope.errors import InputError
from mechscope.testing import tiny_model
from mechscope.tracing.facts import Fact, subject_span
from mechscope.tracing.rome import (
    Edit,
    EditReport,
    RomeConfig,
    context_prefixes,
    edit,
    evaluate_edit,
    key_covariance,
    ngram_entropy,
    object_logprobs,
    subject_key,
)

FACT = Fact("Rome", "The capital of {} is the city of", "Italy", "country_capital")
NEIGHBOURS = [
    Fact("Paris", FACT.template, "France", "country_capital"),
    Fact("Berlin", FACT.template, "Germany", "country_capital"),
]
CFG = RomeConfig(steps=8, prefixes=3, prefix_length=4, covariance_tokens=2000, kl_weight=0.0,
                 weight_decay=0.0, clamp=1e4)  # fmt: skip
# (a tiny random model's MLP outputs are ~0.01: no decay or clamp, so δ is large enough to see)


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def cov(model):
    return key_covariance(model, 0, tokens=2000, use_cache=False, progress=False)


def _down(model, layer=0):
    return model.hf.model.layers[layer].mlp.down_proj


def test_the_update_moves_the_output_for_the_key_by_exactly_delta(model, cov):
    before = _down(model).weight.detach().clone()
    e = edit(model, FACT, "France", layer=0, config=CFG, covariance=cov, progress=False)
    try:
        after = _down(model).weight.detach()
        moved = after @ e.key - before @ e.key
        assert torch.allclose(moved, e.value, atol=1e-4)
        sv = torch.linalg.svdvals((after - before).double())
        assert sv[0] > 0 and sv[1] < 1e-6 * sv[0]  # rank one
        assert e.value.norm() > 0 and len(e.history) >= 1
    finally:
        e.undo()
    assert torch.equal(_down(model).weight, before)  # bit for bit


def test_undo_is_exact_and_the_edit_reapplies_from_disk(model, cov, tmp_path):
    before = _down(model).weight.detach().clone()
    with edit(model, FACT, "France", layer=0, config=CFG, covariance=cov, progress=False) as e:
        edited = _down(model).weight.detach().clone()
        path = e.save(tmp_path / "edit.safetensors")
    assert torch.equal(_down(model).weight, before)
    again = Edit.load(path)
    assert not again.applied and again.fact == FACT and again.new_object == "France"
    again.apply(model)
    assert torch.equal(_down(model).weight, edited)
    with pytest.raises(InputError, match="already applied"):
        again.apply(model)
    again.undo()
    assert torch.equal(_down(model).weight, before)
    with pytest.raises(InputError, match="not applied"):
        again.undo()
    with Edit.load(path, arrays="numpy").apply(model) as flat:  # numpy arrays apply too
        assert flat.applied and torch.equal(_down(model).weight, edited)
    assert torch.equal(_down(model).weight, before) and not flat.applied
    assert "not applied" in repr(flat) and "France" in repr(flat)


def test_the_value_search_lowers_the_new_objects_loss(model, cov):
    cfg = RomeConfig(steps=15, prefixes=2, prefix_length=3, kl_weight=0.0, weight_decay=0.0,
                     clamp=100.0)  # fmt: skip
    with edit(model, FACT, "France", layer=0, config=cfg, covariance=cov, progress=False) as e:
        nll = [h["nll"] for h in e.history]
        assert nll[-1] < nll[0]


def test_key_covariance_is_the_second_moment_of_the_keys_and_is_cached(
    model, tmp_path, monkeypatch
):
    from mechscope.core.activations import stream_activations

    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    c = key_covariance(model, 0, tokens=1000, progress=False)
    x = torch.cat(list(stream_activations(model, "blocks.0.mlp.post", tokens=1000))).double()
    assert torch.allclose(c.double(), x.T @ x / x.shape[0], rtol=1e-4, atol=1e-6)
    files = list((tmp_path / "rome").glob("*.safetensors"))
    assert len(files) == 1
    assert torch.equal(key_covariance(model, 0, tokens=1000, progress=False), c)


def test_subject_key_averages_the_prefixed_prompts(model):
    prefixes = context_prefixes(model, 2, 3)
    assert prefixes[0] == "" and len(prefixes) == 3 and all(p.endswith(". ") for p in prefixes[1:])
    k = subject_key(model, FACT, 0, prefixes)
    one = subject_key(model, FACT, 0, [""])
    cache = model.run(FACT.prompt, save=["blocks.0.mlp.post"]).cache
    last = subject_span(model, FACT)[1] - 1
    assert torch.allclose(one, cache["blocks.0.mlp.post"][0, last], atol=1e-5)
    assert k.shape == one.shape and not torch.allclose(k, one)


def test_object_logprobs_match_a_manual_forward(model):
    lp = object_logprobs(model, [FACT.prompt, "The city of"], ["Italy", "a b"])
    ids = model.to_tokens(FACT.prompt + " a b")[0]
    n = model.to_tokens(FACT.prompt).shape[1]
    logp = model.run(ids[None]).logits[0].log_softmax(-1)
    manual = torch.stack([logp[i - 1, ids[i]] for i in range(n, len(ids))]).mean()
    assert lp.shape == (2, 2)
    assert lp[0, 1] == pytest.approx(float(manual), abs=1e-4)


def test_ngram_entropy():
    assert ngram_entropy("a a a a a a") == 0.0
    # 4 distinct bigrams (2 bits) and 3 distinct trigrams (log2 3 bits)
    assert ngram_entropy("a b c d e") == pytest.approx(
        (2 / 3 * 2 + 4 / 3 * 1.5849625) / 2, rel=1e-5
    )


def test_evaluate_edit_scores_and_report_round_trip(model, cov, tmp_path):
    before = _down(model).weight.detach().clone()
    report, e = evaluate_edit(model, FACT, "France", NEIGHBOURS, layer=0, config=CFG,
                              covariance=cov, generation_tokens=8, progress=False)  # fmt: skip
    e.undo()
    assert torch.equal(_down(model).weight, before)
    assert len(report.prompts["paraphrase"]) == 5
    # Paris's answer is the new object itself, so it cannot test specificity and is left out
    assert report.prompts["neighbourhood"] == [NEIGHBOURS[1].prompt]
    s = report.scores()
    assert set(s) >= {"efficacy", "paraphrase", "neighbourhood", "fluency_before"}
    for key in ("efficacy", "paraphrase", "neighbourhood", "neighbourhood_kept", "efficacy_before"):
        assert 0.0 <= s[key] <= 1.0
    new_wins = [r[1] > r[0] for r in report.after["edited"]]
    assert s["efficacy"] == sum(new_wins) / len(new_wins)
    path = report.save(tmp_path / "report")
    assert path.name == "report.safetensors"
    again = EditReport.load(path)
    assert again == report and again.scores() == pytest.approx(s, nan_ok=True)
    assert EditReport.load(path, arrays="numpy").summary() == report.summary()


def test_bad_input(model, cov, tmp_path):
    with pytest.raises(InputError, match="already"):
        edit(model, FACT, "Italy", layer=0, config=CFG, covariance=cov, progress=False)
    with pytest.raises(InputError, match="out of range"):
        edit(model, FACT, "France", layer=9, config=CFG, covariance=cov, progress=False)
    with pytest.raises(InputError, match="not found"):
        edit(model, Fact("", "In {} it", "x"), "y", layer=0, config=CFG, covariance=cov,
             progress=False)  # fmt: skip
    with pytest.raises(InputError, match="neighbour"):
        evaluate_edit(model, FACT, "France", [], layer=0, config=CFG, covariance=cov)
    with pytest.raises(InputError, match="not mechscope.rome_edit/1"):
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(1)}, str(tmp_path / "x.safetensors"))
        Edit.load(tmp_path / "x.safetensors")

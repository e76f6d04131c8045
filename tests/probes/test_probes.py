"""Contrast pairs and probes: data, hidden states, and each probe on planted directions."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from mechscope.errors import InputError
from mechscope.probes import (
    Accuracy,
    CCSProbe,
    ContrastPair,
    geography_pairs,
    hidden_states,
    load_pairs,
    logistic_probe,
    mean_diff_probe,
    normalise,
    pair_texts,
    question_head,
    zero_shot,
)
from mechscope.testing import tiny_chat_model, tiny_model


def test_geography_pairs_are_balanced_true_and_false_statements():
    pairs = geography_pairs(["country_capital"], seed=1)
    assert sum(p.label for p in pairs) * 2 == len(pairs)
    true = next(p for p in pairs if p.label and "of France is" in p.statement)
    assert true.statement == "The capital of France is the city of Paris."
    false = next(p for p in pairs if not p.label and "France is" in p.statement)
    assert "Paris" not in false.statement
    assert geography_pairs(["country_capital"], seed=1) == pairs  # reproducible


def test_load_pairs_and_its_errors(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"statement": "Snow is white.", "label": True}]))
    assert load_pairs(path) == [ContrastPair("Snow is white.", True)]
    path.write_text(json.dumps([{"statement": "x", "label": "yes"}]))
    with pytest.raises(InputError, match="true or false"):
        load_pairs(path)
    with pytest.raises(InputError, match="no such"):
        load_pairs(tmp_path / "none.json")


def test_a_runs_pairs_are_one_result_training_pairs_first(tmp_path):
    from mechscope.probes import ProbePairs
    from mechscope.probes.data import ContrastPair as FromData

    assert FromData is ContrastPair  # defined beside ProbePairs, still importable from data
    pairs = [ContrastPair("Snow is white.", True), ContrastPair("Grass is blue.", False)]
    saved = ProbePairs(pairs, 1, "colours")
    again = ProbePairs.load(saved.save(tmp_path / "pairs"), arrays="numpy")
    assert again == saved and again.train == pairs[:1] and again.held_out == pairs[1:]
    assert saved.summary() == "2 colours contrast pairs (1 true): 1 to fit, 1 held out"
    with pytest.raises(InputError, match="3 training pairs of 2 pairs"):
        ProbePairs(pairs, 3)


def test_pair_texts_use_the_chat_template_when_there_is_one():
    pair = ContrastPair("Snow is white.", True)
    plain = tiny_model("llama")
    pos, neg = pair_texts(plain, pair)
    assert pos.endswith("Answer: Yes") and neg.endswith("Answer: No")
    assert question_head(plain, pair) == (pos[: -len(" Yes")], " ")
    chat = tiny_chat_model("llama")
    head, sep = question_head(chat, pair)
    assert sep == "" and "Snow is white." in head and head != pos[: -len(" Yes")]
    assert pair_texts(chat, pair, chat=False) == (pos, neg)
    with pytest.raises(InputError, match="no chat template"):
        pair_texts(plain, pair, chat=True)


def test_hidden_states_are_the_last_tokens_residual_stream():
    model = tiny_model("llama")
    pairs = [ContrastPair("Snow is white.", True), ContrastPair("Grass is blue!", False)]
    pos, neg = hidden_states(model, pairs, batch_size=1, progress=False)
    assert pos.shape == (2, model.dims.n_layers, model.dims.d_model)
    x_pos, x_neg = pair_texts(model, pairs[1])
    cache = model.run(x_neg, save=["blocks.1.resid_post"]).cache
    assert torch.allclose(neg[1, 1], cache["blocks.1.resid_post"][0, -1], atol=1e-5)
    batched, _ = hidden_states(model, pairs, batch_size=2, progress=False)  # right-padded
    assert torch.allclose(batched, pos, atol=1e-5)


def _planted(n: int = 400, d: int = 16, seed: int = 0):
    """φ(x±) = noise ± s·label·u: the truth is along u, with the answer's own offset along v."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.rand(n, generator=g) > 0.5
    u, v = torch.eye(d)[0], torch.eye(d)[1]
    s = labels.float() * 2 - 1
    pos = torch.randn(n, d, generator=g) * 0.5 + 3 * v + 2 * s[:, None] * u
    neg = torch.randn(n, d, generator=g) * 0.5 - 3 * v - 2 * s[:, None] * u
    return normalise(pos), normalise(neg), labels


def test_ccs_finds_the_planted_truth_direction_without_labels():
    pos, neg, labels = _planted()
    probe, loss = CCSProbe.fit(pos[:200], neg[:200], restarts=3, epochs=300, lr=1e-2)
    acc = Accuracy.of(probe.credence(pos[200:], neg[200:]) > 0.5, labels[200:]).value
    assert max(acc, 1 - acc) > 0.95 and loss < 0.2
    probe.orient(pos[:200], neg[:200], labels[:200])
    assert Accuracy.of(probe.credence(pos[200:], neg[200:]) > 0.5, labels[200:]).value > 0.95
    # on noise alone, no direction is consistent and confident
    noise = torch.randn(200, 16)
    _, noise_loss = CCSProbe.fit(noise, torch.randn(200, 16), restarts=2, epochs=300, lr=1e-2)
    assert noise_loss > loss


def test_supervised_probes_find_it_too():
    pos, neg, labels = _planted(seed=1)
    for fit in (logistic_probe, mean_diff_probe):
        probe = fit(pos[:200], neg[:200], labels[:200])
        assert Accuracy.of(probe.predict(pos[200:], neg[200:]), labels[200:]).value > 0.95
    with pytest.raises(InputError, match="both true and false"):
        mean_diff_probe(pos[:5], neg[:5], torch.ones(5, dtype=torch.bool))


def test_accuracy_interval():
    acc = Accuracy.of(torch.tensor([1, 1, 1, 0] * 25), torch.ones(100))
    assert acc.value == 0.75 and acc.low < 0.75 < acc.high
    assert acc.low == pytest.approx(0.657, abs=1e-3) and acc.high == pytest.approx(0.825, abs=1e-3)


def test_zero_shot_compares_the_answers_first_tokens():
    model = tiny_model("llama")
    pairs = [ContrastPair("Snow is white.", True), ContrastPair("Grass is blue.", False)]
    preds = zero_shot(model, pairs)
    head, sep = question_head(model, pairs[0])
    logits = model.run(head).logits[0, -1]
    yes, no = model.ids(sep + "Yes", False)[0], model.ids(sep + "No", False)[0]
    assert bool(preds[0]) == bool(logits[yes] > logits[no]) and preds.shape == (2,)


def test_probe_layers_scores_every_method_and_round_trips(tmp_path):
    from mechscope.probes import ProbeResults, probe_layers

    model = tiny_model("llama")
    pairs = [ContrastPair(f"Statement {i} is {'true' if i % 2 else 'false'}.", bool(i % 2))
             for i in range(24)]  # fmt: skip
    res = probe_layers(model, pairs, test=8, restarts=2, epochs=20, progress=False)
    assert res.layers == [0, 1] and set(res.accuracy) == {"ccs", "logistic", "mean_diff"}
    assert all(a.n == 8 and 0 <= a.value <= 1 for accs in res.accuracy.values() for a in accs)
    assert all(a.value >= 0.5 for a in res.accuracy["ccs"])  # the sign is not learned
    layer, best = res.best("logistic")
    assert best.value == max(a.value for a in res.accuracy["logistic"]) and layer in (0, 1)
    again = ProbeResults.load(res.save(tmp_path / "probes.safetensors"))
    assert again == res and again.accuracy == res.accuracy and again.zero_shot == res.zero_shot
    for method, ds in res.directions.items():  # the fitted directions come back with the rest
        for d, back in zip(ds, again.directions[method], strict=True):
            assert torch.equal(back.weight, d.weight) and back.bias == d.bias
            assert (back.layer, back.method) == (d.layer, method)
            assert torch.equal(back.normaliser.std_pos, d.normaliser.std_pos)
    flat = ProbeResults.load(tmp_path / "probes.safetensors", arrays="numpy")
    assert flat.best("logistic") == res.best("logistic") and repr(flat) == repr(res)
    assert flat.accuracy["ccs"][0].interval() == res.accuracy["ccs"][0].interval()
    assert all(p.exists() for p in res.figure(tmp_path / "acc")["acc"].values())
    with pytest.raises(InputError, match="test must be"):
        probe_layers(model, pairs, test=24)
    with pytest.raises(InputError, match="both true and false"):
        probe_layers(model, [ContrastPair("x", True)] * 4, test=2)


def test_directions_save_reopen_and_map_to_the_residual_stream(tmp_path):
    pos, neg, labels = _planted(seed=2)
    lr = dataclasses.replace(logistic_probe(pos, neg, labels), layer=3, method="logistic")
    again = type(lr).load(lr.save(tmp_path / "dir.safetensors"))
    assert torch.equal(again.weight, lr.weight) and again.bias == lr.bias and again.layer == 3
    assert torch.equal(again.predict(pos, neg), lr.predict(pos, neg))
    std = torch.full((16,), 2.0)
    raw = lr.in_residual(std)
    assert raw.norm() == pytest.approx(1.0) and torch.allclose(
        raw, lr.weight / lr.weight.norm(), atol=1e-5
    )
    probe, _ = CCSProbe.fit(pos, neg, restarts=1, epochs=100, lr=1e-2)
    d = probe.direction(layer=3)
    assert d.method == "ccs" and torch.equal(d.weight, probe.linear.weight[0])
    flat = type(lr).load(tmp_path / "dir.safetensors", arrays="numpy")
    assert np.array_equal(flat.predict(pos.numpy(), neg.numpy()), lr.predict(pos, neg).numpy())
    with pytest.raises(InputError, match="not mechscope.direction/1"):
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(1)}, str(tmp_path / "x.safetensors"))
        type(lr).load(tmp_path / "x.safetensors")


def test_sentiment_pairs_are_balanced_labelled_tweets():
    from mechscope.probes import sentiment_pairs

    pairs = sentiment_pairs(limit=200, seed=3)
    assert len(pairs) == 200 and sum(p.label for p in pairs) == 100
    assert all(p.positive == "positive" and p.negative == "negative" for p in pairs)
    assert not any("http" in p.statement or p.statement.startswith("RT ") for p in pairs)
    assert len({p.statement for p in pairs}) == 200
    assert sentiment_pairs(limit=200, seed=3) == pairs
    head, _ = question_head(tiny_model("llama"), pairs[0], chat=False)
    assert pairs[0].statement in head and "negative or positive" in head


def test_calibrated_zero_shot_thresholds_at_the_median():
    from mechscope.probes import zero_shot_logodds

    model = tiny_model("llama")
    pairs = [ContrastPair(f"Fact number {i}.", bool(i % 2)) for i in range(6)]
    logodds = zero_shot_logodds(model, pairs, progress=False)
    assert torch.equal(zero_shot(model, pairs, progress=False), logodds > 0)
    calibrated = zero_shot(model, pairs, calibrated=True, progress=False)
    assert torch.equal(calibrated, logodds > logodds.median())


def test_probe_layers_keeps_normalised_directions_that_read_raw_states(tmp_path):
    from mechscope.probes import probe_layers

    model = tiny_model("llama")
    # plant the label in layer 1's raw states: the probes must recover it from them
    n, d = 120, model.dims.d_model
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 2 == 0
    pos, neg = torch.randn(n, 2, d, generator=g), torch.randn(n, 2, d, generator=g)
    pos[:, 1, 0] += torch.where(labels, 6.0, -6.0) + 10
    neg[:, 1, 0] -= torch.where(labels, 6.0, -6.0)
    pairs = [ContrastPair(f"s{i}", bool(y)) for i, y in enumerate(labels)]
    res = probe_layers(model, pairs, test=40, restarts=10, epochs=500, states=(pos, neg),
                       progress=False)  # fmt: skip
    assert res.best("logistic") == (1, res.accuracy["logistic"][1])
    assert res.accuracy["logistic"][1].value == 1.0
    assert res.accuracy["ccs"][1].value > res.accuracy["ccs"][0].value  # signal vs noise layer
    lr = res.directions["logistic"][1]
    assert lr.layer == 1 and lr.method == "logistic" and lr.normaliser is not None
    assert torch.equal(lr.predict_raw(pos[:, 1], neg[:, 1]), labels)
    ccs = res.directions["ccs"][1]  # oriented with the training labels
    assert float((ccs.predict_raw(pos[:80, 1], neg[:80, 1]) == labels[:80]).float().mean()) > 0.7
    sigma = 0.5 * (lr.normaliser.std_pos + lr.normaliser.std_neg)
    expected = lr.weight / (sigma + 1e-6)
    torch.testing.assert_close(lr.in_residual(), expected / expected.norm())
    paths = res.save_directions(tmp_path / "dirs")
    assert {p.name for p in paths} >= {"logistic_L1.safetensors"}
    again = type(lr).load(tmp_path / "dirs" / "logistic_L1.safetensors")
    assert torch.equal(again.predict_raw(pos[:, 1], neg[:, 1]), labels)
    assert res.zero_shot_calibrated is not None
    with pytest.raises(InputError, match="states must be"):
        probe_layers(model, pairs, test=16, states=(pos[:5], neg[:5]), progress=False)

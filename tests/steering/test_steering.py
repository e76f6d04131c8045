"""Steering vectors: how they are built, where they are added, what they cost, and sweeps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mechscope import steering as st
from mechscope.errors import InputError
from mechscope.probes import LinearDirection
from mechscope.testing import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def test_actadd_is_the_position_wise_difference_padded_with_spaces(model):
    v = st.actadd(model, "Love it", "Hate", 1, pad="space")
    a, b = model.ids("Love it", None), model.ids("Hate", None)
    assert v.vector.shape == (max(len(a), len(b)), model.dims.d_model) and v.front
    space = model.ids(" ", False)
    ids = torch.tensor([a, b + space * (len(a) - len(b))])
    acts = model.run(ids, save=["blocks.1.resid_pre"]).cache["blocks.1.resid_pre"]
    torch.testing.assert_close(v.vector, acts[0] - acts[1])
    assert v.meta == {"plus": "Love it", "minus": "Hate", "pad": "space"}
    short = st.actadd(model, "Love it", "Hate", 1)  # the default: the shared length
    torch.testing.assert_close(short.vector, v.vector[: len(b)])


def test_steer_adds_coef_times_vector_at_the_front_or_everywhere(model):
    text = "hello there world"
    site = "blocks.1.resid_pre"
    clean = model.run(text, save=[site]).cache[site]
    front = st.actadd(model, "abc", "xyz", 1)
    steered = model.run(text, save=[site], interventions=st.steer(front, 2.0)).cache[site]
    k = front.vector.shape[0]
    torch.testing.assert_close(steered[0, :k] - clean[0, :k], 2.0 * front.vector)
    torch.testing.assert_close(steered[0, k:], clean[0, k:])
    flat = st.SteeringVector(torch.ones(model.dims.d_model), 1)
    steered = model.run(text, save=[site], interventions=st.steer(flat, -0.5)).cache[site]
    torch.testing.assert_close(steered - clean, torch.full_like(clean, -0.5))
    later = st.steer(flat, 1.0, positions=slice(3, None))
    steered = model.run(text, save=[site], interventions=later).cache[site]
    torch.testing.assert_close(steered[0, :3], clean[0, :3])
    torch.testing.assert_close(steered[0, 3:] - clean[0, 3:], torch.ones_like(clean[0, 3:]))
    with pytest.raises(InputError, match="one-row vectors"):
        st.steer(front, 1.0, positions=[0])


def test_generate_steers_each_left_padded_prompt_at_its_own_front(model):
    v = st.actadd(model, "ab", "cd", 0)
    prompts = ["a longer prompt here", "short one"]
    together = st.generate(model, prompts, v, 8.0, max_new_tokens=6)
    alone = [st.generate(model, p, v, 8.0, max_new_tokens=6) for p in prompts]
    assert together == alone
    assert st.generate(model, prompts, v, 0.0, max_new_tokens=6) == model.generate(prompts, 6)
    assert together != model.generate(prompts, 6)  # the steering changes what is written
    # a prompt shorter than the vector gets its first rows only
    short = model.run("x", save=["blocks.0.resid_pre"], interventions=st.steer(v, 2.0, lengths=[1]))
    clean = model.run("x", save=["blocks.0.resid_pre"]).cache["blocks.0.resid_pre"]
    torch.testing.assert_close(short.cache["blocks.0.resid_pre"] - clean, 2.0 * v.vector[None, :1])
    assert isinstance(st.generate(model, "x", v, 1.0, max_new_tokens=3), str)


def test_mean_diff_and_pca_vectors(model):
    pos = ["good day to you", "nice work", "lovely and kind", "great"]
    neg = ["bad day to you", "awful work", "cruel and mean", "poor"]
    acts_p = st.text_activations(model, pos, 1, progress=False)
    acts_n = st.text_activations(model, neg, 1, progress=False)
    # mean over tokens, by hand for the first text
    site = "blocks.1.resid_pre"
    one = model.run(pos[0], save=[site]).cache[site][0].mean(0)
    torch.testing.assert_close(acts_p[0], one)
    md = st.mean_diff_vector(model, pos, neg, 1, progress=False)
    torch.testing.assert_close(md.vector[0], acts_p.mean(0) - acts_n.mean(0))
    pca = st.pca_vector(model, pos, neg, 1, progress=False)
    diffs = acts_p - acts_n
    pc = torch.linalg.svd(diffs - diffs.mean(0), full_matrices=False).Vh[0]
    unit = pca.vector[0] / pca.vector[0].norm()
    assert abs(float(unit @ pc)) == pytest.approx(1.0, abs=1e-4)
    assert float(pca.vector[0] @ md.vector[0]) > 0  # signed like the mean difference
    assert float(pca.vector[0].norm()) == pytest.approx(float(unit @ md.vector[0]), rel=1e-4)
    with pytest.raises(InputError, match="paired"):
        st.pca_vector(model, pos, neg[:2], 1, progress=False)
    with pytest.raises(InputError, match="out of range"):
        st.mean_diff_vector(model, pos, neg, 9, progress=False)


def test_perplexity_and_kl(model):
    windows = torch.randint(3, 250, (3, 12), generator=torch.Generator().manual_seed(0))
    logits = model.run(windows).logits
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))
    assert st.perplexity(model, windows) == pytest.approx(float(ce.exp()), rel=1e-4)
    v = st.SteeringVector(torch.randn(model.dims.d_model), 0)
    assert st.perplexity(model, windows, v, 0.0) == pytest.approx(st.perplexity(model, windows))
    assert st.perplexity(model, windows, v, 10.0) != pytest.approx(st.perplexity(model, windows))
    prompts = ["a b c", "hello there friend"]
    assert st.next_token_kl(model, prompts, v, 0.0) == pytest.approx(0.0, abs=1e-6)
    assert st.next_token_kl(model, prompts, v, 5.0) > st.next_token_kl(model, prompts, v, 0.5) > 0


def test_vectors_save_and_load(model, tmp_path):
    v = st.actadd(model, "Love", "Hate", 1)
    v2 = st.SteeringVector.load(v.save(tmp_path / "v.safetensors"))
    torch.testing.assert_close(v2.vector, v.vector)
    assert (v2.layer, v2.method, v2.meta) == (1, "actadd", v.meta)
    assert v2 == v and repr(v2) == repr(v)
    flat = st.SteeringVector.load(tmp_path / "v.safetensors", arrays="numpy")
    assert flat.front and flat.norm() == pytest.approx(v.norm()) and repr(flat) == repr(v)
    (tmp_path / "bad.safetensors").write_bytes(b"nonsense")
    with pytest.raises(InputError, match="not a readable result file"):
        st.SteeringVector.load(tmp_path / "bad.safetensors")
    with pytest.raises(InputError, match="no saved result"):
        st.SteeringVector.load(tmp_path / "none.safetensors")
    with pytest.raises(InputError, match=r"\[d_model\] or \[k, d_model\]"):
        st.SteeringVector(torch.zeros(2, 3, 4), 0)


def test_from_direction_writes_where_the_probe_read():
    d = LinearDirection(torch.tensor([3.0, 4.0]), 0.0, layer=2, method="logistic")
    v = st.from_direction(d, 10.0)
    assert v.layer == 3 and v.method == "probe:logistic"
    torch.testing.assert_close(v.vector[0], torch.tensor([6.0, 8.0]))
    from mechscope.probes import Normaliser

    two = torch.tensor([1.0, 2.0])
    d = dataclasses.replace(d, normaliser=Normaliser(torch.zeros(2), torch.zeros(2), two, two))
    v = st.from_direction(d, 1.0)  # w / σ = (3, 2), unit length: σ = (1, 2)
    torch.testing.assert_close(v.vector[0], torch.tensor([3.0, 2.0]) / 13**0.5)
    flat = LinearDirection(d.weight.numpy(), 0.0, 2, "logistic",
                           Normaliser(*(x.numpy() for x in (torch.zeros(2), torch.zeros(2), two,
                                                            two))))  # fmt: skip
    torch.testing.assert_close(st.from_direction(flat, 1.0).vector, v.vector)


def test_topic_share_counts_whole_words():
    share = st.topic_share(["wedding", "bride"])
    assert share(["The Wedding was lovely", "weddingcake", "a bride!", "nothing"]) == 0.5
    with pytest.raises(InputError):
        st.topic_share([])


def test_target_probability_is_the_next_token_mass_of_the_words(model):
    ids = st.target_tokens(model, ["a", "b", "xyz"])  # "xyz" is three byte tokens: left out
    assert ids == sorted({model.ids(w, False)[0] for w in ("a", "A", "b", "B")})
    prompts = ["hello", "abc de"]
    p = st.target_probability(model, prompts, ["a", "b"])
    probs = [model.run(t).logits[0, -1].softmax(-1)[ids].sum() for t in prompts]
    assert p == pytest.approx(float(sum(probs) / 2), rel=1e-5)
    with pytest.raises(InputError, match="single token"):
        st.target_tokens(model, ["xyz"])


def test_sweep_measures_target_and_costs_and_reopens(tmp_path):
    model = tiny_model("llama")
    with torch.no_grad():  # sharper logits, so that the planted push can dominate
        model.hf.model.norm.weight.mul_(30)
    # a vector that pushes the next token towards byte "a" (planted through the unembedding)
    a = model.ids("a", False)[0]
    unembed = model.hf.get_output_embeddings().weight[a].detach()
    vectors = [st.SteeringVector(unembed / unembed.norm(), layer) for layer in (0, 1)]
    windows = torch.randint(3, 250, (2, 10), generator=torch.Generator().manual_seed(1))
    sweep = st.steering_sweep(
        model, vectors, [0.0, 2.0, 50.0], words=["a"], prompts=["xyz", "hello"], samples=2,
        score=lambda texts: sum(t.count("a") for t in texts) / max(1, sum(map(len, texts))),
        target="share of a", max_new_tokens=8, corpus=windows, neutral_prompts=["a b c"],
        progress=False,
    )  # fmt: skip
    assert sweep.effect.shape == sweep.probability.shape == sweep.kl.shape == (2, 3)
    assert sweep.effect[:, 0].tolist() == [sweep.baseline_effect] * 2  # coef 0: unsteered
    torch.testing.assert_close(sweep.factor()[:, 0], torch.ones(2))
    assert torch.allclose(sweep.perplexity_rise[:, 0], torch.zeros(2), atol=1e-5)
    assert (sweep.factor()[:, 2] > 10).all() and (sweep.effect[:, 2] > sweep.baseline_effect).all()
    assert (sweep.kl[:, 2] > sweep.kl[:, 1]).all()
    layer, coef, p, rise = sweep.best(max_rise=float("inf"))
    assert coef > 0 and p == float(sweep.probability.max())
    with pytest.raises(InputError, match="no \\(layer, coefficient\\)"):
        sweep.best(max_rise=-1.0)
    with pytest.raises(InputError, match="unknown measure"):
        sweep.best(by="joy")
    again = st.SteeringSweep.load(sweep.save(tmp_path / "sweep.safetensors"))
    torch.testing.assert_close(again.probability, sweep.probability)
    assert again.samples == sweep.samples and again.words == ["a"] and again.target == "share of a"
    assert again == sweep and again.max_rise == 0.10
    flat = st.SteeringSweep.load(tmp_path / "sweep.safetensors", arrays="numpy")
    assert flat.best(max_rise=float("inf")) == (layer, coef, p, rise)
    np.testing.assert_allclose(flat.factor(), sweep.factor().numpy())
    # the bound the sweep was made with is the one `best` and the summary use
    loose = dataclasses.replace(sweep, max_rise=float("inf"))
    assert loose.best() == (layer, coef, p, rise) and "within inf% perplexity" in repr(loose)
    with pytest.raises(InputError, match="no \\(layer, coefficient\\)"):
        dataclasses.replace(sweep, max_rise=-1.0).best()
    assert "no cell within -100% perplexity" in repr(dataclasses.replace(sweep, max_rise=-1.0))
    with pytest.raises(InputError, match="kl grid"):
        dataclasses.replace(sweep, kl=sweep.kl[:, :2])
    paths = sweep.figure(tmp_path / "sweep")
    assert set(paths) == {"probability", "effect", "perplexity"}
    assert all(p.exists() for fig in paths.values() for p in fig.values())
    with pytest.raises(InputError, match="one vector per layer"):
        st.steering_sweep(model, [vectors[0], vectors[0]], [1.0], progress=False)


def test_steer_examples_are_one_result_that_prints_itself(model, tmp_path):
    from rich.console import Console

    from mechscope.steering.runs import steer_examples

    v = st.actadd(model, "Love", "Hate", 1)
    ex = steer_examples(model, ["hello there", "abc"], v, 8.0, max_new_tokens=4)
    assert isinstance(ex, st.SteeringExamples) and (ex.layer, ex.coef) == (1, 8.0)
    assert ex.rows[0][0] == "hello there" and len(ex.rows) == 2
    assert ex.unsteered == st.generate(model, ["hello there", "abc"], None, max_new_tokens=4)
    assert st.SteeringExamples.load(ex.save(tmp_path / "ex"), arrays="numpy") == ex
    console = Console(record=True, width=100)
    console.print(ex)
    shown = console.export_text()
    assert "unsteered" in shown and "hello there" in shown
    with pytest.raises(InputError, match="2 prompts, 1 unsteered"):
        st.SteeringExamples(1, 1.0, ["a", "b"], ["x"], ["y", "z"])

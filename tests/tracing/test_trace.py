"""Causal tracing: invariants of restoration, and batched rows equal one forward per cell."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import mechscope as ms
from mechscope.errors import InputError
from mechscope.testing import tiny_model
from mechscope.tracing.facts import Fact
from mechscope.tracing.trace import noise_scale, trace_fact

FACT = Fact("Rome", "The city of {} lies in", "Italy")


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def traced(model):
    return trace_fact(model, FACT, samples=3, noise=5.0, batch_size=40)


def test_restoring_the_last_hidden_state_at_the_end_is_the_clean_run(model, traced):
    last = model.dims.n_layers - 1
    assert traced.scores["hidden"][last, -1] == pytest.approx(traced.clean, rel=1e-4)
    assert traced.clean != pytest.approx(traced.corrupted, rel=1e-3)  # the noise did something


def test_tokens_before_the_subject_restore_nothing(traced):
    start, _ = traced.subject
    for kind in ("hidden", "mlp", "attn"):
        before = traced.scores[kind][:, :start]
        assert torch.allclose(before, torch.full_like(before, traced.corrupted), rtol=1e-4)
        assert torch.allclose(
            traced.indirect_effect(kind)[:, :start], torch.zeros_like(before), atol=1e-6
        )


def test_no_noise_means_every_cell_is_clean(model):
    tr = trace_fact(model, FACT, samples=1, noise=0.0, kinds=["mlp"])
    assert torch.allclose(tr.scores["mlp"], torch.full_like(tr.scores["mlp"], tr.clean), rtol=1e-4)


def test_batched_rows_equal_one_forward_per_cell(model, traced):
    """Recompute a few cells with plain interventions, one forward per noise sample."""
    ids = model.to_tokens(FACT.prompt)
    start, end = traced.subject
    target = model.to_tokens(" Italy", prepend_bos=False)[0, 0]
    clean = model.run(ids, save=["blocks.*.resid_post", "blocks.*.mlp.out"]).cache
    g = torch.Generator().manual_seed(0)
    draws = torch.randn(3, end - start, model.dims.d_model, generator=g) * 5.0
    for kind, site, layer, t in [
        ("hidden", "blocks.0.resid_post", 0, start),
        ("mlp", None, 1, end - 1),
    ]:
        probs = []
        for s in range(3):
            noise = torch.zeros(1, ids.shape[1], model.dims.d_model)
            noise[0, start:end] = draws[s]
            ivs = [ms.add("embed", noise)]
            if kind == "hidden":
                ivs.append(ms.patch(site, clean[site][0, t], positions=[t]))
            else:  # the window covers both layers of the tiny model
                ivs += [
                    ms.patch(
                        f"blocks.{w}.mlp.out", clean[f"blocks.{w}.mlp.out"][0, t], positions=[t]
                    )
                    for w in (0, 1)
                ]
            probs.append(float(model.run(ids, interventions=ivs).logits[0, -1].softmax(-1)[target]))
        assert traced.scores[kind][layer, t] == pytest.approx(sum(probs) / 3, rel=1e-4)


def test_noise_scale_and_errors(model):
    emb = model.hf.get_input_embeddings().weight
    assert noise_scale(model) == pytest.approx(3 * float(emb.detach().std()))
    with pytest.raises(InputError, match="unknown trace kinds"):
        trace_fact(model, FACT, kinds=["mlp", "heads"])
    with pytest.raises(InputError, match="at least 1"):
        trace_fact(model, FACT, samples=0)
    assert "clean" in repr(trace_fact(model, FACT, samples=1, kinds=["hidden"]))


def test_noise_follows_gemmas_embedding_scale():
    """Gemma adds its embeddings × √d_model: 3σ of the matrix alone would be 1/√d_model too weak."""
    from mechscope.testing import tiny_model

    gemma = tiny_model("gemma3")
    emb = gemma.hf.get_input_embeddings().weight
    assert noise_scale(gemma) == pytest.approx(3 * float(emb.detach().std()) * 32**0.5, rel=1e-5)


def test_a_trace_saves_reopens_and_draws(traced, tmp_path):
    from mechscope.tracing.trace import CausalTrace

    back = CausalTrace.load(traced.save(tmp_path / "trace.safetensors"))
    assert (
        back.fact == traced.fact and back.tokens == traced.tokens and back.subject == traced.subject
    )
    assert back.clean == traced.clean and back.corrupted == traced.corrupted
    assert all(torch.equal(back.scores[k], traced.scores[k]) for k in traced.scores)
    paths = traced.figure(tmp_path / "figures" / "rome")
    assert set(paths) == {"hidden", "mlp", "attn"}
    for kind in paths:
        for fmt in ("png", "svg", "html"):
            assert (tmp_path / "figures" / f"rome_{kind}.{fmt}").exists()
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(InputError, match="not mechscope.causal_trace/1"):
        CausalTrace.load(tmp_path / "other.safetensors")
    flat = CausalTrace.load(tmp_path / "trace.safetensors", arrays="numpy")  # as the viewer does
    assert flat == traced and repr(flat) == repr(traced)
    assert np.allclose(flat.indirect_effect("mlp"), traced.indirect_effect("mlp").numpy())
    with pytest.raises(InputError, match="within its"):
        dataclasses.replace(traced, subject=(0, len(traced.tokens) + 1))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_resuming_from_the_restored_token_equals_running_every_position(arch, monkeypatch):
    """The suffix path (corrupted keys and values before the token) changes no score."""
    from mechscope.tracing import trace as trace_mod

    m = tiny_model(arch)
    fast = trace_fact(m, FACT, samples=2, noise=5.0, batch_size=16)
    used = trace_mod.SuffixRunner.of(
        m, m.capture(m.to_tokens(FACT.prompt))[1], m.to_tokens(FACT.prompt), []
    )
    assert (used is not None) == (arch == "llama")  # rotary decoders only; others run all positions
    monkeypatch.setattr(trace_mod.SuffixRunner, "of", classmethod(lambda *a: None))
    slow = trace_fact(m, FACT, samples=2, noise=5.0, batch_size=16)
    for kind in fast.scores:
        assert torch.allclose(fast.scores[kind], slow.scores[kind], atol=1e-5), kind
    assert not torch.allclose(
        fast.scores["hidden"], torch.full_like(fast.scores["hidden"], fast.corrupted)
    )


def test_replacing_the_subject_with_others_of_the_same_length(model):
    tr = trace_fact(model, FACT, replace_with=["Oslo", "Rome", "Bonn", "Amsterdam"], samples=5)
    assert tr.samples == 2 and tr.noise == 0.0  # Rome itself and the longer name are left out
    target = model.to_tokens(" Italy", prepend_bos=False)[0, 0]
    probs = [
        model.run(FACT.template.format(s)).logits[0, -1].softmax(-1)[target]
        for s in ("Oslo", "Bonn")
    ]
    assert tr.corrupted == pytest.approx(float(sum(probs) / 2), rel=1e-4)
    last = model.dims.n_layers - 1
    assert tr.scores["hidden"][last, -1] == pytest.approx(tr.clean, rel=1e-4)
    with pytest.raises(InputError, match="same token length"):
        trace_fact(model, FACT, replace_with=["Amsterdam"])

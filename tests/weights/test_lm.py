"""Weight circuits of language models, checked against the forward and against brute force."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from mechscope.core.weights import attention_weights, mlp_weights, norm_scale
from mechscope.errors import InputError, MechscopeError
from mechscope.testing import tiny_model
from mechscope.weights import lm

ARCHS = ["llama", "gpt2", "gpt_neox"]


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    return tiny_model(request.param, seed=1)


def _norm(model, layer, which, x):
    names = {"gpt2": ("ln_1", "ln_2")}.get(
        model.adapter.family, ("input_layernorm", "post_attention_layernorm")
    )
    block = model.hf.get_submodule(f"{model.adapter.layers}.{layer}")
    return block.get_submodule(names[which == "mlp"])(x)


def _bias(module_path, model, layer):
    m = model.hf.get_submodule(f"{model.adapter.layers}.{layer}.{module_path}")
    return m.bias.detach() if getattr(m, "bias", None) is not None else 0.0


def test_value_and_output_weights_reproduce_the_forward(model):
    ids = torch.randint(0, 259, (2, 7), generator=torch.Generator().manual_seed(0))
    out = model.run(
        ids, save=["blocks.1.resid_pre", "blocks.1.attn.v", "blocks.1.attn.z", "blocks.1.attn.out"]
    )
    c = out.cache
    w = attention_weights(model, 1)
    n = _norm(model, 1, "attn", c["blocks.1.resid_pre"]).detach()
    group = model.dims.n_heads // model.dims.n_kv_heads
    v = torch.einsum("bpd,hde->bphe", n, w.v[::group])  # one query head per K/V head
    v_site = c["blocks.1.attn.v"]
    bias = {"gpt2": lambda: _bias("attn.c_attn", model, 1)[2 * 32 :].reshape(4, 8),
            "gpt_neox": lambda: _bias("attention.query_key_value", model, 1).reshape(4, 3, 8)[:, 2]}  # fmt: skip
    v = v + (bias[model.adapter.family]() if model.adapter.family in bias else 0.0)
    assert torch.allclose(v, v_site, atol=1e-5)
    proj = {"llama": "self_attn.o_proj", "gpt2": "attn.c_proj", "gpt_neox": "attention.dense"}
    written = torch.einsum("bphe,hed->bpd", c["blocks.1.attn.z"], w.o) + _bias(
        proj[model.adapter.family], model, 1
    )
    assert torch.allclose(written, c["blocks.1.attn.out"], atol=1e-5)


def test_mlp_input_weights_reproduce_the_neurons(model):
    ids = torch.randint(0, 259, (2, 5), generator=torch.Generator().manual_seed(1))
    out = model.run(ids, save=["blocks.0.resid_pre", "blocks.0.resid_mid", "blocks.0.mlp.post"])
    parallel = getattr(
        model.hf.config, "use_parallel_residual", False
    )  # NeoX: the MLP reads the block input
    n = _norm(model, 0, "mlp", out.cache[f"blocks.0.resid_{'pre' if parallel else 'mid'}"]).detach()
    ins, w_out = mlp_weights(model, 0)
    if "gate" in ins:
        post = F.silu(n @ ins["gate"]) * (n @ ins["up"])
    else:
        path = {"gpt2": "mlp.c_fc", "gpt_neox": "mlp.dense_h_to_4h"}[model.adapter.family]
        act = model.hf.get_submodule(f"{model.adapter.layers}.0.mlp.act")
        post = act(n @ ins["in"] + _bias(path, model, 0))
    assert torch.allclose(post, out.cache["blocks.0.mlp.post"], atol=1e-5)
    assert w_out.shape == (model.dims.d_mlp, model.dims.d_model)


def test_composition_scores_match_the_full_matrices():
    model = tiny_model("llama", seed=2)
    scores = lm.composition_scores(model, 1, 3)
    w1, w0 = attention_weights(model, 1), attention_weights(model, 0)
    g1, g0 = norm_scale(model, "attn", 1), norm_scale(model, "attn", 0)
    qk = (g1[:, None] * w1.q[3]) @ (g1[:, None] * w1.k[3]).T
    ov = (g1[:, None] * w1.v[3]) @ w1.o[3]
    for h in range(4):
        ov0 = (g0[:, None] * w0.v[h]) @ w0.o[h]
        ratio = lambda m, a, b: m.norm() / (a.norm() * b.norm())  # noqa: E731
        assert scores["q"][0, h] == pytest.approx(float(ratio(ov0 @ qk, ov0, qk)), rel=1e-4)
        assert scores["k"][0, h] == pytest.approx(float(ratio(qk @ ov0.T, ov0, qk)), rel=1e-4)
        assert scores["v"][0, h] == pytest.approx(float(ratio(ov0 @ ov, ov0, ov)), rel=1e-4)
    assert torch.all(scores["k"][1:] == 0)
    assert torch.allclose(lm.ov_circuit(model, 1, 3), ov) and torch.allclose(
        lm.qk_circuit(model, 1, 3), qk
    )


def test_copying_scores_are_those_of_the_full_vocabulary_circuit():
    model = tiny_model("gpt2", seed=3)
    scores = lm.copying_scores(model)
    e, u = lm._embed_unembed(model)
    full = e @ lm.ov_circuit(model, 1, 2) @ u  # [vocab vocab]
    eig = torch.linalg.eigvals(full.double())
    expected = float(eig.real.clamp(min=0).sum() / eig.abs().sum())
    assert scores.shape == (2, 4)
    assert float(scores[1, 2]) == pytest.approx(expected, abs=1e-3)


def test_neuron_wiring_virtual_weights_and_ranking():
    model = tiny_model("llama", seed=4)
    wiring = lm.neuron_wiring(model, 1, 7, k=5)
    ins, _ = mlp_weights(model, 1)
    read = norm_scale(model, "mlp", 1) * ins["gate"][:, 7]
    _, w_out0 = mlp_weights(model, 0)
    assert torch.allclose(wiring.neurons[0], w_out0 @ read, atol=1e-6)
    assert torch.all(wiring.neurons[1] == 0)  # same layer: no virtual weight
    top = wiring.top(3)
    assert [n for _, n, _ in top] == (w_out0 @ read).topk(3).indices.tolist()
    assert all(w < 0 for _, _, w in wiring.top(3, "inhibition"))
    assert len(wiring.logits_up) == 5 and wiring.via == "gate"
    up = lm.neuron_wiring(model, 1, 7, via="up")
    assert not torch.allclose(up.neurons[0], wiring.neurons[0])


def test_neuron_wiring_round_trips(tmp_path):
    model = tiny_model("gpt_neox", seed=5)
    wiring = lm.neuron_wiring(model, 1, 3)
    back = lm.NeuronWiring.load(wiring.save(tmp_path / "w"))
    assert torch.equal(back.neurons, wiring.neurons) and back.logits_up == wiring.logits_up
    assert isinstance(back.logits_up[0], tuple) and back == wiring
    flat = lm.NeuronWiring.load(tmp_path / "w.safetensors", arrays="numpy")
    assert flat.top(4) == wiring.top(4) and flat.top_heads(3) == wiring.top_heads(3)


def test_token_circuits_and_bad_input():
    model = tiny_model("llama", seed=6)
    ov = lm.token_ov(model, 0, 1, ["a", "b"], k=4)
    assert list(ov) == ["a", "b"] and all(len(v) == 4 for v in ov.values())
    qk = lm.token_qk(model, 1, 0, ["a"], k=3)
    assert len(qk["a"]) == 3
    with pytest.raises(InputError, match="layers 0–1"):
        lm.ov_circuit(model, 5, 0)
    with pytest.raises(InputError, match="heads 0–3"):
        lm.qk_circuit(model, 0, 9)
    with pytest.raises(InputError, match="via must be one of gate, up"):
        lm.neuron_wiring(model, 1, 0, via="in")


def test_gemma_folds_its_norm_as_one_plus_w_and_post_norm_families_are_refused():
    gemma = tiny_model("gemma", seed=7)
    g = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for name, p in gemma.hf.named_parameters():
            if "norm" in name:
                p.normal_(generator=g)
    w = attention_weights(gemma, 1)
    scale = 1 + gemma.hf.model.layers[1].input_layernorm.weight.detach()
    torch.testing.assert_close(lm.ov_circuit(gemma, 1, 2), (scale[:, None] * w.v[2]) @ w.o[2])
    with pytest.raises(MechscopeError, match="norms the sublayer outputs"):
        lm.ov_circuit(tiny_model("gemma3"), 0, 0)

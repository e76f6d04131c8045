"""Weights read as the adapter declares them: norms, embeddings, attention and MLP matrices."""

from __future__ import annotations

import pytest
import torch

from mechscope.core.weights import (
    attention_weights,
    block_module,
    embedding,
    frozen_norm,
    has_post_norms,
    mlp_down_projection,
    mlp_weights,
    norm_bias,
    norm_module,
    output_projection,
    unembedding,
)
from mechscope.errors import InputError
from mechscope.testing import tiny_model

FAMILIES = ["llama", "gpt2", "gpt_neox", "gemma3", "gemma"]


def _scrambled(arch: str):
    """A tiny model whose norm weights and biases are random (Gemma's start at 0 = scale 1)."""
    model = tiny_model(arch)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.hf.named_parameters():
            if "norm" in name or "ln" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (0.0 if "bias" in name else 0.3))
    return model


@pytest.mark.parametrize("arch", FAMILIES)
def test_frozen_norms_give_the_modules_own_output(arch: str) -> None:
    model = _scrambled(arch)
    x = torch.randn(3, 5, model.dims.d_model) * 2 + 0.5
    norms = [("final", None), ("attn", 0), ("mlp", 1)]
    if has_post_norms(model):
        norms += [("attn_out", 0), ("mlp_out", 1)]
    for which, layer in norms:
        module = norm_module(model, which, layer)
        bias = norm_bias(model, which, layer)
        mine = frozen_norm(model, which, x, layer)(x) + (0.0 if bias is None else bias)
        torch.testing.assert_close(mine, module(x), rtol=1e-5, atol=1e-5)
        # linear in its argument once frozen
        f = frozen_norm(model, which, x, layer)
        y = torch.randn_like(x)
        torch.testing.assert_close(f(2 * y - x), 2 * f(y) - f(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", FAMILIES)
def test_embedding_and_unembedding_give_the_logits(arch: str) -> None:
    model = tiny_model(arch)
    ids = torch.tensor([[5, 9, 11]])
    out = model.hf(ids, output_hidden_states=True)
    assert torch.equal(embedding(model)[ids[0, 0]], model.hf.get_input_embeddings().weight[5])
    final = out.hidden_states[-1]  # after the final norm in HF's convention
    logits = final @ unembedding(model)
    torch.testing.assert_close(logits, out.logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", FAMILIES)
def test_attention_weights_reproduce_the_projections(arch: str) -> None:
    model = tiny_model(arch)
    d, adapter = model.dims, model.adapter
    x = torch.randn(4, d.d_model)
    w = attention_weights(model, 1)
    group = d.n_heads // d.n_kv_heads
    mods = [block_module(model, 1, p) for p in adapter.qkv]
    with torch.no_grad():
        if adapter.qkv_layout == "separate":
            q, k, v = (m(x) for m in mods)
        elif adapter.qkv_layout == "concat":
            q, k, v = mods[0](x).split(d.d_model, dim=-1)
        else:
            qkv = mods[0](x).reshape(4, d.n_heads, 3, d.d_head)
            q, k, v = (qkv[:, :, i].reshape(4, -1) for i in range(3))
    for h in range(d.n_heads):
        got_q = x @ w.q[h]
        want_q = q.reshape(4, d.n_heads, d.d_head)[:, h]
        got_v = x @ w.v[h]
        want_v = v.reshape(4, d.n_kv_heads, d.d_head)[:, h // group]
        shift_q = (want_q - got_q).std(0).max()
        shift_v = (want_v - got_v).std(0).max()
        assert shift_q < 1e-5 and shift_v < 1e-5  # equal up to a constant: the bias
        want_k = k.reshape(4, d.n_kv_heads, d.d_head)[:, h // group]
        assert (want_k - x @ w.k[h]).std(0).max() < 1e-5
    assert tuple(w.o.shape) == (d.n_heads, d.d_head, d.d_model)


@pytest.mark.parametrize("arch", FAMILIES)
def test_mlp_weights_name_the_gate_when_gated(arch: str) -> None:
    model = tiny_model(arch)
    ins, w_out = mlp_weights(model, 0)
    d = model.dims
    assert set(ins) == ({"gate", "up"} if arch in ("llama", "gemma3", "gemma") else {"in"})
    assert all(tuple(m.shape) == (d.d_model, d.d_mlp) for m in ins.values())
    assert tuple(w_out.shape) == (d.d_mlp, d.d_model)


def test_out_of_range_layers_and_unknown_norms_are_one_line() -> None:
    model = tiny_model("llama")
    with pytest.raises(InputError, match="out of range"):
        attention_weights(model, 7)
    with pytest.raises(InputError, match="norm must be"):
        norm_module(model, "attn")


def test_post_norms_give_attn_out_and_mlp_out(ids) -> None:
    """Gemma 2/3 norm each sublayer's output before the add; other families have no such norm."""
    model = tiny_model("gemma3")
    assert has_post_norms(model)
    sites = ["blocks.1.attn.z", "blocks.1.attn.out", "blocks.1.mlp.post", "blocks.1.mlp.out"]
    cache = model.run(ids, save=sites).cache
    w_o, _ = output_projection(model, 1)
    w_down, _ = mlp_down_projection(model, 1)
    with torch.no_grad():
        attn = norm_module(model, "attn_out", 1)(
            torch.einsum("bphe,hed->bpd", cache[sites[0]], w_o)
        )
        mlp = norm_module(model, "mlp_out", 1)(cache[sites[2]] @ w_down)
    torch.testing.assert_close(attn, cache[sites[1]], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mlp, cache[sites[3]], rtol=1e-5, atol=1e-5)
    llama = tiny_model("llama")
    assert not has_post_norms(llama)
    with pytest.raises(InputError, match="no 'attn_out' norm"):
        norm_module(llama, "attn_out", 0)

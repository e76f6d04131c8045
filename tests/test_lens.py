"""Logit lens and direct logit attribution on tiny models."""

from __future__ import annotations

import pytest
import torch

from mechscope.lens import (
    accumulated_resid,
    decomposed_resid,
    direct_logit_attribution,
    head_logit_attribution,
    logit_direction,
    logit_lens,
    resid_sites,
)
from mechscope.testing import tiny_model


def _random_norm_weights(model):
    """Random norm weights: Gemma's RMSNorm starts at w = 0, where w and 1 + w differ least."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.hf.named_parameters():
            if "norm" in name or "ln" in name:
                p.add_(0.5 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma"])
def test_attribution_total_is_a_real_forwards_logit_difference(arch, ids):
    """The norms are read as declared: Gemma 1 scales by 1 + w, and the pieces still sum."""
    model = _random_norm_weights(tiny_model(arch))
    with torch.no_grad():
        logits = model.hf(ids).logits[:, -1]  # plain HF, no hooks
    own = (logits[:, 10] - logits[:, 20]).mean().item()
    dla = direct_logit_attribution(model, ids, logit_direction(model, 10, 20))
    assert dla.total == pytest.approx(own, abs=1e-4)
    assert dla.explained == pytest.approx(own, abs=1e-4)
    # the IOI head scores are the same attribution, per row
    cache = model.run(ids, save=["blocks.*.attn.z", "blocks.1.resid_post"]).cache
    zs = [cache[f"blocks.{layer}.attn.z"][:, -1] for layer in range(2)]
    per_row = head_logit_attribution(
        model, zs, cache["blocks.1.resid_post"][:, -1], logit_direction(model, 10, 20)
    )
    torch.testing.assert_close(per_row.mean(0), dla.heads)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "gemma3"])
def test_attribution_pieces_sum_to_the_logit_difference(arch, ids):
    model = _random_norm_weights(tiny_model(arch))
    d = logit_direction(model, 10, 20)
    dla = direct_logit_attribution(model, ids, d)
    logits = model.run(ids).logits[:, -1]
    own = (logits[:, 10] - logits[:, 20]).mean().item()
    assert dla.total == pytest.approx(own, abs=1e-4)
    assert dla.explained == pytest.approx(own, abs=1e-4)
    assert dla.heads.shape == (2, 4) and dla.neurons.shape[0] == 2
    # neurons add up to their MLP (less the output bias)
    down = model.hf.get_submodule(f"{model.adapter.layers}.0.{model.adapter.mlp_down}")
    if getattr(down, "bias", None) is None:
        torch.testing.assert_close(dla.neurons[0].sum(), dla.mlps[0])


def test_head_attribution_matches_zero_ablating_its_direct_path(llama, ids):
    """A head's DLA equals the change of the frozen-norm logit difference when it is removed."""
    d = logit_direction(llama, 10, 20)
    dla = direct_logit_attribution(llama, ids, d)
    w_o = llama.hf.model.layers[1].self_attn.o_proj.weight  # [d_model, head*d_head]
    z = llama.run(ids, save=["blocks.1.attn.z"]).cache["blocks.1.attn.z"][
        :, -1, 2
    ]  # [batch, d_head]
    contribution = z @ w_o[:, 16:24].T
    final = llama.run(ids, save=["blocks.1.resid_post"]).cache["blocks.1.resid_post"][:, -1]
    norm = llama.hf.model.norm
    scale = (final.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon).rsqrt()
    expected = (contribution * scale * norm.weight * d).sum(-1).mean()
    torch.testing.assert_close(dla.heads[1, 2], expected, atol=1e-5, rtol=0)


def test_gemma_head_attribution_by_hand(ids):
    """Gemma: head 2 of layer 1 through the post-attention and final RMSNorms, both x·(1+w)/rms."""
    model = _random_norm_weights(tiny_model("gemma3"))
    d = logit_direction(model, 10, 20)
    dla = direct_logit_attribution(model, ids, d)
    layer = model.hf.model.layers[1]
    cache = model.run(ids, save=["blocks.1.attn.z", "blocks.1.resid_post"]).cache
    z = cache["blocks.1.attn.z"][:, -1]  # [batch, head, d_head]
    attn_total = layer.self_attn.o_proj(z.flatten(-2))
    contribution = z[:, 2] @ layer.self_attn.o_proj.weight[:, 16:24].T

    def rms_gain(norm, x):
        return (1 + norm.weight) * (x.pow(2).mean(-1, keepdim=True) + norm.eps).rsqrt()

    final = cache["blocks.1.resid_post"][:, -1]
    written = contribution * rms_gain(layer.post_attention_layernorm, attn_total)
    expected = (written * rms_gain(model.hf.model.norm, final) * d).sum(-1).mean()
    torch.testing.assert_close(dla.heads[1, 2], expected.detach(), atol=1e-5, rtol=1e-5)


def test_resid_decompositions(tiny, ids):
    cache = tiny.run(ids, save=resid_sites(tiny)).cache
    acc = accumulated_resid(tiny, cache)
    parts, names = decomposed_resid(tiny, cache)
    assert acc.shape[0] == tiny.dims.n_layers + 1 and names[0] == "embed"
    torch.testing.assert_close(parts.sum(0), acc[-1], atol=1e-4, rtol=0)


def test_logit_lens_final_row_is_the_model(llama, tmp_path):
    lens = logit_lens(llama, "hello", target="o")
    probs = llama.run("hello").logits[0].softmax(-1)
    torch.testing.assert_close(lens.top_probs[-1], probs.max(-1).values)
    torch.testing.assert_close(lens.target_probs[-1], probs[:, llama.to_single_token("o")])
    assert lens.top_probs.shape == (3, 5)
    files = lens.heatmap(tmp_path / "lens")
    assert files["html"].exists()

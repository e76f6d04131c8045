"""Integration tests on the real default model, SmolLM2-135M-Instruct (marked `model`)."""

from __future__ import annotations

import pytest
import torch

import mechscope as ms

pytestmark = pytest.mark.model

IOI = "When Mary and John went to the store, John gave a drink to"


def test_numbers_equal_hf(smollm2):
    ids = smollm2.to_tokens([IOI, "The Eiffel Tower is located in the city of Paris, France."])
    with torch.no_grad():
        ref = smollm2.hf(ids).logits
    assert torch.equal(smollm2.run(ids).logits, ref)
    assert torch.equal(
        smollm2.run(ids, save=["blocks.*.resid_post", "blocks.*.mlp.post"]).logits, ref
    )
    out = smollm2.run(ids, save=["blocks.*.attn.pattern", "blocks.*.attn.z", "blocks.*.attn.out"])
    assert (out.logits - ref).abs().max() < 1e-4
    pattern = out.cache["blocks.12.attn.pattern"]
    assert pattern.shape[1] == 9  # heads; k and v have 3 (grouped-query attention)
    torch.testing.assert_close(pattern.sum(-1), torch.ones_like(pattern[..., 0]))
    o_proj = smollm2.hf.model.layers[12].self_attn.o_proj
    z = out.cache["blocks.12.attn.z"]
    torch.testing.assert_close(o_proj(z.flatten(-2)), out.cache["blocks.12.attn.out"])


def test_paris_is_the_top_next_token(smollm2):
    logits = smollm2.run("The capital of France is").logits
    assert smollm2.tokenizer.decode(logits[0, -1].argmax()) == " Paris"


def test_ioi_logit_difference(smollm2):
    logits = smollm2.run(IOI).logits[0, -1]
    diff = logits[smollm2.to_single_token(" Mary")] - logits[smollm2.to_single_token(" John")]
    assert diff > 3


def test_patching_s2_restores_ioi_behaviour(smollm2):
    corrupted = IOI.replace("John gave", "Mary gave")
    io, s = smollm2.to_single_token(" Mary"), smollm2.to_single_token(" John")
    clean = smollm2.run(IOI, save=["blocks.*.resid_pre"])
    s2 = len(smollm2.to_str_tokens(IOI)) - 5  # ' John' before ' gave a drink to'
    assert smollm2.to_str_tokens(IOI)[s2] == " John"
    n = smollm2.dims.n_layers
    ivs = [
        ms.patch(f"blocks.{layer}.resid_pre", clean.cache, rows=[layer], positions=[s2])
        for layer in range(n)
    ]
    out = smollm2.run(smollm2.to_tokens(corrupted).repeat(n, 1), interventions=ivs)
    diffs = out.logits[:, -1, io] - out.logits[:, -1, s]
    base = smollm2.run(corrupted).logits[0, -1]
    clean_diff = clean.logits[0, -1, io] - clean.logits[0, -1, s]
    base_diff = base[io] - base[s]
    # patching at the very first layer puts the clean token back: full recovery
    torch.testing.assert_close(diffs[0], clean_diff, atol=1e-3, rtol=0)
    # by the last layer the S2 position barely matters any more
    assert abs(diffs[-1] - base_diff) < 0.25 * abs(clean_diff - base_diff)


def test_generate_and_cache_folder(smollm2):
    text = smollm2.generate("The capital of France is", max_new_tokens=3)
    assert "Paris" in text

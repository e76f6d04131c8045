"""Head diagnostics: shapes, exact scores on forced attention patterns, DLA identities, classes."""

from __future__ import annotations

import pytest
import torch

import mechscope as ms
from mechscope import Model
from mechscope.core.weights import frozen_norm
from mechscope.ioi import (
    HeadClassification,
    HeadLabel,
    HeadScores,
    IOIAttentionScores,
    IOIDataset,
    classify_heads,
    copying_scores,
    duplicate_token_scores,
    head_logit_attribution,
    induction_scores,
    ioi_attention_scores,
    ioi_dataset,
    previous_token_scores,
    repeated_random_tokens,
)
from mechscope.testing import named_tiny_model, tiny_model

ARCHS = ["llama", "gpt2", "gpt_neox", "gemma3"]
NAMES = ["Ann", "Bob", "Cat", "Dan", "Eve"]
T = 6  # repeated random sequences: BOS + T tokens + the same T tokens


def named_tiny(arch: str) -> Model:
    """A tiny model whose tokenizer has " Ann", " Bob", … " store", " drink" as single tokens."""
    return named_tiny_model(arch, [*NAMES, "store", "drink"])


def tiny_ioi(model: Model, n: int = 6) -> IOIDataset:
    return ioi_dataset(model, n, names=NAMES, places=["store"], objects=["drink"])


def one_hot_pattern(key_of_query):
    """A pattern function: each query position attends only to key_of_query(q)."""

    def fn(pattern: torch.Tensor) -> torch.Tensor:
        q = torch.arange(pattern.shape[-2])
        out = torch.zeros_like(pattern)
        out[..., q, key_of_query(q)] = 1.0
        return out

    return fn


@pytest.mark.parametrize("arch", ARCHS)
def test_scores_have_one_value_per_head(arch: str) -> None:
    model = named_tiny(arch)
    n_layers, n_heads = 2, 4
    for fn in (induction_scores, duplicate_token_scores, previous_token_scores):
        result = fn(model, n_prompts=5, seq_len=T, chunk_size=2)
        assert result.scores.shape == (n_layers, n_heads)
        assert ((result.scores >= 0) & (result.scores <= 1 + 1e-6)).all()
    ds = tiny_ioi(model)
    att = ioi_attention_scores(model, ds, chunk_size=4)
    assert all(att[k].shape == (n_layers, n_heads) for k in ("IO", "S1", "S2"))
    assert copying_scores(model, ds, chunk_size=4).scores.shape == (n_layers, n_heads)


def test_repeated_random_tokens_layout() -> None:
    model = tiny_model("llama")
    tokens = repeated_random_tokens(model, n_prompts=3, seq_len=T, seed=1)
    assert tokens.shape == (3, 1 + 2 * T)
    assert (tokens[:, 0] == model.bos_token_id).all()
    assert torch.equal(tokens[:, 1 : T + 1], tokens[:, T + 1 :])
    assert not set(tokens[:, 1:].flatten().tolist()) & set(model.tokenizer.all_special_ids)
    assert torch.equal(tokens, repeated_random_tokens(model, 3, T, seed=1))


def test_forced_induction_pattern_scores_exactly_one() -> None:
    model = tiny_model("llama")
    # second copy: attend to the token after the earlier copy; elsewhere to BOS
    induction = one_hot_pattern(lambda q: torch.where(q > T, q - T + 1, 0))
    ivs = [ms.apply("blocks.0.attn.pattern", induction)]
    ind = induction_scores(model, n_prompts=4, seq_len=T, interventions=ivs, chunk_size=3)
    assert torch.equal(ind.scores[0], torch.ones(4))
    assert (ind.scores[1] < 1).all()
    dup = duplicate_token_scores(model, n_prompts=4, seq_len=T, interventions=ivs)
    assert torch.equal(dup.scores[0], torch.zeros(4))


def test_forced_duplicate_and_previous_token_patterns() -> None:
    model = tiny_model("gpt2")
    duplicate = one_hot_pattern(lambda q: torch.where(q > T, q - T, q))  # else: itself
    previous = one_hot_pattern(lambda q: (q - 1).clamp_min(0))
    ivs = [
        ms.apply("blocks.1.attn.pattern", duplicate),
        ms.apply("blocks.0.attn.pattern", previous),
    ]
    dup = duplicate_token_scores(model, n_prompts=3, seq_len=T, interventions=ivs)
    prev = previous_token_scores(model, n_prompts=3, seq_len=T, interventions=ivs)
    assert torch.equal(dup.scores[1], torch.ones(4))
    assert torch.equal(prev.scores[0], torch.ones(4))
    assert torch.equal(prev.scores[1], torch.zeros(4))


def test_forced_end_to_io_attention() -> None:
    model = named_tiny("llama")
    ds = tiny_ioi(model, 5)
    io = ds.positions["IO"]

    def end_to_io(pattern: torch.Tensor) -> torch.Tensor:
        out = pattern.clone()
        out[:, :, -1] = 0.0
        out[torch.arange(len(ds)), :, -1, io] = 1.0
        return out

    att = ioi_attention_scores(
        model, ds, interventions=[ms.apply("blocks.1.attn.pattern", end_to_io)]
    )
    assert torch.equal(att["IO"][1], torch.ones(4))
    assert torch.equal(att["S1"][1], torch.zeros(4)) and torch.equal(att["S2"][1], torch.zeros(4))


def _end_run(model: Model, ds: IOIDataset):
    sites = ["blocks.*.attn.z", "blocks.*.attn.out", "blocks.1.resid_post", "final_norm"]
    out = model.run(ds.tokens, save=sites)
    rows, end = torch.arange(len(ds)), ds.positions["END"]
    return out.cache, rows, end


@pytest.mark.parametrize("arch", ARCHS)
def test_head_attributions_sum_to_the_layers_attention_output(arch: str) -> None:
    """Σ_h DLA(head h) = DLA(attn.out − output bias), through the same frozen final norm."""
    model = named_tiny(arch)
    ds = tiny_ioi(model)
    cache, rows, end = _end_run(model, ds)
    final = cache["blocks.1.resid_post"][rows, end]
    w_u = model.hf.get_submodule(model.adapter.unembed).weight.detach()
    direction = w_u[ds.io_ids] - w_u[ds.s_ids]
    zs = [cache[f"blocks.{layer}.attn.z"][rows, end] for layer in range(2)]
    dla = head_logit_attribution(model, zs, final, direction)
    assert dla.shape == (len(ds), 2, 4)
    for layer in range(2):
        proj = model.hf.get_submodule(f"{model.adapter.layers}.{layer}.{model.adapter.attn_proj}")
        attn_out = cache[f"blocks.{layer}.attn.out"][rows, end]
        if proj.bias is not None:
            attn_out = attn_out - proj.bias.detach()
        expected = (frozen_norm(model, "final", final)(attn_out) * direction).sum(-1)
        torch.testing.assert_close(dla[:, layer].sum(-1), expected, rtol=1e-4, atol=1e-5)
    # stacked z works the same as a list
    torch.testing.assert_close(
        head_logit_attribution(model, torch.stack(zs), final, direction), dla
    )


def test_copying_scores_are_the_mean_attribution_and_ablation_zeroes_a_head() -> None:
    model = named_tiny("gpt2")
    ds = tiny_ioi(model, 5)
    cache, rows, end = _end_run(model, ds)
    w_u = model.hf.get_submodule(model.adapter.unembed).weight.detach()
    zs = [cache[f"blocks.{layer}.attn.z"][rows, end] for layer in range(2)]
    direction = w_u[ds.io_ids] - w_u[ds.s_ids]
    dla = head_logit_attribution(model, zs, cache["blocks.1.resid_post"][rows, end], direction)
    copying = copying_scores(model, ds, chunk_size=2)
    torch.testing.assert_close(copying.scores, dla.mean(0))
    ablated = copying_scores(
        model, ds, interventions=[ms.zero_ablate("blocks.1.attn.z", heads=[2])]
    )
    assert ablated.scores[1, 2] == 0


def _scores(name: str, values: dict[tuple[int, int], float]) -> HeadScores:
    scores = torch.zeros(6, 4) + 0.01 * torch.arange(24).reshape(6, 4) / 24
    for (layer, head), v in values.items():
        scores[layer, head] = v
    return HeadScores(name, scores)


def test_classify_heads_picks_outliers_and_splits_movers_by_sign() -> None:
    induction = _scores("induction", {(3, 1): 0.9, (4, 2): 0.8})
    attention = IOIAttentionScores(
        io=_scores("io", {(5, 0): 0.7, (5, 3): 0.6, (4, 0): 0.5}).scores,
        s1=torch.zeros(6, 4),
        s2=_scores("s2", {(2, 2): 0.8, (3, 3): 0.7}).scores,
    )
    copying = _scores("copying", {(5, 0): 2.0, (5, 3): -1.5, (4, 0): 0.0})
    classes = classify_heads(
        induction=induction, ioi_attention=attention, copying=copying, z_threshold=2.0
    )
    assert [(h.layer, h.head) for h in classes.of("induction")] == [(3, 1), (4, 2)]
    assert classes.of("name_mover") == [HeadLabel(5, 0, "name_mover", 2.0)]
    assert [(h.layer, h.head) for h in classes.of("negative_name_mover")] == [(5, 3)]
    assert {(h.layer, h.head) for h in classes.of("s_inhibition_candidate")} == {(2, 2), (3, 3)}
    assert not classes.of("previous_token")  # not given, not guessed

    effect = torch.zeros(6, 4)
    effect[2, 2] = -1.0
    with_effect = classify_heads(
        ioi_attention=attention, s_inhibition_effect=effect, z_threshold=2.0
    )
    assert [tuple(h) for h in with_effect.of("s_inhibition")] == [(2, 2, "s_inhibition", -1.0)]
    assert [(h.layer, h.head) for h in with_effect.of("s_inhibition_candidate")] == [(3, 3)]
    one = classify_heads(induction=induction, top=1, z_threshold=2.0)
    assert len(one) == 1 and "induction" in repr(one)


def test_results_save_and_load(tmp_path) -> None:
    model = tiny_model("llama")
    ind = induction_scores(model, n_prompts=2, seq_len=T)
    back = HeadScores.load(ind.save(tmp_path / "ind.safetensors"))
    assert (
        torch.equal(back.scores, ind.scores) and back.meta == ind.meta and back.name == "induction"
    )
    assert repr(ind).startswith("HeadScores(induction, 2×4 heads")
    att = IOIAttentionScores(torch.rand(2, 4), torch.rand(2, 4), torch.rand(2, 4), "m", {"n": 3})
    att_back = IOIAttentionScores.load(att.save(tmp_path / "att.safetensors"))
    assert torch.equal(att_back["S2"], att.s2) and att_back.meta == {"n": 3}
    classes = classify_heads(induction=ind, z_threshold=0.0, top=2)
    path = classes.save(tmp_path / "classes")
    assert path.name == "classes.safetensors"
    assert list(HeadClassification.load(path)) == list(classes) and len(classes) == 2
    assert repr(HeadClassification.load(path, arrays="numpy")) == repr(classes)
    with pytest.raises(ms.MechscopeError, match="head_scores"):
        HeadClassification.load(tmp_path / "ind.safetensors")

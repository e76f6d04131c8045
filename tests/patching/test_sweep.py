"""Activation patching sweeps on tiny models: batched equals the loop; clean patches give clean."""

from __future__ import annotations

import pytest
import torch

import mechscope as ms
from mechscope.patching import PatchResult, activation_patching
from mechscope.testing import tiny_model


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(3)
    clean = torch.randint(3, 259, (2, 7), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2] = torch.randint(3, 259, (2,), generator=g)
    return clean, corrupted


def metric(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, -1, 10] - logits[:, -1, 20]


def loop(model, clean, corrupted, site, per_position, heads):
    """One forward per patch, the way it is usually written."""
    clean_cache = model.run(clean, save=[f"blocks.*.{site}"]).cache
    out = []
    for layer in range(model.dims.n_layers):
        for head in range(model.dims.n_heads) if heads else [None]:
            for pos in range(clean.shape[1]) if per_position else [None]:
                sel = {"positions": [pos] if pos is not None else None}
                if head is not None:
                    sel["heads"] = [head]
                patch = ms.patch(f"blocks.{layer}.{site}", clean_cache, **sel)
                out.append(metric(model.run(corrupted, interventions=[patch]).logits).mean())
    return torch.stack(out)


@pytest.mark.parametrize(
    ("arch", "site", "per_position"),
    [
        ("llama", "resid_pre", True),
        ("gpt2", "attn.out", True),
        ("gpt_neox", "mlp.out", True),
        ("llama", "resid_mid", False),
        ("llama", "attn.z", False),
        ("gpt2", "attn.z", True),
        ("llama", "attn.pattern", True),
        ("gpt_neox", "attn.pattern", False),
    ],
)
def test_batched_sweep_equals_one_forward_per_patch(arch, site, per_position, pair):
    model = tiny_model(arch)
    clean, corrupted = pair
    result = activation_patching(
        model, clean, corrupted, metric, site, per_position=per_position, max_rows=6, progress=False
    )
    expected = loop(model, clean, corrupted, site, per_position, site in ("attn.z", "attn.pattern"))
    torch.testing.assert_close(result.raw.flatten(), expected, atol=1e-5, rtol=0)
    assert result.axes[0] == "layer" and result.values.shape[0] == model.dims.n_layers


def test_patching_with_clean_values_gives_the_clean_metric(llama, pair):
    clean, corrupted = pair
    # noising from the clean run itself changes nothing anywhere
    same = activation_patching(
        llama, clean, clean, metric, "resid_pre", direction="noise", progress=False
    )
    clean_metric = metric(llama.run(clean).logits).mean()
    torch.testing.assert_close(
        same.raw, torch.full_like(same.raw, clean_metric.item()), atol=1e-5, rtol=0
    )
    # restoring the whole residual stream at layer 0 restores everything
    whole = activation_patching(
        llama, clean, corrupted, metric, "resid_pre", per_position=False, progress=False
    )
    torch.testing.assert_close(whole.values[0], torch.tensor(1.0), atol=1e-4, rtol=0)
    # positions before the corruption carry nothing
    per_pos = activation_patching(llama, clean, corrupted, metric, "resid_pre", progress=False)
    torch.testing.assert_close(per_pos.values[:, :2], torch.zeros(2, 2), atol=1e-4, rtol=0)


def test_result_saves_reopens_and_draws(llama, pair, tmp_path):
    clean, corrupted = pair
    result = activation_patching(llama, clean, corrupted, metric, "attn.z", progress=False)
    assert result.axes == ("layer", "head", "pos") and result.values.shape == (2, 4, 7)
    path = result.save(tmp_path / "r.safetensors")
    back = PatchResult.load(path)
    assert torch.equal(back.values, result.values) and back.labels == result.labels
    flat = PatchResult.load(path, arrays="numpy")  # what the viewer reads: no torch
    assert flat.top(5) == result.top(5) and flat.top(2, largest=False) == result.top(2, False)
    assert repr(flat) == repr(result)
    files = result.heatmap(tmp_path / "fig")
    assert all(files[f].stat().st_size > 0 for f in ("png", "svg", "html"))
    assert "PatchResult(denoise attn.z" in repr(result)


def test_bad_inputs_are_named(llama, pair):
    clean, corrupted = pair
    with pytest.raises(ms.InputError, match="same shape"):
        activation_patching(llama, clean, corrupted[:, :5], metric, progress=False)
    with pytest.raises(ms.InputError, match="valid: resid_pre"):
        activation_patching(llama, clean, corrupted, metric, "hook_resid", progress=False)

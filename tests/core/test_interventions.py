"""Interventions: selectors, per-row experiments, ablations, errors that name what is wrong."""

from __future__ import annotations

import pytest
import torch

import mechscope as ms


def test_rows_carry_different_interventions(llama, ids):
    site = "blocks.0.resid_post"
    v = torch.randn(32)
    batched = llama.run(
        ids,
        interventions=[ms.add(site, v, rows=[0], positions=[3]), ms.zero_ablate(site, rows=[2])],
    )
    row0 = llama.run(ids[:1], interventions=[ms.add(site, v, positions=[3])])
    row1 = llama.run(ids[1:2])
    row2 = llama.run(ids[2:], interventions=[ms.zero_ablate(site)])
    torch.testing.assert_close(batched.logits[0], row0.logits[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.logits[1], row1.logits[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.logits[2], row2.logits[0], atol=1e-5, rtol=0)
    # positions before the patch are untouched (causal)
    torch.testing.assert_close(batched.logits[0, :3], llama.run(ids[:1]).logits[0, :3])


def test_patching_from_a_clean_cache_by_row_and_position(llama, ids):
    site = "blocks.1.resid_pre"
    clean = llama.run(ids[:1], save=[site])
    corrupted = ids[1:2].repeat(4, 1)
    ivs = [ms.patch(site, clean.cache, rows=[i], positions=[i]) for i in range(4)]
    out = llama.run(corrupted, save=[site], interventions=ivs)
    for i in range(4):
        got = out.cache[site][i]
        assert torch.equal(got[i], clean.cache[site][0, i])
        others = [p for p in range(11) if p != i]
        ref = llama.run(ids[1:2], save=[site]).cache[site][0]
        torch.testing.assert_close(
            got[others], ref[others], atol=1e-6, rtol=0
        )  # batch-size numerics


def test_head_selector_zeroes_one_head_of_z(llama, ids):
    out = llama.run(
        ids, save=["blocks.0.attn.z"], interventions=[ms.zero_ablate("blocks.0.attn.z", heads=[2])]
    )
    z = out.cache["blocks.0.attn.z"]
    assert z[:, :, 2].abs().sum() == 0
    assert z[:, :, [0, 1, 3]].abs().sum() > 0


def test_neuron_selector_and_scale(llama, ids):
    site = "blocks.1.mlp.post"
    ref = llama.run(ids, save=[site]).cache[site]
    out = llama.run(
        ids, save=[site], interventions=[ms.scale(site, 3.0, neurons=[5, 7], positions=[-1])]
    )
    got = out.cache[site]
    torch.testing.assert_close(got[:, -1, [5, 7]], 3 * ref[:, -1, [5, 7]])
    assert torch.equal(got[:, :-1], ref[:, :-1])


def test_mean_ablation_over_batch(llama, ids):
    site = "blocks.0.mlp.out"
    ref = llama.run(ids, save=[site]).cache[site]
    out = llama.run(ids, save=[site], interventions=[ms.mean_ablate(site)])
    torch.testing.assert_close(out.cache[site], ref.mean(0, keepdim=True).expand_as(ref))
    given = torch.full((32,), 0.5)
    out = llama.run(ids, save=[site], interventions=[ms.mean_ablate(site, given, positions=[0])])
    assert torch.equal(out.cache[site][:, 0], given.expand(3, 32))


def test_resample_ablation_is_seeded(llama, ids):
    site = "blocks.0.resid_post"
    source = llama.run(ids.flip(0), save=[site]).cache[site]
    a = llama.run(ids, save=[site], interventions=[ms.resample_ablate(site, source, seed=3)])
    b = llama.run(ids, save=[site], interventions=[ms.resample_ablate(site, source, seed=3)])
    assert torch.equal(a.cache[site], b.cache[site])
    for row in a.cache[site]:
        assert any(torch.equal(row, s) for s in source)


def test_custom_function(llama, ids):
    site = "blocks.0.attn.pattern"
    out = llama.run(ids, save=[site], interventions=[ms.apply(site, lambda p: p * 0 + 1 / 11)])
    assert torch.allclose(out.cache[site], torch.full_like(out.cache[site], 1 / 11))


def test_unknown_site_lists_closest_names(llama, ids):
    with pytest.raises(ms.SiteError) as err:
        llama.run(ids, save=["blocks.1.resid_psot"])
    assert "blocks.1.resid_post" in str(err.value)
    with pytest.raises(ms.SiteError, match="matches no site"):
        llama.run(ids, save=["blocks.*.hook_z"])


def test_shape_mismatch_names_site_and_shapes(llama, ids):
    with pytest.raises(ms.InterventionError) as err:
        llama.run(ids, interventions=[ms.replace("blocks.0.resid_post", torch.zeros(5, 7))])
    msg = str(err.value)
    assert "blocks.0.resid_post" in msg and "(3, 11, 32)" in msg and "(5, 7)" in msg


def test_selector_out_of_range_and_wrong_axis(llama, ids):
    with pytest.raises(ms.InterventionError, match="heads"):
        llama.run(ids, interventions=[ms.zero_ablate("blocks.0.attn.z", heads=[9])])
    with pytest.raises(ms.InterventionError, match="does not apply"):
        llama.run(ids, interventions=[ms.zero_ablate("blocks.0.resid_post", heads=[0])])


def _hook_count(model) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.hf.modules()
    )


def test_hooks_are_removed_also_when_the_forward_raises(llama, ids):
    before = _hook_count(llama)
    impl = llama.hf.config._attn_implementation

    def boom(x):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        llama.run(
            ids, save=["blocks.*.attn.z"], interventions=[ms.apply("blocks.1.attn.pattern", boom)]
        )
    assert _hook_count(llama) == before
    assert llama.hf.config._attn_implementation == impl
    assert not any(hasattr(m, "_mechscope_attn") for m in llama.hf.modules())


def test_user_hooks_survive(llama, ids):
    seen = []
    handle = llama.hf.model.layers[0].register_forward_hook(lambda *a: seen.append(1))
    llama.run(ids, save=["blocks.0.resid_post"])
    llama.hf(ids)
    assert len(seen) == 2
    handle.remove()


def test_intervention_repr_is_readable():
    iv = ms.patch("blocks.3.resid_pre", torch.zeros(1, 5, 32), rows=[0], positions=[4])
    assert repr(iv) == "replace(blocks.3.resid_pre, rows=[0], positions=[4], value=(1, 5, 32))"
    with pytest.raises(ms.InterventionError, match="needs a tensor"):
        ms.Intervention("blocks.0.resid_post", "add", None)


def test_any_module_path_is_a_site():
    from mechscope import Model

    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    model = Model(net)
    x = torch.randn(5, 4)
    out = model.run(x, save=["1"], interventions=[ms.zero_ablate("1", neurons=[0, 1])])
    assert out.cache["1"][:, :2].abs().sum() == 0
    assert [s.name for s in model.sites()] == ["0", "1", "2"]
    with pytest.raises(ms.SiteError, match="valid sites include: 0, 1, 2"):
        model.run(x, save=["3"])


def test_stop_ends_the_forward_after_the_site_and_its_saves(llama, ids):
    reached: list[int] = []
    watch = [ms.observe(f"blocks.{layer}.resid_post", lambda x, i=layer: reached.append(i)) for layer in range(2)]  # fmt: skip
    out = llama.run(
        ids, save=["blocks.0.resid_post"], interventions=[ms.stop("blocks.0.resid_post"), *watch]
    )
    assert out.logits is None
    assert reached == [0]  # block 1 never ran
    full = llama.run(ids, save=["blocks.0.resid_post"])
    assert torch.equal(out.cache["blocks.0.resid_post"], full.cache["blocks.0.resid_post"])
    with llama.hooks([ms.stop("blocks.0.mlp.post")], save=["blocks.0.mlp.post"]) as cache:
        llama.hf(ids)
        raise AssertionError("the forward should have stopped")  # skipped by the stop
    assert cache["blocks.0.mlp.post"].shape[:2] == ids.shape

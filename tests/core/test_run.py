"""Model.run: numbers equal HF's with no interventions; attention internals agree with eager."""

from __future__ import annotations

import pytest
import torch

import mechscope as ms
from mechscope.testing import tiny_model

ATTN = [
    "blocks.*.attn.q",
    "blocks.*.attn.k",
    "blocks.*.attn.v",
    "blocks.*.attn.pattern",
    "blocks.*.attn.z",
]


def test_no_interventions_is_bit_identical(tiny, ids):
    ref = tiny.hf(ids).logits
    assert torch.equal(tiny.run(ids).logits, ref)
    out = tiny.run(ids, save=["blocks.*.resid_post", "blocks.*.mlp.post", "blocks.*.resid_mid"])
    assert torch.equal(out.logits, ref)
    assert len(out.cache) == 3 * tiny.dims.n_layers


def test_attention_sites_within_tolerance_and_default_kernel_restored(tiny, ids):
    before = tiny.hf.config._attn_implementation
    ref = tiny.hf(ids).logits
    out = tiny.run(ids, save=ATTN)
    assert (out.logits - ref).abs().max() < 1e-4
    assert tiny.hf.config._attn_implementation == before
    d = tiny.dims
    assert out.cache["blocks.0.attn.q"].shape == (3, 11, d.n_heads, d.d_head)
    assert out.cache["blocks.0.attn.k"].shape == (3, 11, d.n_kv_heads, d.d_head)
    pattern = out.cache["blocks.1.attn.pattern"]
    assert pattern.shape == (3, d.n_heads, 11, 11)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(3, d.n_heads, 11))


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_pattern_reproduces_hf_eager_weights(arch, ids):
    model = tiny_model(arch)
    out = model.run(ids, save=["blocks.*.attn.pattern"])
    eager = tiny_model(arch)
    eager.hf.set_attn_implementation("eager")
    weights = eager.hf(ids, output_attentions=True).attentions
    for layer, w in enumerate(weights):
        torch.testing.assert_close(out.cache[f"blocks.{layer}.attn.pattern"], w, atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_z_through_output_projection_is_attn_out(arch, ids):
    model = tiny_model(arch)
    out = model.run(ids, save=["blocks.*.attn.z", "blocks.*.attn.out"])
    for layer in range(model.dims.n_layers):
        z = out.cache[f"blocks.{layer}.attn.z"]  # [batch, pos, head, d_head]
        proj = model.hf.get_submodule(f"{model.adapter.layers}.{layer}.{model.adapter.attn_proj}")
        torch.testing.assert_close(proj(z.flatten(-2)), out.cache[f"blocks.{layer}.attn.out"])


def test_residual_identities_hold_on_every_family(tiny, ids):
    out = tiny.run(
        ids,
        save=[
            "blocks.*.resid_pre",
            "blocks.*.attn.out",
            "blocks.*.resid_mid",
            "blocks.*.mlp.out",
            "blocks.*.resid_post",
            "final_norm",
            "logits",
        ],
    )
    c = out.cache
    for layer in range(tiny.dims.n_layers):
        p = f"blocks.{layer}."
        torch.testing.assert_close(c[p + "resid_mid"], c[p + "resid_pre"] + c[p + "attn.out"])
        torch.testing.assert_close(c[p + "resid_post"], c[p + "resid_mid"] + c[p + "mlp.out"])
        if layer + 1 < tiny.dims.n_layers:
            assert torch.equal(c[p + "resid_post"], c[f"blocks.{layer + 1}.resid_pre"])
    assert torch.equal(c["logits"], out.logits)


def test_replacing_every_site_with_its_own_value_changes_nothing(tiny, ids):
    names = [s.name for s in tiny.sites()]
    clean = tiny.run(ids, save=names)
    patched = tiny.run(ids, interventions=[ms.patch(n, clean.cache) for n in names])
    torch.testing.assert_close(patched.logits, clean.logits, atol=1e-5, rtol=0)


def test_zero_ablating_neurons_equals_zeroing_mlp_out(tiny, ids):
    layer = 1
    ablated = tiny.run(ids, interventions=[ms.zero_ablate(f"blocks.{layer}.mlp.post")])
    zeroed = tiny.run(ids, interventions=[ms.zero_ablate(f"blocks.{layer}.mlp.out")])
    # a zero input to the down projection leaves only its bias
    down = tiny.hf.get_submodule(f"{tiny.adapter.layers}.{layer}.{tiny.adapter.mlp_down}")
    if getattr(down, "bias", None) is None or not down.bias.abs().any():
        torch.testing.assert_close(ablated.logits, zeroed.logits, atol=1e-5, rtol=0)
    else:
        bias_only = tiny.run(ids, interventions=[ms.replace(f"blocks.{layer}.mlp.out", down.bias)])
        torch.testing.assert_close(ablated.logits, bias_only.logits, atol=1e-5, rtol=0)
    assert not torch.allclose(ablated.logits, tiny.run(ids).logits)


def test_save_order_sees_values_before_and_after_an_intervention(llama, ids):
    site = "blocks.0.resid_post"
    out = llama.run(ids, interventions=[ms.save(site), ms.add(site, torch.ones(32))])
    before = out.cache[site]
    out2 = llama.run(ids, save=[site], interventions=[ms.add(site, torch.ones(32))])
    torch.testing.assert_close(out2.cache[site], before + 1)


def test_gradients_are_saved(llama, ids):
    site = "blocks.1.resid_pre"

    def metric(logits):
        return logits[:, -1, 5].sum()

    out = llama.run(ids, save=[site], save_grad=[site], backward=metric)
    grad = out.cache.grads[site]
    assert grad.shape == out.cache[site].shape
    # check against autograd on a leaf put at the same place
    x = out.cache[site].clone().requires_grad_(True)
    llama.run(ids, interventions=[ms.apply(site, lambda _: x)], backward=metric)
    torch.testing.assert_close(grad, x.grad)


def test_gradients_reach_sites_of_a_frozen_model(llama, ids):
    llama.hf.requires_grad_(False)
    out = llama.run(
        ids, save_grad=["blocks.0.attn.z"], backward=lambda lg: lg[:, -1].logsumexp(-1).sum()
    )
    assert out.cache.grads["blocks.0.attn.z"].abs().sum() > 0


def test_trace_collects_and_runs_on_exit(llama, ids):
    with llama.trace(ids) as t:
        t.save("blocks.*.resid_post")
        t.zero_ablate("blocks.0.mlp.out", positions=[2])
    assert set(t.cache) == {"blocks.0.resid_post", "blocks.1.resid_post"}
    ref = llama.run(ids, interventions=[ms.zero_ablate("blocks.0.mlp.out", positions=[2])])
    assert torch.equal(t.logits, ref.logits)


def test_trace_fails_on_the_wrong_line(llama, ids):
    with pytest.raises(ms.SiteError, match="blocks.0.attn.z"), llama.trace(ids) as t:
        t.save("blocks.0.attn.hook_z")
    assert t.output is None


def test_generate_with_intervention_changes_text(llama):
    plain = llama.generate("hello", max_new_tokens=6)
    again = llama.generate("hello", max_new_tokens=6)
    assert plain == again
    steered = llama.generate(
        "hello",
        max_new_tokens=6,
        interventions=[ms.add("blocks.0.resid_post", 50 * torch.randn(32))],
    )
    assert steered != plain


def test_cache_round_trips_through_safetensors(llama, ids, tmp_path):
    out = llama.run(
        ids,
        save=["blocks.*.attn.pattern", "embed"],
        save_grad=["embed"],
        backward=lambda lg: lg.sum(),
    )
    path = out.cache.save(tmp_path / "c.safetensors")
    back = ms.ActivationCache.load(path)
    assert list(back) == list(out.cache)
    for k in out.cache:
        assert torch.equal(back[k], out.cache[k])
    assert torch.equal(back.grads["embed"], out.cache.grads["embed"])
    assert back.model_name == "tiny-llama"


def test_text_inputs_with_padding_match_single_runs(llama):
    batch = llama.run(["hello world", "hi"])
    single = llama.run("hi")
    n = single.logits.shape[1]
    torch.testing.assert_close(batch.logits[1, :n], single.logits[0], atol=1e-5, rtol=0)


def test_prepend_bos_choices(llama):
    assert llama.to_tokens("hi", prepend_bos=True)[0, 0] == llama.tokenizer.bos_token_id
    assert llama.to_tokens("hi", prepend_bos=False).shape == (1, 2)
    assert llama.to_str_tokens("hi", prepend_bos=True) == ["<|bos|>", "h", "i"]
    assert llama.to_single_token("h") == llama.to_tokens("h")[0, 0]
    with pytest.raises(ms.InputError, match="2 tokens"):
        llama.to_single_token("hi")


def test_cache_with_shared_tensors_saves(llama, ids, tmp_path):
    out = llama.run(ids, save=["embed", "blocks.0.resid_pre"])  # the same tensor
    back = ms.ActivationCache.load(out.cache.save(tmp_path / "c.safetensors"))
    assert torch.equal(back["embed"], back["blocks.0.resid_pre"])


def test_resume_from_any_block_reproduces_the_forward(tiny, ids):
    out, context = tiny.capture(ids)
    for layer in range(tiny.dims.n_layers):
        start = out.cache[f"blocks.{layer}.resid_pre"]
        resumed = tiny.resume(layer, start, context)
        torch.testing.assert_close(resumed.logits, out.logits, atol=1e-5, rtol=0)
        # experiment-major copies, the last position only, with attention sites saved
        twice = tiny.resume(layer, start.repeat(2, 1, 1), context, save=ATTN, logits_at=-1)
        torch.testing.assert_close(
            twice.logits[:, 0], out.logits[:, -1].repeat(2, 1), atol=1e-4, rtol=0
        )


def test_keep_graph_gives_live_tensors(llama, ids):
    out = llama.run(ids, save=["blocks.1.resid_pre", "blocks.1.attn.q"], keep_graph=True)
    q, x = out.cache.live["blocks.1.attn.q"], out.cache.live["blocks.1.resid_pre"]
    (g,) = torch.autograd.grad(q[:, :, 0].sum(), x)
    assert g.shape == x.shape and g.abs().sum() > 0


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_weights_read_as_in_out_whatever_the_family_stores(arch: str, ids: torch.Tensor) -> None:
    from mechscope.core.weights import in_out, mlp_down_projection, output_projection
    from mechscope.errors import InputError

    model = tiny_model(arch)
    d = model.dims
    w_o, _ = output_projection(model, 1)
    assert w_o.shape == (d.n_heads, d.d_head, d.d_model)
    w_down, _ = mlp_down_projection(model, 0)
    assert w_down.shape == (d.d_mlp, d.d_model)
    # x @ in_out(W) is the module's own map (bias aside)
    proj = model.hf.get_submodule(f"{model.adapter.layers}.0.{model.adapter.mlp_down}")
    x = torch.randn(3, d.d_mlp)
    bias = proj.bias if getattr(proj, "bias", None) is not None else 0
    assert torch.allclose(x @ in_out(proj) + bias, proj(x), atol=1e-5)
    with pytest.raises(InputError, match="out of range"):
        output_projection(model, d.n_layers)

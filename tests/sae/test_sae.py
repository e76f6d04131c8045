"""SAEs: sparse kernels, architectures, training, activations, evaluation, attached sites."""

from __future__ import annotations

import json

import pytest
import torch

import mechscope as ms
from mechscope.core.activations import (
    ShuffleBuffer,
    load_activations,
    store_activations,
    stream_activations,
)
from mechscope.corpus import windows
from mechscope.errors import InputError, SiteError
from mechscope.sae.evaluate import evaluate_sae
from mechscope.sae.fit import open_sae_run, sae_run
from mechscope.sae.model import SAEConfig, SAEError, SparseAutoencoder
from mechscope.sae.sparse import sparse_decode, topk_encode
from mechscope.sae.train import TrainConfig, TrainedSAE, train_sae
from mechscope.testing import tiny_model


def _dense_topk_loss(x, b_dec, w_enc, b_enc, w_dec, k, dead, k_aux):
    pre = (x - b_dec) @ w_enc + b_enc
    val, idx = pre.topk(k, dim=-1)
    f = torch.zeros_like(pre).scatter(-1, idx, val.relu())
    x_hat = f @ w_dec + b_dec
    err = (x - x_hat).detach()
    aval, aidx = pre.masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1)
    fa = torch.zeros_like(pre).scatter(-1, aidx, aval.relu())
    return (x_hat - x).pow(2).sum() + 0.3 * (fa @ w_dec - err).pow(2).sum()


def test_sparse_kernels_match_dense_autograd():
    g = torch.Generator().manual_seed(0)
    batch, d, n, k = 40, 12, 60, 5
    x = torch.randn(batch, d, generator=g, dtype=torch.float64)
    shapes = [(d,), (d, n), (n,), (n, d)]
    init = [torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes]
    dead = torch.zeros(n, dtype=torch.bool)
    dead[::4] = True

    sparse = [t.clone().requires_grad_() for t in init]
    b_dec, w_enc, b_enc, w_dec = sparse
    vals, idx, avals, aidx = topk_encode(x, b_dec, w_enc, b_enc, k, 6, dead)
    x_hat = sparse_decode(vals, idx, w_dec) + b_dec
    err = (x - x_hat).detach()
    loss = (x_hat - x).pow(2).sum() + 0.3 * (sparse_decode(avals, aidx, w_dec) - err).pow(2).sum()
    loss.backward()

    dense = [t.clone().requires_grad_() for t in init]
    ref = _dense_topk_loss(x, *dense, k, dead, 6)
    ref.backward()
    assert torch.allclose(loss, ref)
    assert set(aidx.flatten().tolist()) <= set(dead.nonzero().flatten().tolist())
    for a, b in zip(sparse, dense, strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-9), (a.grad - b.grad).abs().max()


def test_config_rejects_unknown_keys_and_bad_values(tmp_path):
    with pytest.raises(SAEError, match="unknown SAE config keys"):
        SAEConfig.from_dict({"d_in": 4, "width": 8, "widht": 3})
    with pytest.raises(SAEError, match="unknown SAE kind"):
        SAEConfig(d_in=4, width=8, kind="gated")  # type: ignore[arg-type]
    with pytest.raises(SAEError, match="k must be"):
        SAEConfig(d_in=4, width=8, k=9)
    with pytest.raises(SAEError, match="no SAE in"):
        SparseAutoencoder.load(tmp_path)


@pytest.mark.parametrize("kind", ["topk", "relu", "jumprelu"])
def test_save_load_round_trip_and_folding(kind, tmp_path):
    sae = SparseAutoencoder(SAEConfig(d_in=8, width=24, kind=kind, k=3, site="s"), seed=1)
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_()
    x = torch.randn(10, 8) * 5
    ref_f, ref_x = sae.encode(x / 5), sae(x / 5) * 5
    sae.fold_input_scale(5.0)
    assert torch.allclose(sae.encode(x), ref_f * 5, atol=1e-5)
    assert torch.allclose(sae(x), ref_x, atol=1e-4)
    sae.save(tmp_path / "sae")
    back = SparseAutoencoder.load(tmp_path)  # a run folder holding sae/ works too
    assert back.cfg == sae.cfg
    assert torch.equal(back(x), sae(x))
    assert json.loads((tmp_path / "sae" / "sae.json").read_text())["kind"] == kind


def test_normalize_decoder_keeps_reconstruction():
    sae = SparseAutoencoder(SAEConfig(d_in=6, width=10, kind="relu"))
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(10, 1) * 3 + 0.1)
        sae.b_enc.normal_()
    x = torch.randn(5, 6)
    before = sae(x)
    sae.normalize_decoder()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(10))
    assert torch.allclose(sae(x), before, atol=1e-5)


def _sparse_data(n_rows: int, d: int = 16, n_feat: int = 24, active: int = 2, seed: int = 0):
    """Rows that are sums of `active` random unit directions out of `n_feat` (known sparse code)."""
    dirs = torch.randn(
        n_feat, d, generator=torch.Generator().manual_seed(123)
    )  # same for all seeds
    dirs /= dirs.norm(dim=1, keepdim=True)
    g = torch.Generator().manual_seed(seed)
    idx = torch.rand(n_rows, n_feat, generator=g).argsort(-1)[:, :active]
    coef = torch.zeros(n_rows, n_feat).scatter(
        -1, idx, torch.rand(n_rows, active, generator=g) + 0.5
    )
    return coef @ dirs


@pytest.mark.parametrize("kind", ["topk", "relu", "jumprelu"])
def test_training_learns_a_sparse_code(kind):
    data = _sparse_data(128 * 256)
    cfg = TrainConfig(
        kind=kind, width=48, k=3, tokens=len(data), batch_size=256, lr=3e-3, eval_every=32,
        warmup_steps=5, l1_coef=0.5, l0_coef=0.02, dead_after_tokens=4096, resample_every=16,
    )  # fmt: skip
    held = _sparse_data(1024, seed=1)
    trained = train_sae(data.split(256), cfg, d_in=16, eval_batch=held, progress=False)
    first, last = trained.history[0], trained.history[-1]
    assert last["eval_fvu"] < min(0.4, 0.6 * first["eval_fvu"]), (first, last)
    assert torch.allclose(trained.sae.W_dec.norm(dim=1), torch.ones(48), atol=1e-4)
    if kind == "topk":
        assert last["eval_l0"] <= 3
    else:
        assert last["eval_l0"] < first["eval_l0"]
    assert "tokens_per_s" in last and last["dead"] <= 1


def test_trained_sae_saves_and_reopens(tmp_path):
    data = _sparse_data(4 * 256)
    cfg = TrainConfig(width=48, k=3, tokens=len(data), batch_size=256, eval_every=2)
    trained = train_sae(data.split(256), cfg, d_in=16, eval_batch=data[:256], progress=False)
    back = TrainedSAE.load(trained.save(tmp_path / "t"))
    assert back.config == cfg and back.history == trained.history and back.scale == trained.scale
    assert torch.equal(back.sae(data), trained.sae(data))
    assert "fvu=" in repr(back) and "L0=3" in repr(back)
    with pytest.raises(SAEError, match="no trained SAE"):
        TrainedSAE.load(tmp_path)


def test_training_reports_early_stop_and_bad_batches():
    cfg = TrainConfig(width=8, k=2, tokens=4 * 16, batch_size=16)
    trained = train_sae(torch.randn(32, 4).split(16), cfg, d_in=4, progress=False)
    assert trained.history[-1] == {"stopped_early_at_step": 2.0}
    with pytest.raises(SAEError, match="expected"):
        train_sae([torch.randn(16, 5)], cfg, d_in=4, progress=False)
    with pytest.raises(SAEError, match="at least one batch"):
        TrainConfig(tokens=10, batch_size=16)


def test_shuffle_buffer_hands_out_every_row_once():
    rows = torch.arange(1000, dtype=torch.float32)[:, None]
    chunks = rows.split(37)
    out = torch.cat(list(ShuffleBuffer(chunks, size=200, batch=10, seed=3)))
    assert len(out) == 1000
    assert torch.equal(out.flatten().sort().values, rows.flatten())
    assert not torch.equal(out.flatten(), rows.flatten())  # actually mixed
    with pytest.raises(InputError, match="two batches"):
        ShuffleBuffer(chunks, size=10, batch=10)


def test_stream_skips_boundary_tokens_and_store_round_trips(tmp_path):
    model = tiny_model("llama")
    chunks = list(stream_activations(model, "blocks.0.resid_post", tokens=512, window=32))
    streamed = torch.cat(chunks)
    assert streamed.shape[1] == 32 and len(streamed) < 512  # window-first tokens left out
    store_activations(
        model,
        "blocks.0.resid_post",
        tmp_path,
        tokens=512,
        window=32,
        shard_tokens=100,
        progress=False,
    )
    stored = load_activations(tmp_path)
    assert torch.equal(stored, streamed)
    assert len(list(tmp_path.glob("acts-*.safetensors"))) == -(-len(streamed) // 100)
    with pytest.raises(SiteError, match="unknown site"):
        next(stream_activations(model, "blocks.0.resid_psot"))


def _identity_sae(d: int, site: str) -> SparseAutoencoder:
    """A ReLU SAE with latents ReLU(x) and ReLU(−x): x̂ = x exactly."""
    sae = SparseAutoencoder(SAEConfig(d_in=d, width=2 * d, kind="relu", site=site))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_evaluate_perfect_and_zero_saes():
    model = tiny_model("llama")
    site = "blocks.0.resid_post"
    ev = evaluate_sae(model, _identity_sae(32, site), tokens=256, window=32, progress=False)
    assert ev.fvu < 1e-8 and abs(ev.ce_sae - ev.ce_clean) < 1e-4 and ev.kl_sae < 1e-6
    assert ev.ce_zero != pytest.approx(ev.ce_clean)
    assert ev.ce_recovered == pytest.approx(1.0, abs=1e-3)
    null = SparseAutoencoder(SAEConfig(d_in=32, width=8, kind="relu", site=site))
    with torch.no_grad():
        null.W_dec.zero_()
        null.b_enc.fill_(-1e9)
    ev0 = evaluate_sae(model, null, tokens=256, window=32, progress=False)
    assert ev0.l0 == 0 and ev0.dead_fraction == 1
    assert ev0.ce_recovered == pytest.approx(0.0, abs=1e-3)  # x̂ = 0 is the zero ablation
    assert "CE recovered" in repr(ev0)


def test_attached_latents_are_sites(ids):
    model = tiny_model("llama")
    site = "blocks.0.resid_post"
    sae = SparseAutoencoder(SAEConfig(d_in=32, width=48, kind="topk", k=6, site=site), seed=2)
    clean = model.run(ids, save=[site])
    with model.attach(sae) as at:
        assert at.latents == f"{site}.sae.latents" and at.latents in [s.name for s in model.sites()]
        assert model.table[at.latents].shape == "batch pos latent=48"
        out = model.run(ids, save=[at.latents, at.error])
        assert torch.equal(out.logits, clean.logits)  # reading changes nothing
        assert torch.allclose(out.cache[at.latents], sae.encode(clean.cache[site]))
        recon = sae.decode(out.cache[at.latents]) + out.cache[at.error]
        assert torch.allclose(recon, clean.cache[site], atol=1e-5)
        # an identity function on the latents: decode(f) + error = x again
        same = model.run(ids, interventions=[ms.apply(at.latents, lambda f: f.clone())])
        assert torch.allclose(same.logits, clean.logits, atol=1e-4)
        # ablating the latent most active at the last position moves the site by its decoder row
        f = out.cache[at.latents][0, -1]
        top = int(f.argmax())
        ablated = model.run(
            ids,
            save=[site],
            interventions=[ms.zero_ablate(at.latents, rows=[0], positions=[-1], neurons=[top])],
        )
        delta = clean.cache[site][0, -1] - ablated.cache[site][0, -1]
        assert torch.allclose(delta, f[top] * sae.W_dec[top], atol=1e-5)
        assert torch.equal(ablated.cache[site][1:], clean.cache[site][1:])
        # the error term alone: zeroing it leaves the SAE's reconstruction
        recon_only = model.run(ids, save=[site], interventions=[ms.zero_ablate(at.error)])
        assert torch.allclose(recon_only.cache[site], sae(clean.cache[site]), atol=1e-5)
        with pytest.raises(SiteError, match="already attached"):
            model.attach(sae)
    with pytest.raises(SiteError, match="unknown site"):
        model.run(ids, save=[f"{site}.sae.latents"])
    with pytest.raises(SiteError, match="nothing attached"):
        model.detach(f"{site}.sae")


def test_attach_to_heads_and_globs(ids):
    model = tiny_model("llama")
    n_heads, d_head = model.dims.n_heads, model.dims.d_head
    sae = SparseAutoencoder(SAEConfig(d_in=n_heads * d_head, width=20, k=3, site="blocks.1.attn.z"))
    clean = model.run(ids, save=["blocks.1.attn.z"])
    at = model.attach(sae, name="zsae")
    out = model.run(ids, save=["blocks.*.attn.z.zsae.latents"])
    z = clean.cache["blocks.1.attn.z"].flatten(-2)
    assert torch.allclose(out.cache[at.latents], sae.encode(z))
    ablated = model.run(ids, interventions=[ms.zero_ablate(at.latents)])
    assert not torch.allclose(ablated.logits, clean.logits)
    at.remove()
    with pytest.raises(SiteError, match="attention patterns"):
        model.attach(sae, site="blocks.1.attn.pattern")


def test_harvest_of_attached_latents(tmp_path):
    from mechscope.harvest import harvest

    model = tiny_model("llama")
    site = "blocks.0.resid_post"
    sae = SparseAutoencoder(SAEConfig(d_in=32, width=16, k=2, site=site), seed=4)
    with model.attach(sae) as at:
        store = harvest(
            model,
            out=tmp_path / "h",
            sites=[at.latents],
            tokens=256,
            window=32,
            k=3,
            progress=False,
        )
        ids = torch.tensor(list(windows(model, "default", 32, limit=8)))
        latents = model.run(ids, save=[at.latents]).cache[at.latents]  # [8, 32, 16]
    best = store.top_units(at.latents, limit=1)[0]
    record = store.unit(at.latents, best.unit)
    assert record.top[0].max_act == pytest.approx(float(latents[..., best.unit].max()), rel=1e-2)
    assert store.n_units(at.latents) == 16


def test_fit_sae_writes_a_run_that_reopens(tmp_path):
    model = tiny_model("llama")
    cfg = TrainConfig(
        width=64, k=4, tokens=512 * 8, batch_size=512, eval_every=4, checkpoint_every=4
    )
    run = sae_run(
        model, "blocks.1.resid_post", cfg, out=tmp_path / "sae", eval_tokens=512, window=32,
        buffer_tokens=2048, harvest_tokens=1024, progress=False,
    )  # fmt: skip
    again = open_sae_run(tmp_path / "sae")
    assert again.eval is not None and again.eval.l0 <= 4
    # the evaluation is one result file; run.json keeps a copy of its metrics
    assert again.eval == run.eval and len(again.eval.frequencies) == 64
    record = json.loads((tmp_path / "sae" / "run.json").read_text())
    assert record["eval"] == again.eval.metrics()
    assert "ce_recovered" in record["eval"] and not (tmp_path / "sae" / "eval.json").exists()
    assert again.sae.cfg.site == "blocks.1.resid_post"
    assert (tmp_path / "sae" / "checkpoints" / "step-000004" / "sae.safetensors").exists()
    # the latents' harvest leaves out each window's first token (the boundary, never trained on)
    from mechscope.harvest import open_harvest

    store = open_harvest(tmp_path / "sae" / "harvest")
    latents = "blocks.1.resid_post.sae.latents"
    best = store.top_units(latents, limit=3)
    assert best and all(
        ex.acts[0] == 0 and ex.max_pos > 0 for b in best for ex in store.unit(latents, b.unit).top
    )
    for fig in ("fvu", "l0", "dead", "latent_density"):
        assert (tmp_path / "sae" / "figures" / f"{fig}.png").exists()
        assert (tmp_path / "sae" / "figures" / f"{fig}.html").exists()
    assert run.config["train"]["k"] == 4 and len(run.history) >= 2
    assert not list(tmp_path.glob(".*partial"))


def test_steering_and_explaining_latents(ids, tmp_path):
    from mechscope.autointerp import explain_run
    from mechscope.harvest import harvest
    from mechscope.testing import ScriptedBackend

    model = tiny_model("llama")
    site = "blocks.0.resid_post"
    sae = SparseAutoencoder(SAEConfig(d_in=32, width=16, k=2, site=site), seed=5)
    clean = model.run(ids, save=[site])
    with model.attach(sae) as at:
        # adding 3 to latent 7 everywhere adds 3 · W_dec[7] to the site (steering with a latent)
        steered = model.run(
            ids, save=[site], interventions=[ms.add(at.latents, torch.tensor(3.0), neurons=[7])]
        )
        assert torch.allclose(
            steered.cache[site] - clean.cache[site], 3 * sae.W_dec[7].detach(), atol=1e-5
        )
        store = harvest(
            model,
            out=tmp_path / "h",
            sites=[at.latents],
            tokens=256,
            window=32,
            k=4,
            progress=False,
        )
    unit = store.top_units(at.latents, limit=1)[0].unit
    result = explain_run(
        store, [(at.latents, unit)], explainer=ScriptedBackend(["a latent"]),
        simulator=ScriptedBackend(["[" + ", ".join(["1"] * 32) + "]"]), out=tmp_path / "ex", progress=False,
    )  # fmt: skip
    rows = [json.loads(x) for x in (result.path / "explanations.jsonl").read_text().splitlines()]
    assert any(r["site"] == at.latents and r["text"] == "a latent" for r in rows)


@pytest.mark.model
def test_sae_on_smollm2(smollm2, tmp_path):
    """A short TopK SAE on the real model's middle residual stream: the pipeline end to end."""
    site = "blocks.15.resid_post"
    cfg = TrainConfig(width=1152, k=16, tokens=4096 * 4, batch_size=4096, eval_every=2)
    run = sae_run(
        smollm2,
        site,
        cfg,
        out=tmp_path / "sae",
        eval_tokens=1024,
        buffer_tokens=1 << 13,
        progress=False,
    )
    ev = run.eval
    assert ev is not None and ev.l0 <= 16
    # zero-ablating the middle residual stream is ruinous; even a 4-step SAE (still in its
    # learning-rate warm-up) recovers much of it
    assert ev.ce_zero > ev.ce_clean + 2 and ev.ce_sae < ev.ce_zero
    assert 0.3 < ev.ce_recovered <= 1.0 + 1e-6 and ev.explained_variance < 1
    with smollm2.attach(run.sae) as at:
        out = smollm2.run("The Eiffel Tower is located in the city of", save=[at.latents])
        assert int((out.cache[at.latents][0, -1] > 0).sum()) <= 16


def test_sparse_and_dense_kernels_train_alike():
    data = _sparse_data(8 * 256)
    runs = {}
    for kernels in ("sparse", "dense"):
        cfg = TrainConfig(
            width=48, k=3, tokens=len(data), batch_size=256, lr=3e-3, eval_every=1, kernels=kernels
        )
        runs[kernels] = train_sae(data.split(256), cfg, d_in=16, progress=False)
    for a, b in zip(runs["sparse"].history, runs["dense"].history, strict=True):
        assert a["mse"] == pytest.approx(b["mse"], rel=1e-3)
    assert torch.allclose(runs["sparse"].sae.W_dec, runs["dense"].sae.W_dec, atol=1e-4)
    with pytest.raises(SAEError, match="kernels"):
        TrainConfig(kernels="fast")

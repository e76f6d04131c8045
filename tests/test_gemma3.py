"""Every technique's smallest case on the optional built-in gemma3-270m (marked `gemma`).

Gemma 3 differs from the default model where it matters to the sites: the
sublayer outputs pass an RMSNorm before the residual add, every RMSNorm
scales by (1 + w), the embedding is scaled by √d_model, one KV head serves
four query heads, and five of every six layers attend within a sliding
window. The model is loaded once per session; without its packages the
tests are skipped with the command that installs them.
"""

from __future__ import annotations

import pytest
import torch

import mechscope as ms
from mechscope.core.loading import BUILTIN_MODELS

pytestmark = pytest.mark.gemma

IOI = "When Mary and John went to the store, John gave a drink to"
COLOSSEUM = ("The Colosseum", "{} is located in the city of", "Rome")


@pytest.fixture(scope="session")
def gemma3():
    """Gemma 3 270M base, loaded once per session."""
    builtin = BUILTIN_MODELS["gemma3-270m"]
    if not builtin.installed():
        pytest.skip(f"gemma3-270m is not installed: {builtin.install_hint}")
    return ms.load("gemma3-270m", progress=False)


def _ioi_pair(model):
    clean = model.to_tokens(IOI)
    corrupted = model.to_tokens(IOI.replace("John gave", "Mary gave"))
    io, s = model.to_single_token(" Mary"), model.to_single_token(" John")
    return clean, corrupted, io, s


def test_sites_name_gemmas_shapes(gemma3):
    d = gemma3.dims
    assert (d.n_layers, d.d_model, d.n_heads, d.n_kv_heads, d.d_head, d.d_mlp, d.d_vocab) == (
        18, 640, 4, 1, 256, 2048, 262_144,
    )  # fmt: skip
    shapes = {s.name: s.shape for s in gemma3.sites("blocks.17.attn.*")}
    assert "head=4" in shapes["blocks.17.attn.q"] and "kv_head=1" in shapes["blocks.17.attn.k"]
    assert "d_model=640" in shapes["blocks.17.attn.out"]
    # what enters the residual stream is the post-attention norm's output, not o_proj's
    assert gemma3.adapter.attn_out == "post_attention_layernorm"
    assert gemma3.weights_sha256 == (
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    )


def test_numbers_equal_hf(gemma3):
    ids = gemma3.to_tokens([IOI, "The Colosseum is located in the city of Rome, Italy."])
    with torch.no_grad():
        ref = gemma3.hf(ids).logits
    assert torch.equal(gemma3.run(ids).logits, ref)
    saved = gemma3.run(ids, save=["blocks.*.resid_post", "blocks.*.mlp.post", "blocks.*.attn.z"])
    assert torch.equal(saved.logits, ref)
    out = gemma3.run(ids, save=["blocks.5.attn.pattern", "blocks.5.attn.z", "blocks.5.attn.out"])
    assert (out.logits - ref).abs().max() < 1e-3
    pattern = out.cache["blocks.5.attn.pattern"]
    torch.testing.assert_close(pattern.sum(-1), torch.ones_like(pattern[..., 0]))
    layer = gemma3.hf.model.layers[5]
    z = out.cache["blocks.5.attn.z"]
    attn_out = layer.post_attention_layernorm(layer.self_attn.o_proj(z.flatten(-2)))
    torch.testing.assert_close(attn_out, out.cache["blocks.5.attn.out"])


def test_residual_identities(gemma3):
    sites = ["resid_pre", "attn.out", "resid_mid", "mlp.out", "resid_post"]
    cache = gemma3.run(IOI, save=[f"blocks.*.{s}" for s in sites]).cache
    for layer in range(gemma3.dims.n_layers):
        c = {s: cache[f"blocks.{layer}.{s}"] for s in sites}
        tol = 1e-6 * float(c["resid_post"].abs().max())
        torch.testing.assert_close(c["resid_mid"], c["resid_pre"] + c["attn.out"], atol=tol, rtol=0)
        torch.testing.assert_close(c["resid_post"], c["resid_mid"] + c["mlp.out"], atol=tol, rtol=0)
        if layer:
            assert torch.equal(c["resid_pre"], cache[f"blocks.{layer - 1}.resid_post"])
    # Gemma scales the embedding by √d_model before the first block
    embed = gemma3.hf.model.embed_tokens.weight[gemma3.to_tokens(IOI)[0]]
    torch.testing.assert_close(cache["blocks.0.resid_pre"][0], embed * 640**0.5)


def test_logit_lens_and_direct_attribution_through_gemmas_norms(gemma3):
    from mechscope.lens import direct_logit_attribution, logit_direction, logit_lens

    prompt = COLOSSEUM[1].format(COLOSSEUM[0])
    lens = logit_lens(gemma3, prompt, target=" Rome")
    probs = gemma3.run(prompt).logits[0].softmax(-1)
    torch.testing.assert_close(lens.target_probs[-1], probs[:, gemma3.to_single_token(" Rome")])
    assert lens.top_tokens[-1][-1] == " Rome"
    clean, _, io, s = _ioi_pair(gemma3)
    logits = gemma3.run(clean).logits[0, -1]
    own = float(logits[io] - logits[s])
    dla = direct_logit_attribution(gemma3, clean, logit_direction(gemma3, io, s))
    assert dla.total == pytest.approx(own, abs=1e-3)
    assert dla.explained == pytest.approx(own, abs=1e-2)
    print(f"\nIOI logit diff {own:+.3f}; {dla!r}")


def test_patching_s2_moves_the_name_to_the_end(gemma3):
    from mechscope.patching import activation_patching

    clean, corrupted, io, s = _ioi_pair(gemma3)
    s2 = clean.shape[1] - 5
    assert gemma3.to_str_tokens(clean[0])[s2] == " John"

    def metric(logits):
        return logits[:, -1, io] - logits[:, -1, s]

    last = gemma3.dims.n_layers - 1
    result = activation_patching(gemma3, clean, corrupted, metric, "resid_pre",
                                 layers=[0, last], positions=[s2], progress=False)  # fmt: skip
    print(f"\n{result!r}\n{result.values}")
    assert result.clean_metric > 0 > result.corrupted_metric
    # the first layer's S2 state is the token itself: full recovery; the last layer's barely matters
    assert result.values[0, 0] == pytest.approx(1.0, abs=1e-3)
    assert abs(result.values[1, 0]) < 0.25
    same = activation_patching(gemma3, clean, clean, metric, "resid_pre", layers=[9],
                               progress=False)  # fmt: skip
    torch.testing.assert_close(
        same.raw, torch.full_like(same.raw, same.clean_metric), atol=1e-3, rtol=0
    )


def test_a_small_harvest_keeps_the_models_own_activations(gemma3, tmp_path):
    from mechscope.harvest import harvest

    store = harvest(gemma3, "default", out=tmp_path / "h", sites=["blocks.6.mlp.post"],
                    tokens=256, window=32, batch_size=8, progress=False)  # fmt: skip
    assert store.n_units("blocks.6.mlp.post") == 2048 and store.run["harvested_tokens"] == 256
    page = store.unit("blocks.6.mlp.post", 7)
    ex = page.top[0]
    row = store.query('SELECT token_ids FROM windows WHERE "window" = ?', [ex.window]).fetchone()[0]
    acts = gemma3.run(torch.tensor([row]), save=["blocks.6.mlp.post"]).cache["blocks.6.mlp.post"]
    torch.testing.assert_close(torch.tensor(ex.acts), acts[0, :, 7], atol=2e-3, rtol=2e-3)


def test_a_small_sae_fits_the_residual_stream(gemma3):
    from mechscope.core.activations import stream_activations
    from mechscope.sae.train import TrainConfig, train_sae

    site = "blocks.6.resid_post"
    acts = torch.cat(list(stream_activations(gemma3, site, tokens=1024, window=32)))
    held, train = acts[:128], acts[128:]
    cfg = TrainConfig(
        width=512, k=16, tokens=64 * 256, batch_size=256, warmup_steps=4, eval_every=16
    )
    batches = (train[torch.randperm(len(train), generator=torch.Generator().manual_seed(i))[:256]]
               for i in range(cfg.steps))  # fmt: skip
    trained = train_sae(batches, cfg, d_in=640, eval_batch=held, site=site, progress=False)
    fvu = [r["eval_fvu"] for r in trained.history if "eval_fvu" in r]
    print(f"\n{trained!r}; fvu {fvu}")
    assert fvu[-1] < 0.5 * fvu[0] and fvu[-1] < 0.5


def test_causal_tracing_finds_the_colosseum(gemma3):
    from mechscope.tracing import Fact, trace_fact

    tr = trace_fact(gemma3, Fact(*COLOSSEUM), samples=3, kinds=["hidden"])
    ie = tr.indirect_effect("hidden")
    start, end = tr.subject
    print(f"\n{tr!r} subject {tr.tokens[start:end]}\n{ie}")
    assert tr.clean > 0.5 and tr.corrupted < 0.5 * tr.clean
    assert tr.tokens[0] == "<bos>" and start == 1  # Gemma opens with BOS
    assert ie[-1, -1] == pytest.approx(tr.clean - tr.corrupted, abs=1e-4)
    assert ie[:6, start:end].max() > 0.5 * (tr.clean - tr.corrupted)


def test_a_probe_reads_tweet_sentiment(gemma3):
    from mechscope.probes import probe_layers, sentiment_pairs

    pairs = sentiment_pairs(limit=64, seed=1)
    layers = list(range(2, 18, 3))  # every third layer: the test is about reading, not the best
    res = probe_layers(
        gemma3, pairs, test=24, layers=layers, restarts=1, epochs=100, progress=False
    )
    logistic = [a.value for a in res.accuracy["logistic"]]
    print(f"\n{res!r}\n{[round(v, 2) for v in logistic]}")
    assert max(logistic) >= 0.75


def test_a_steering_vector_raises_wedding_words(gemma3):
    from mechscope import steering as st

    vector = st.actadd(gemma3, "I talk about weddings constantly",
                       "I do not talk about weddings constantly", 6)  # fmt: skip
    prompts = list(st.PROMPTS)[:4]
    base = st.target_probability(gemma3, prompts, st.WEDDING_WORDS)
    steered = st.target_probability(gemma3, prompts, st.WEDDING_WORDS, vector, 1.0)
    print(f"\nwedding words: {base:.3e} → {steered:.3e}")
    assert steered > 5 * base

"""Attached transcoders: latents and error terms as sites, exact when unchanged, bad input."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import sys
from pathlib import Path

import pytest
import torch

import mechscope as ms
from mechscope.corpus import windows
from mechscope.errors import InputError, SiteError
from mechscope.testing import tiny_chat_model, tiny_model
from mechscope.transcoders import (
    AttachedSet,
    Transcoder,
    TranscoderConfig,
    TranscoderError,
    TranscoderSet,
    attach_transcoders,
    mlp_sites,
    splice_transcoders,
)

FAMILIES = ["llama", "gpt2", "gpt_neox", "gemma3"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread than on two contended ones (same numbers)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _set(model, layers=None, seed: int = 0) -> TranscoderSet:
    """A tiny set whose skips and decoder biases are random, not zero (so a test of them fails
    when they are left out)."""
    tcs = TranscoderSet.build(model, layers, width=16, kind="topk", k=4, skip=True, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for _, tc in tcs.items():
            tc.W_skip.copy_(0.3 * torch.randn(tc.W_skip.shape, generator=g))
            tc.b_dec.copy_(0.5 * torch.randn(tc.b_dec.shape, generator=g))
            tc.b_enc.copy_(0.1 * torch.randn(tc.b_enc.shape, generator=g))
    return tcs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small .txt corpus (the built-in one takes seconds to open)."""
    g = torch.Generator().manual_seed(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "when", "it", "was", "cold", "and", "we", "saw", "rain"]  # fmt: skip
    lines = []
    for _ in range(120):
        idx = torch.randint(len(words), (12,), generator=g)
        lines.append(" ".join(words[i] for i in idx).capitalize() + ".")
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join(lines))
    return str(path)


@pytest.mark.parametrize("family", FAMILIES)
def test_latents_and_error_are_the_transcoders_and_reading_changes_nothing(family, ids):
    model = tiny_model(family)
    tcs = _set(model)
    pairs = [mlp_sites(model, layer) for layer in tcs.layers]
    plain = model.run(ids, save=[s for pair in pairs for s in pair])
    with attach_transcoders(model, tcs) as at:
        assert isinstance(at, AttachedSet) and at.layers == [0, 1]
        assert at.latents(1) == "blocks.1.mlp.tc.latents" and at.error(0) == "blocks.0.mlp.tc.error"
        assert model.table[at.latents(0)].shape == "batch pos latent=16"
        assert model.table[at.error(0)].shape == "batch pos d_model=32"
        assert "blocks.1.mlp.tc.latents" in [s.name for s in model.sites()]
        out = model.run(ids, save=["blocks.*.mlp.tc.latents", "blocks.*.mlp.tc.error"])
        # (b) reading the latents and errors leaves every number of the forward as it was
        assert torch.equal(out.logits, plain.logits)
        for layer, (site_in, site_out) in zip(tcs.layers, pairs, strict=True):
            tc, x_in = tcs[layer], plain.cache[site_in]
            # (a) the latents are encode(MLP input), the error is MLP output − ŷ(MLP input)
            assert torch.equal(out.cache[at.latents(layer)], tc.encode(x_in))
            assert torch.equal(out.cache[at.error(layer)], plain.cache[site_out] - tc(x_in))
            assert (out.cache[at.latents(layer)] > 0).sum(-1).max() <= 4
        # an identity on the latents (a changed tensor, the same numbers) is still exact
        same = model.run(ids, interventions=[ms.apply(at.latents(0), lambda f: f.clone())])
        assert torch.equal(same.logits, plain.logits)
    with pytest.raises(SiteError, match="unknown site"):
        model.run(ids, save=["blocks.0.mlp.tc.latents"])


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_ablating_one_latent_at_one_position_moves_only_that_position(family, ids):
    model = tiny_model(family)
    tcs = _set(model, [1])
    site_in, site_out = mlp_sites(model, 1)
    plain = model.run(ids, save=[site_in, site_out])
    with attach_transcoders(model, tcs) as at:
        f = model.run(ids, save=[at.latents(1)]).cache[at.latents(1)]
        row, pos = 1, 7
        latent = int(f[row, pos].argmax())
        assert f[row, pos, latent] > 0
        ablated = model.run(
            ids,
            save=[site_out],
            interventions=[
                ms.zero_ablate(at.latents(1), rows=[row], positions=[pos], neurons=[latent])
            ],
        ).cache[site_out]
    delta = ablated[row, pos] - plain.cache[site_out][row, pos]
    expected = -f[row, pos, latent] * tcs[1].W_dec[latent].detach()
    torch.testing.assert_close(delta, expected, atol=1e-5, rtol=1e-4)
    others = torch.ones(ids.shape, dtype=torch.bool)
    others[row, pos] = False
    assert torch.equal(ablated[others], plain.cache[site_out][others])  # bit for bit


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_zero_errors_are_the_spliced_replacement_model(family, ids):
    model = tiny_model(family)
    tcs = _set(model)
    spliced = splice_transcoders(model, tcs, ids, keep=torch.ones(ids.shape, dtype=torch.bool))
    with attach_transcoders(model, tcs) as at:
        zeroed = model.run(ids, interventions=[ms.zero_ablate(at.error(i)) for i in at.layers])
    torch.testing.assert_close(zeroed.logits, spliced.logits, atol=1e-4, rtol=1e-4)
    plain = model.run(ids).logits
    assert not torch.allclose(zeroed.logits, plain, atol=1e-3)  # the replacement is not the model


def test_harvest_of_attached_latents(tmp_path, corpus):
    from mechscope.harvest import harvest

    model = tiny_model("llama")
    tcs = _set(model)
    with attach_transcoders(model, tcs) as at:
        store = harvest(
            model, corpus, out=tmp_path / "h", sites="blocks.*.mlp.tc.latents", tokens=256,
            window=32, k=3, batch_size=4, progress=False,
        )  # fmt: skip
    assert store.n_units(at.latents(0)) == 16 and store.n_units(at.latents(1)) == 16
    ids = torch.tensor(list(windows(model, corpus, 32, limit=8)))
    site_in = mlp_sites(model, 0)[0]
    latents = tcs[0].encode(model.run(ids, save=[site_in]).cache[site_in])  # [8, 32, 16]
    best = store.top_units(at.latents(0), limit=1)[0]
    top = store.unit(at.latents(0), best.unit).top[0].max_act
    assert top == pytest.approx(float(latents[..., best.unit].max().detach()), rel=1e-3)


def test_steering_gradients_graphs_and_generation_on_latents(ids):
    model = tiny_model("llama")
    tcs = _set(model)
    site_in, site_out = mlp_sites(model, 0)
    plain = model.run(ids, save=[site_out])
    w = tcs[0].W_dec.detach()

    def metric(logits):
        return logits[:, -1, 5].sum()

    plain_grads = model.run(ids, save_grad=[site_in, site_out], backward=metric).cache.grads
    with attach_transcoders(model, tcs) as at:
        # (f) adding 3 to latent 7 everywhere adds 3 · W_dec[7] to the MLP output
        steered = model.run(
            ids, save=[site_out], interventions=[ms.add(at.latents(0), torch.tensor(3.0), neurons=[7])]
        )  # fmt: skip
        torch.testing.assert_close(steered.cache[site_out] - plain.cache[site_out],
                                   (3 * w[7]).expand_as(plain.cache[site_out]), atol=1e-5, rtol=0)  # fmt: skip
        # the latents' gradient is the MLP output's through the decoder, the error's is the
        # MLP output's; the gradients of every site stay the model's, and so do the logits
        grad_sites = [at.latents(0), at.error(0), site_in, site_out]
        out = model.run(ids, save_grad=grad_sites, backward=metric)
        assert torch.equal(out.logits, model.run(ids).logits.detach())
        g = out.cache.grads
        assert g[at.latents(0)].shape == (3, 11, 16) and g[at.latents(0)].abs().sum() > 0
        torch.testing.assert_close(g[at.latents(0)], g[site_out] @ w.T, atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(g[at.error(0)], g[site_out])
        for site in (site_in, site_out):
            torch.testing.assert_close(g[site], plain_grads[site], atol=1e-7, rtol=1e-5)
        # keep_graph: the latents stay attached to the MLP input they were encoded from
        kept = model.run(ids, save=[site_in, at.latents(0)], keep_graph=True).cache
        (vjp,) = torch.autograd.grad(kept.live[at.latents(0)].sum(), kept.live[site_in])
        x = kept[site_in].detach().clone().requires_grad_(True)
        (want,) = torch.autograd.grad(tcs[0].encode(x).sum(), x)
        torch.testing.assert_close(vjp, want)
        # generation: each step reads the MLP input of its own forward
        text = model.generate("hello", max_new_tokens=5)
        same = model.generate(
            "hello", max_new_tokens=5, interventions=[ms.apply(at.latents(1), lambda f: f.clone())]
        )
        assert same == text
        model.generate("hello", max_new_tokens=5, interventions=[ms.add(at.latents(1), torch.tensor(50.0), neurons=[3])])  # fmt: skip
    assert not model.table.attached()


class _Reader:
    """A dictionary reading another site: the smallest thing `Model.attach` takes with ``reads``."""

    width = 4

    def __init__(self, reads: str) -> None:
        self.reads = reads
        self.w = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))

    def encode(self, x):
        return torch.relu(x @ self.w)

    def decode(self, f, x):
        return f @ self.w.T + x


def test_bad_sets_reads_and_prefixes_are_clear_errors(ids):
    model, gpt2 = tiny_model("llama"), tiny_model("gpt2")
    # a set of another model: its MLP inputs are not this model's
    with pytest.raises(TranscoderError, match="reads 'model.layers.0.post_attention_layernorm'"):
        attach_transcoders(gpt2, _set(model))
    narrow = Transcoder(TranscoderConfig(d_in=16, width=8, k=2, site=mlp_sites(model, 0)[0]))
    with pytest.raises(TranscoderError, match="d_model=16"):
        attach_transcoders(model, TranscoderSet({0: narrow}))
    late_layer = Transcoder(TranscoderConfig(d_in=32, width=8, k=2, layer=5))
    with pytest.raises(TranscoderError, match="has 2 layers"):
        attach_transcoders(model, TranscoderSet({5: late_layer}))
    with pytest.raises(TranscoderError, match="TranscoderSet"):
        attach_transcoders(model, _set(model)[0])  # type: ignore[arg-type]
    # a dictionary reading a site that does not exist, or one later in the forward
    with pytest.raises(SiteError, match="reads 'blocks.0.nowhere'.*unknown site"):
        model.attach(_Reader("blocks.0.nowhere"), "blocks.0.mlp.out", prefix="r")
    with pytest.raises(SiteError, match="the site it is attached to"):
        model.attach(_Reader("blocks.0.mlp.out"), "blocks.0.mlp.out", prefix="r")
    with pytest.raises(InputError, match="pass site="):
        model.attach(_Reader("blocks.0.resid_mid"))
    with pytest.raises(SiteError, match="comes later in the forward"):
        model.attach(_Reader("blocks.1.resid_post"), "blocks.0.mlp.out", prefix="r")
    # a module path later in the forward: found out in the run, which leaves no hook behind
    late_path = mlp_sites(model, 1)[0]
    late = model.attach(_Reader(late_path), "blocks.0.mlp.out", prefix="late")
    with late, pytest.raises(SiteError, match="earlier in the forward"):
        model.run(ids, save=[late.latents])
    assert not model.table.attached()
    # a generic reader works like a transcoder: encode(r), decode(f, r), exact when unchanged
    reader = _Reader("blocks.0.resid_mid")
    plain = model.run(ids, save=["blocks.0.resid_mid", "blocks.0.mlp.out"])
    with model.attach(reader, "blocks.0.mlp.out", prefix="blocks.0.reader") as at:
        out = model.run(ids, save=[at.latents, at.error])
        assert torch.equal(out.logits, plain.logits)
        r = plain.cache["blocks.0.resid_mid"]
        assert torch.equal(out.cache[at.latents], reader.encode(r))
        recon = reader.decode(out.cache[at.latents], r) + out.cache[at.error]
        torch.testing.assert_close(recon, plain.cache["blocks.0.mlp.out"])
    tc0 = _set(model)[0]
    wide = Transcoder(dataclasses.replace(tc0.cfg, d_out=24))
    with pytest.raises(InputError, match="writes 24 values"):
        model.attach(wide, "blocks.0.mlp.out", prefix="blocks.0.mlp.wide")
    # prefixes: malformed, a site's name, taken, overlapping
    for prefix, words in [
        ("blocks.*.tc", "dot-separated"),
        ("", "dot-separated"),
        ("blocks.0.mlp.out", "shadow the site 'blocks.0.mlp.out'"),
        ("model.layers.0.mlp", "shadow the site"),
    ]:
        with pytest.raises(SiteError, match=words):
            model.attach(tc0, "blocks.0.mlp.out", prefix=prefix)
    with attach_transcoders(model, _set(model)) as at:
        assert repr(at) == (
            "AttachedSet(tc: layers [0, 1], blocks.{0,1}.mlp.tc.latents, blocks.{0,1}.mlp.tc.error)"
        )
        with pytest.raises(SiteError, match="already attached"):
            attach_transcoders(model, _set(model))
        with pytest.raises(SiteError, match="overlaps 'blocks.0.mlp.tc'"):
            model.attach(tc0, "blocks.0.mlp.out", prefix="blocks.0.mlp.tc.more")
        with pytest.raises(TranscoderError, match="attached layers: \\[0, 1\\]"):
            at.latents(3)
        # a second set under another name sits beside the first
        with attach_transcoders(model, _set(model, [1]), name="tc2") as other:
            assert other.latents(1) == "blocks.1.mlp.tc2.latents"
        # a set that fails at layer 1 leaves nothing of it attached (layer 0 is detached again)
        model.attach(tc0, "blocks.1.mlp.out", prefix="blocks.1.mlp.tc3")
        with pytest.raises(SiteError, match="'blocks.1.mlp.tc3' is already attached"):
            attach_transcoders(model, _set(model), name="tc3")
        assert "blocks.0.mlp.tc3.latents" not in model.table
        assert len(model.table.attached()) == 6
        model.detach("blocks.1.mlp.tc3")
    assert not model.table.attached()


# --- the CLI ---------------------------------------------------------------------------


def _cli(*args: str, cache: Path) -> tuple[int, str, str]:
    """``mechscope ARGS`` in this process, through the real entry point."""
    from mechscope.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["mechscope", *args]
    code = 0
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MECHSCOPE_CACHE", str(cache))
        mp.setenv("COLUMNS", "200")
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def _one_error_line(code: int, err: str, *words: str) -> None:
    assert code == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], lines[0]


def test_cli_harvest_with_transcoders(tmp_path, corpus):
    folder = tmp_path / "tiny-llama"
    model = tiny_chat_model("llama")
    model.hf.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    _set(model).save(tmp_path / "tc" / "transcoders")  # a run folder holding transcoders/
    common = ["--corpus", corpus, "--tokens", "64", "--window", "16", "--batch-size", "2"]
    # a wrong path is one line, before any model loads (the model here does not exist)
    code, _, err = _cli("harvest", str(tmp_path / "nowhere"), *common, "--transcoders",
                        str(tmp_path / "none"), "--out", str(tmp_path / "h0"), cache=tmp_path)  # fmt: skip
    _one_error_line(code, err, "--transcoders", "none", "does not exist")
    (tmp_path / "empty").mkdir()
    code, _, err = _cli("harvest", str(folder), *common, "--transcoders", str(tmp_path / "empty"),
                        "--out", str(tmp_path / "h1"), cache=tmp_path)  # fmt: skip
    _one_error_line(code, err, "no transcoder set", "empty")
    code, _, err = _cli("harvest", str(folder), *common, "--transcoders", str(tmp_path / "tc"),
                        "--engine", "ray", "--out", str(tmp_path / "h2"), cache=tmp_path)  # fmt: skip
    _one_error_line(code, err, "--engine local")
    assert not any((tmp_path / h).exists() for h in ("h0", "h1", "h2"))
    # the set attached: its latents harvested by glob
    code, out, err = _cli("harvest", str(folder), *common, "--site", "blocks.*.mlp.tc.latents",
                          "--transcoders", str(tmp_path / "tc"), "--out", str(tmp_path / "h"),
                          cache=tmp_path)  # fmt: skip
    assert code == 0, err
    assert "AttachedSet(tc: layers [0, 1]" in out
    from mechscope.harvest import open_harvest

    store = open_harvest(tmp_path / "h")
    assert store.n_units("blocks.1.mlp.tc.latents") == 16

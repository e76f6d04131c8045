"""Transcoders: shapes, files, the exact local replacement, training, resuming, bad input."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch

from mechscope.corpus import windows
from mechscope.errors import InputError
from mechscope.testing import tiny_model
from mechscope.transcoders import (
    Transcoder,
    TranscoderConfig,
    TranscoderEval,
    TranscoderSet,
    TranscoderTrainConfig,
    boundary_mask,
    evaluate_transcoders,
    mlp_sites,
    open_transcoder_run,
    replacement_interventions,
    splice_transcoders,
    train_transcoders,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread than on two contended ones (same numbers)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small English-like .txt corpus (the built-in one takes seconds to open, per stream)."""
    g = torch.Generator().manual_seed(0)
    words = ["the", "cat", "dog", "sat", "ran", "on", "a", "mat", "hill", "when", "it", "was", "cold", "and", "warm", "then", "we", "saw", "light", "rain", "over", "old", "town", "because", "people", "like", "to", "walk", "near", "water"]  # fmt: skip
    paragraphs = []
    for _ in range(400):
        sentences = []
        for _ in range(4):
            idx = torch.randint(
                len(words), (int(torch.randint(5, 12, (1,), generator=g)),), generator=g
            )
            sentences.append(" ".join(words[i] for i in idx).capitalize() + ".")
        paragraphs.append(" ".join(sentences))
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join(paragraphs))
    return str(path)


def _randomised(tcs: TranscoderSet, seed: int = 0) -> TranscoderSet:
    """Biases and skips away from their zero initialisation, so that files and folds are tested
    on every tensor."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, tc in tcs.items():
            for p in tc.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return tcs


def _small(**kw) -> TranscoderTrainConfig:
    base = {"width": 128, "k": 8, "batch_size": 128, "window": 32, "warmup_steps": 5}
    return TranscoderTrainConfig(**(base | kw))


def test_sites_shapes_and_kinds():
    llama, gpt2 = tiny_model("llama"), tiny_model("gpt2")
    assert mlp_sites(llama, 1) == ("model.layers.1.post_attention_layernorm", "blocks.1.mlp.out")
    assert mlp_sites(gpt2, 0) == ("transformer.h.0.ln_2", "blocks.0.mlp.out")
    x = torch.randn(3, 5, 32)
    for kind in ("topk", "jumprelu"):
        tc = Transcoder(TranscoderConfig(d_in=32, d_out=24, width=64, kind=kind, k=4, skip=True))
        f = tc.encode(x)
        assert f.shape == (3, 5, 64) and tc(x).shape == (3, 5, 24)
        assert torch.equal(tc(x), tc.decode(f, x))
        if kind == "topk":
            assert int((f > 0).sum(-1).max()) <= 4
    assert tc.W_skip.shape == (32, 24) and not tc.W_skip.any()  # the skip starts at zero
    with pytest.raises(InputError, match="skip connection"):
        tc.decode(f)
    tcs = TranscoderSet.build(gpt2, width=48, k=3)
    assert tcs.layers == [0, 1] and tcs[1].cfg.site == "transformer.h.1.ln_2"
    assert tcs[1].cfg.output_site == "blocks.1.mlp.out" and tcs.identity["d_model"] == 32
    assert "layers [0, 1]" in repr(tcs)


@pytest.mark.parametrize("kind", ["topk", "jumprelu"])
def test_save_load_round_trip_and_folding(kind, tmp_path):
    model = tiny_model("llama")
    tcs = _randomised(TranscoderSet.build(model, [1], width=40, kind=kind, k=5, skip=True))
    again = TranscoderSet.load(tcs.save(tmp_path / "tcs"), model=model)
    assert again.layers == [1] and again.identity == tcs.identity
    assert again[1].cfg == tcs[1].cfg
    for name, v in tcs[1].state_dict().items():
        assert torch.equal(v, again[1].state_dict()[name]), name
    assert Transcoder.load(tcs[1].save(tmp_path / "one")).cfg == tcs[1].cfg
    assert again.to(torch.float64) is again and again[1].W_enc.dtype == torch.float64
    # folding the training scales: the folded transcoder on raw x is s_out × the trained one on x / s_in
    x = torch.randn(7, 32)
    trained = tcs[1]
    expected = 3.0 * trained(x / 0.5)
    trained.fold_scales(0.5, 3.0)
    assert torch.allclose(trained(x), expected, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_error_terms_make_the_spliced_model_exact(arch, ids):
    model = tiny_model(arch)
    tcs = _randomised(TranscoderSet.build(model, width=64, k=6, skip=True), seed=3)
    clean = model.run(ids, save=[s for layer in (0, 1) for s in mlp_sites(model, layer)])
    for layer, tc in tcs.items():  # outputs in the MLP output's units, as after training
        y = clean.cache[mlp_sites(model, layer)[1]]
        tc.fold_scales(1.0, float(y.pow(2).mean().sqrt()))
    exact = splice_transcoders(model, tcs, ids, error_terms=True)
    assert torch.allclose(exact.logits, clean.logits, atol=1e-5, rtol=0)
    replaced = splice_transcoders(model, tcs, ids, save=["blocks.0.mlp.out"])
    assert (replaced.logits - clean.logits).abs().max() > 1e-3
    # layer 0 reads the clean input: its MLP output is the transcoder's on it, except at
    # position 0 (an attention sink transcoders never train on), which keeps the MLP's own
    x, y = (clean.cache[s] for s in mlp_sites(model, 0))
    spliced = replaced.cache["blocks.0.mlp.out"]
    assert torch.allclose(spliced[:, 1:], tcs[0](x)[:, 1:], atol=1e-6)
    assert torch.equal(spliced[:, 0], y[:, 0])
    assert torch.equal(boundary_mask(model, ids), torch.arange(ids.shape[1]).expand_as(ids) > 0)
    # splicing only some positions leaves the others' MLP output alone
    keep = torch.zeros(ids.shape, dtype=torch.bool)
    keep[:, -1] = True
    ivs = replacement_interventions(model, tcs, keep=keep)
    part = model.run(ids, save=["blocks.0.mlp.out"], interventions=ivs)
    assert torch.equal(
        part.cache["blocks.0.mlp.out"][:, :-1], clean.cache["blocks.0.mlp.out"][:, :-1]
    )
    assert torch.equal(part.logits[:, :-1], clean.logits[:, :-1])  # causal: earlier logits unmoved


def test_training_reduces_fvu_and_the_evaluation_reopens(corpus, tmp_path):
    model = tiny_model("llama")
    untrained = evaluate_transcoders(
        model,
        TranscoderSet.build(model, width=128, k=8),
        corpus,
        tokens=512,
        window=32,
        progress=False,
    )
    assert all(f > 0.9 for f in untrained.fvu.tolist())  # ~1 or worse at initialisation
    cfg = _small(tokens=128 * 200, eval_every=50)
    trained = train_transcoders(model, corpus, config=cfg, eval_tokens=512, progress=False)
    assert trained.finished and trained.steps == 200 and trained.path is None
    ev = trained.eval
    assert ev is not None and ev.layers == [0, 1]
    assert all(f < 0.3 for f in ev.fvu.tolist()), ev.fvu
    assert trained.history[-1]["eval_fvu"] < 0.5 * trained.history[0]["eval_fvu"]
    assert all(float(v) <= 8 for v in ev.l0)
    assert ev.max_logit_diff_with_errors < 1e-5
    assert ev.ce_with_errors == pytest.approx(ev.ce_clean, abs=1e-5)
    assert 0 <= ev.top1_agreement <= 1 and ev.ce_replaced >= ev.ce_clean - 0.05
    assert ev.ce_recovered == pytest.approx(
        (ev.ce_zero - ev.ce_replaced) / (ev.ce_zero - ev.ce_clean)
    )
    # the result contract: saves, reopens equal (torch and numpy), per-layer Parquet table
    path = ev.save(tmp_path / "eval")
    assert TranscoderEval.load(path) == ev
    flat = TranscoderEval.load(path, arrays="numpy")
    assert flat.rows() == ev.rows() and not isinstance(flat.fvu, torch.Tensor)
    table = pq.read_table(ev.write_table(tmp_path / "layers.parquet")).to_pylist()
    assert table == ev.rows() and [r["layer"] for r in table] == [0, 1]
    assert "layer 1: FVU" in repr(ev) and "CE clean" in ev.summary()
    # the trained set reads raw activations: its FVU on a fresh batch matches the evaluation
    site_in, site_out = mlp_sites(model, 1)
    batch = torch.tensor(list(windows(model, corpus, 32, start=1000, limit=4)))  # unseen
    cache = model.run(batch, save=[site_in, site_out]).cache
    y, y_hat = cache[site_out][:, 1:], trained.transcoders[1](cache[site_in][:, 1:])
    assert float((y - y_hat).pow(2).sum() / (y - y.mean((0, 1))).pow(2).sum()) < 0.4


class Killed(Exception):
    """Stands for a kill (anything but a MechscopeError leaves the run folder to resume)."""


def test_killed_and_paused_runs_resume_bit_for_bit(corpus, tmp_path):
    model = tiny_model("gpt2")
    cfg = _small(kind="jumprelu", tokens=128 * 12, eval_every=2, checkpoint_every=4,
                 dead_after_tokens=256, resample_every=3, skip=True)  # fmt: skip
    kw = {"corpus": corpus, "config": cfg, "eval_tokens": 256, "progress": False}
    whole = train_transcoders(model, out=tmp_path / "a", **kw)

    def kill_at_6(step: int) -> None:
        if step == 6:
            raise Killed

    with pytest.raises(Killed):
        train_transcoders(model, out=tmp_path / "b", on_step=kill_at_6, **kw)
    assert (tmp_path / ".b.partial" / "train_state.safetensors").exists()
    paused = train_transcoders(model, out=tmp_path / "b", max_steps=9, **kw)  # from step 4
    assert not paused.finished and paused.steps == 9 and paused.path is None
    done = train_transcoders(model, out=tmp_path / "b", **kw)  # from step 9
    assert done.finished and done.path == tmp_path / "b"
    for layer in (0, 1):
        a, b = whole.transcoders[layer].state_dict(), done.transcoders[layer].state_dict()
        for name in a:
            assert torch.equal(a[name], b[name]), (layer, name)
    assert done.history == whole.history and done.eval == whole.eval
    # the folder reopens: set, evaluation, history, per-layer table
    run = open_transcoder_run(tmp_path / "b", model=model)
    assert run.eval == whole.eval and run.history == whole.history
    assert run.transcoders[0].cfg.skip and run.transcoders[0].cfg.kind == "jumprelu"
    assert len(pq.read_table(tmp_path / "b" / "layers.parquet")) == 2
    record = json.loads((tmp_path / "b" / "run.json").read_text())
    assert record["resumed_from_step"] == 9 and record["eval"] == run.eval.metrics()
    assert not (tmp_path / "b" / "train_state.safetensors").exists()
    assert not list(tmp_path.glob(".*partial"))


def test_a_run_can_be_ended_early_where_it_is(corpus, tmp_path):
    """A paused run resumed with finish_early ends at max_steps: the same weights as a run
    paused there, saved and evaluated, and the history says where it stopped."""
    model = tiny_model("llama")
    cfg = _small(tokens=128 * 12, eval_every=2, checkpoint_every=2)
    kw = {"corpus": corpus, "config": cfg, "eval_tokens": 256, "progress": False}
    paused = train_transcoders(model, out=tmp_path / "a", max_steps=5, **kw)
    assert not paused.finished
    ended = train_transcoders(model, out=tmp_path / "b", max_steps=3, **kw)
    ended = train_transcoders(model, out=tmp_path / "b", max_steps=5, finish_early=True, **kw)
    assert ended.finished and ended.steps == 5 and ended.path == tmp_path / "b"
    assert ended.eval is not None and ended.history[-1] == {"stopped_early_at_step": 5.0}
    for layer in (0, 1):
        a, b = paused.transcoders[layer].state_dict(), ended.transcoders[layer].state_dict()
        assert all(torch.equal(a[n], b[n]) for n in a)
    assert open_transcoder_run(tmp_path / "b").eval == ended.eval
    with pytest.raises(InputError, match="max_steps"):
        train_transcoders(model, out=tmp_path / "c", finish_early=True, **kw)


def _one_line(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


def test_bad_input_fails_in_one_line(corpus, tmp_path):
    model = tiny_model("llama")
    with pytest.raises(
        InputError, match=r"layer 5 is not a layer of tiny-llama; valid: 0\.\.1"
    ) as e:
        train_transcoders(model, corpus, layers=[5], config=_small(tokens=128), progress=False)
    _one_line(e)
    with pytest.raises(InputError, match="non-empty list") as e:
        TranscoderSet.build(model, [], width=8, k=2)
    _one_line(e)
    with pytest.raises(InputError, match=r"k must be in 1\.\.width=16, got 17") as e:
        _small(width=16, k=17)
    _one_line(e)
    with pytest.raises(InputError, match="width must be .*1.*, got 0") as e:
        _small(width=0)
    _one_line(e)
    with pytest.raises(InputError, match="width must be positive") as e:
        TranscoderConfig(d_in=32, width=0)
    _one_line(e)
    with pytest.raises(InputError, match="k must be") as e:
        TranscoderSet.build(model, width=4, k=5)
    _one_line(e)
    with pytest.raises(InputError, match="unknown transcoder kind 'relu'") as e:
        _small(kind="relu")
    _one_line(e)
    with pytest.raises(InputError, match="whole number of windows") as e:
        _small(batch_size=100)
    _one_line(e)
    # a set saved for another d_model
    other = TranscoderConfig(d_in=16, width=8, k=2, layer=0, site="s", output_site="o")
    TranscoderSet({0: Transcoder(other)}).save(tmp_path / "d16")
    with pytest.raises(InputError, match="reads d_model=16 .* has d_model=32") as e:
        TranscoderSet.load(tmp_path / "d16", model=model)
    _one_line(e)
    with pytest.raises(InputError, match="reads d_model=16") as e:
        evaluate_transcoders(model, TranscoderSet.load(tmp_path / "d16"), corpus, progress=False)
    _one_line(e)
    with pytest.raises(InputError, match="no transcoder set in") as e:
        TranscoderSet.load(tmp_path / "nothing")
    _one_line(e)
    (tmp_path / "d16" / "transcoders.json").write_text('{"format": "x"}')
    with pytest.raises(InputError, match="is not a mechscope.transcoder_set/1 record") as e:
        TranscoderSet.load(tmp_path / "d16")
    _one_line(e)
    tc = Transcoder(TranscoderConfig(d_in=32, width=8, k=2))
    with pytest.raises(
        InputError, match=r"encode takes MLP inputs \[\.\.\., 32\], got \[\.\.\., 31\]"
    ) as e:
        tc.encode(torch.zeros(2, 31))
    _one_line(e)
    with pytest.raises(InputError, match="no transcoder for layer 1"):
        TranscoderSet.build(model, [0], width=8, k=2)[1]
    tcs = TranscoderSet.build(model, [0], width=8, k=2)
    ids = torch.randint(3, 259, (2, 5))
    with pytest.raises(InputError, match=r"keep is \[2, 4\] but the MLP output") as e:
        splice_transcoders(model, tcs, ids, keep=torch.ones(2, 4, dtype=torch.bool))
    _one_line(e)

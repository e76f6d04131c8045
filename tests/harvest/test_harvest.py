"""Harvests on a tiny model: shards merge exactly, a killed harvest resumes exactly, the store answers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from mechscope.errors import InputError, SiteError
from mechscope.harvest import harvest, merge_harvests, open_harvest
from mechscope.harvest.state import STATE_FILE
from mechscope.testing import tiny_model

SITES = ["blocks.*.mlp.post", "blocks.0.attn.z", "blocks.1.attn.pattern"]
ARGS = dict(sites=SITES, tokens=40 * 16, window=16, k=5, n_random=3, batch_size=4, hist_every=2)


def _state(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / STATE_FILE))


def _assert_same_harvest(a: Path, b: Path) -> None:
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    for table in ("units", "examples", "windows", "token_hits"):
        assert pq.read_table(a / f"{table}.parquet").equals(pq.read_table(b / f"{table}.parquet"))
    assert (a / "windows.bin").read_bytes() == (b / "windows.bin").read_bytes()


@pytest.fixture(scope="module")
def one_pass(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("h") / "one"
    harvest(tiny_model("llama"), "fortunes", out=out, progress=False, **ARGS)
    return out


def test_two_shards_merged_equal_one_pass(one_pass: Path, tmp_path: Path) -> None:
    model = tiny_model("llama")
    parts = [tmp_path / "s1", tmp_path / "s0"]
    harvest(model, "fortunes", out=parts[1], shard=(0, 2), progress=False, **ARGS)
    harvest(model, "fortunes", out=parts[0], shard=(1, 2), progress=False, **ARGS)
    merged = merge_harvests(model, parts, out=tmp_path / "merged")  # any order of parts
    _assert_same_harvest(one_pass, merged.path)
    cfg = json.loads((merged.path / "config.json").read_text())
    assert cfg["windows"] == [0, 40]


def test_merge_refuses_gaps_and_mismatches(tmp_path: Path) -> None:
    model = tiny_model("llama")
    args = {**ARGS, "tokens": 48 * 16}
    harvest(model, "fortunes", out=tmp_path / "a", shard=(0, 3), progress=False, **args)
    harvest(model, "fortunes", out=tmp_path / "c", shard=(2, 3), progress=False, **args)
    with pytest.raises(InputError, match="contiguous"):
        merge_harvests(model, [tmp_path / "a", tmp_path / "c"], out=tmp_path / "m")
    harvest(model, "fortunes", out=tmp_path / "b", shard=(1, 3), progress=False, **{**args, "k": 4})
    with pytest.raises(InputError, match="differs .* in k"):
        merge_harvests(model, [tmp_path / "a", tmp_path / "b"], out=tmp_path / "m")
    assert not (tmp_path / "m").exists()


KILLER = """
import os, signal, sys
from mechscope.harvest import harvest
from mechscope.testing import tiny_model
model = tiny_model("llama")
calls = {"n": 0}
real = model.hf.forward
def forward(*a, **kw):
    calls["n"] += 1
    if calls["n"] == 1 + int(sys.argv[2]):   # the first forward sizes the sites
        os.kill(os.getpid(), signal.SIGKILL)  # a real kill, in the middle of a batch
    return real(*a, **kw)
model.hf.forward = forward
harvest(model, "fortunes", out=sys.argv[1], checkpoint_batches=3, progress=False, **ARGS)
"""


def test_killed_harvest_resumes_to_the_same_result(one_pass: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    script = f"ARGS = {ARGS!r}\n" + textwrap.dedent(KILLER)
    proc = subprocess.run([sys.executable, "-c", script, str(out), "7"], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    partial = tmp_path / ".killed.partial"
    assert not out.exists() and (partial / STATE_FILE).exists()
    assert int(_state(partial)["windows_done"]) == 6 * 4  # checkpoints after batches 3 and 6
    # batch 7's tokens were written after the checkpoint; the resume must not count them twice
    store = harvest(tiny_model("llama"), "fortunes", out=out, progress=False, **ARGS)
    assert store.run["resumed_from_window"] == 24
    assert not partial.exists()
    _assert_same_harvest(one_pass, out)


def test_store_answers_queries(one_pass: Path, tmp_path: Path) -> None:
    store = open_harvest(one_pass)
    assert store.sites == [
        "blocks.0.attn.z",
        "blocks.0.mlp.post",
        "blocks.1.attn.pattern",
        "blocks.1.mlp.post",
    ]
    assert store.n_units("blocks.0.mlp.post") == 64 and store.n_units("blocks.0.attn.z") == 4
    page = store.unit("blocks.1.mlp.post", 7)
    assert len(page.top) == 5 and [e.rank for e in page.top] == list(range(5))
    assert all(len(e.tokens) == 16 == len(e.acts) for e in page.top + page.random)
    assert [e.max_act for e in page.top] == sorted((e.max_act for e in page.top), reverse=True)
    assert page.top[0].max_act == pytest.approx(page.stats.max)
    assert page.top[0].acts[page.top[0].max_pos] == pytest.approx(page.top[0].max_act, rel=1e-3)
    assert {e.window for e in page.random}.isdisjoint({e.window for e in page.top})
    assert sum(page.hist_counts) == page.stats.count // 2  # every 2nd window is histogrammed
    assert len(page.hist_edges) == len(page.hist_counts) + 1
    assert page.top[0].tokens[0] == "<|bos|>"
    # a unit's record is a result of its own: it saves and reopens without torch
    again = type(page).load(page.save(tmp_path / "unit"), arrays="numpy")
    assert again == page and again.top[0].tokens == page.top[0].tokens
    assert repr(page).startswith("UnitRecord(blocks.1.mlp.post unit 7: max ")
    # search: a token on which some unit peaks finds that unit
    token, site, unit = store.query("SELECT token, site, unit FROM token_hits LIMIT 1").fetchone()
    hits = store.search_token(token)
    assert (site, unit) in {(h.site, h.unit) for h in hits}
    assert store.find_units("L1 N7") == [("blocks.1.mlp.post", 7)]  # pattern has 4 heads only
    assert store.find_units("1/2") == [("blocks.1.attn.pattern", 2), ("blocks.1.mlp.post", 2)]
    assert store.find_units("blocks.1.mlp.post:7") == [("blocks.1.mlp.post", 7)]
    assert store.find_units("nonsense") == []
    top = store.top_units("blocks.0.mlp.post", limit=3)
    assert top[0].max >= top[1].max >= top[2].max
    with pytest.raises(InputError, match="units 0…63"):
        store.unit("blocks.0.mlp.post", 64)
    with pytest.raises(InputError, match="was not harvested"):
        store.unit("blocks.0.mlp.pots", 1)


def test_statistics_match_the_activations(one_pass: Path) -> None:
    store = open_harvest(one_pass)
    model = tiny_model("llama")
    ids = torch.from_numpy(
        __import__("numpy").fromfile(one_pass / "windows.bin", dtype="int32").reshape(-1, 16)
    ).long()
    acts = model.run(ids, save=["blocks.0.mlp.post"]).cache["blocks.0.mlp.post"].double()
    for unit in (0, 13):
        s = store.stats("blocks.0.mlp.post", unit)
        a = acts[..., unit]
        assert s.count == a.numel()
        assert s.mean == pytest.approx(a.mean().item(), abs=1e-5)
        assert s.std == pytest.approx(a.std(correction=0).item(), rel=1e-4)
        assert s.max == pytest.approx(a.max().item(), rel=1e-5)
        assert s.frac_active == pytest.approx((a > 0).double().mean().item())
        top = store.unit("blocks.0.mlp.post", unit).top
        best = a.amax(1).topk(5).indices.tolist()
        assert [e.window for e in top] == best


def test_bad_requests_fail_clearly_and_leave_nothing(tmp_path: Path) -> None:
    model = tiny_model("llama")
    text = tmp_path / "short.txt"
    text.write_text("A short corpus. " * 20)
    runs = tmp_path / "runs"
    with pytest.raises(SiteError, match="matches no site"):
        harvest(model, text, out=runs / "x", sites="blocks.*.mlp.nope", progress=False)
    with pytest.raises(InputError, match="only 21 windows"):
        harvest(model, text, out=runs / "y", tokens=10_000, window=16, progress=False)
    assert list(runs.iterdir()) == []


def test_features_of_a_site_are_harvested_like_sites(tmp_path: Path) -> None:
    """SAE latents and other derived units go through the same path (`features`)."""
    model = tiny_model("llama")
    g = torch.Generator().manual_seed(0)
    encoder = torch.randn(32, 48, generator=g)

    def encode(x: torch.Tensor) -> torch.Tensor:  # a stand-in SAE encoder: [b p 32] -> [b p 48]
        return torch.relu(x @ encoder)

    args = {**ARGS, "sites": []}
    store = harvest(
        model,
        "fortunes",
        out=tmp_path / "f",
        features={"sae0": ("blocks.0.resid_post", encode)},
        progress=False,
        **args,
    )
    assert store.sites == ["sae0"] and store.n_units("sae0") == 48
    ids = torch.from_numpy(
        __import__("numpy").fromfile(store.path / "windows.bin", dtype="int32").reshape(-1, 16)
    ).long()
    latents = encode(model.run(ids, save=["blocks.0.resid_post"]).cache["blocks.0.resid_post"])
    top = store.unit("sae0", 5).top
    assert [e.window for e in top] == latents[..., 5].amax(1).topk(5).indices.tolist()
    assert store.stats("sae0", 5).frac_active == pytest.approx(
        (latents[..., 5] > 0).double().mean().item()
    )
    with pytest.raises(InputError, match="needs \\(site, function\\)"):
        harvest(
            model,
            "fortunes",
            out=tmp_path / "g",
            features={"x": ("blocks.0.resid_post", 3)},
            progress=False,
            **args,
        )


def test_unit_card_is_written_as_png_svg_and_html(one_pass: Path, tmp_path: Path) -> None:
    store = open_harvest(one_pass)
    out = store.figure("blocks.0.mlp.post", 3, tmp_path / "card", examples=4, width=8)["card"]
    assert {p.suffix for p in out.values()} == {".png", ".svg", ".html"}
    assert all(p.stat().st_size > 1000 for p in out.values())
    best = store.unit("blocks.0.mlp.post", 3).top[0]
    assert f"{best.max_act:.3g}" in out["html"].read_text()  # the row label of the top example


def test_a_site_whose_random_sample_is_all_top_windows_still_writes_tables(tmp_path):
    """With as many top examples as windows, every sampled window is a top one: an empty batch."""
    from mechscope.harvest import harvest
    from mechscope.testing import tiny_model

    model = tiny_model("llama")
    store = harvest(model, out=tmp_path / "h", sites=["blocks.0.mlp.post"], tokens=256, window=32, k=8,
                    n_random=4, progress=False)  # fmt: skip
    record = store.unit("blocks.0.mlp.post", 0)
    assert len(record.top) == 8 and record.random == []

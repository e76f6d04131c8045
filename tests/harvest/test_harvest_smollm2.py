"""A harvest of every MLP neuron of SmolLM2 over a slice of the default corpus (marked `model`)."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.model


def test_all_mlp_neurons_harvested(smollm2, smollm2_harvest):
    store = smollm2_harvest
    assert store.sites == [f"blocks.{i}.mlp.post" for i in range(30)]
    assert all(store.n_units(s) == 1536 for s in store.sites)
    assert store.run["units"] == 30 * 1536 and store.run["harvested_tokens"] == 2048
    (n,) = store.query("SELECT count(*) FROM units").fetchone()
    assert n == 30 * 1536
    # windows start at the document boundary SmolLM2 was pretrained with
    page = store.unit("blocks.3.mlp.post", 100)
    assert all(e.tokens[0] == "<|endoftext|>" for e in page.top)
    # the stored activations are the model's own
    ex = page.top[0]
    row = store.query('SELECT token_ids FROM windows WHERE "window" = ?', [ex.window]).fetchone()[0]
    ids = torch.tensor([row])
    acts = smollm2.run(ids, save=["blocks.3.mlp.post"]).cache["blocks.3.mlp.post"][0, :, 100]
    torch.testing.assert_close(torch.tensor(ex.acts), acts, atol=1e-3, rtol=1e-3)  # float16


def test_token_search_returns_units(smollm2_harvest):
    (token,) = smollm2_harvest.query(
        "SELECT token FROM token_hits GROUP BY token ORDER BY count(*) DESC LIMIT 1"
    ).fetchone()
    hits = smollm2_harvest.search_token(token)
    assert hits and all(h.token == token for h in hits)
    assert hits[0].count >= hits[-1].count


def test_explain_score_smollm2_neurons(smollm2, smollm2_harvest, tmp_path):
    """The whole explain → simulate → score pipeline on two SmolLM2 neurons, local backend."""
    from mechscope.autointerp import LocalBackend, explain_run

    units = [
        ("blocks.12.mlp.post", s.unit)
        for s in smollm2_harvest.top_units("blocks.12.mlp.post", limit=2)
    ]
    result = explain_run(
        smollm2_harvest,
        units,
        explainer=LocalBackend(smollm2),
        out=tmp_path / "e",
        n_show=3,
        n_test=2,
        progress=False,
    )
    assert {(r["method"], r["scorer"]) for r in result.summary.records()} == {
        (m, s)
        for m in ("llm", "top_tokens", "random")
        for s in ("correlation", "detection", "fuzzing")
    }
    assert (
        result.record["explainer_cost"]["calls"] == 2
        and result.record["explainer_cost"]["tokens_out"] > 0
    )
    scores = [r["mean"] for r in result.summary.records() if r["scorer"] != "correlation"]
    assert all(0 <= s <= 1 for s in scores)  # AUROCs

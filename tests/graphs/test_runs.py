"""Graph checks by intervention, graph run folders and `mechscope graph` on tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import mechscope as ms
from mechscope.graphs import GraphCheck, attribution_graph, check_graph, graph_run, open_graph_run
from mechscope.graphs.prune import FEATURE
from mechscope.graphs.runs import save_supernodes
from mechscope.graphs.validate import _predict, spearman
from mechscope.testing import run_cli, tiny_chat_model, tiny_model
from mechscope.transcoders import TranscoderSet, attach_transcoders

PROMPT = "the cat sat on"


@pytest.fixture(scope="module")
def setup() -> tuple[ms.Model, TranscoderSet]:
    model = tiny_model("llama")
    tcs = TranscoderSet.build(model, width=24, k=3, skip=True, seed=2)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for tc in tcs.transcoders.values():
            tc.W_skip.normal_(0, 0.05, generator=g)
    return model, tcs


def test_spearman() -> None:
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([10.0, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2, 3]), np.array([3.0, 2, 1])) == pytest.approx(-1.0)
    assert spearman(np.array([1.0, 2, 3]), np.array([10.0, 30, 20])) == pytest.approx(0.5)
    assert np.isnan(spearman(np.array([1.0, 2]), np.array([1.0, 2])))
    with pytest.raises(ms.InputError):
        spearman(np.zeros(3), np.zeros(4))


def test_check_measures_each_latent_in_its_own_row(setup) -> None:
    model, tcs = setup
    graph = attribution_graph(model, tcs, PROMPT, batch=16, progress=False)
    check = check_graph(model, tcs, graph, top=5, factor=0.5)
    assert len(check.nodes) == 5 and check.factor == 0.5
    tnode = graph.find(check.target)
    tok = int(graph.index[tnode])
    ids = torch.tensor([graph.token_ids])

    def demeaned(logits: torch.Tensor) -> float:
        last = logits[0, -1]
        return float(last[tok] - last.mean())

    with attach_transcoders(model, tcs) as sites, torch.no_grad():
        base = demeaned(model.run(ids).logits)
        for r, nid in enumerate(check.nodes):
            i = graph.find(nid)
            iv = ms.scale(sites.latents(int(graph.layer[i])), 0.5, positions=[int(graph.pos[i])],
                          neurons=[int(graph.index[i])])  # fmt: skip
            alone = demeaned(model.run(ids, interventions=[iv]).logits) - base
            assert float(check.measured_logit[r]) == pytest.approx(alone, abs=1e-5)
    # the prediction for a latent with nothing downstream of it is its direct effect
    last_layer = [i for i in graph.nodes_of(FEATURE) if int(graph.layer[i]) == graph.n_layers - 1]
    s = last_layer[0]
    act = float(graph.activation[s])
    change = _predict(graph, s, -0.5 * act, graph.n_layers + 2)
    assert change[tnode] == pytest.approx(-0.5 * float(graph.adjacency[tnode, s]), rel=1e-5)
    back = GraphCheck.load(check.save("/tmp/mechscope-check-test"), arrays="numpy")
    assert back.nodes == check.nodes and back.rows()[0]["node"] == check.nodes[0]


def test_check_refuses_bad_arguments(setup) -> None:
    model, tcs = setup
    graph = attribution_graph(model, tcs, PROMPT, batch=16, progress=False)
    with pytest.raises(ms.InputError, match="factor"):
        check_graph(model, tcs, graph, factor=1.0)
    with pytest.raises(ms.InputError, match="top"):
        check_graph(model, tcs, graph, top=0)
    with pytest.raises(ms.InputError, match="not a logit"):
        check_graph(model, tcs, graph, target=graph.node_id(graph.nodes_of(FEATURE)[0]))


def test_graph_run_folder(setup, tmp_path) -> None:
    model, tcs = setup
    path = graph_run(model, tcs, PROMPT, tmp_path / "g", check_top=4, heads=2, batch=16,
                     progress=False)  # fmt: skip
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "run.json", "graph.safetensors", "check.safetensors",
            "neuronpedia.json", "heads.json", "figures"} <= names  # fmt: skip
    assert {p.name for p in (path / "figures").iterdir()} >= {
        "graph.png",
        "graph.svg",
        "graph.html",
    }
    graph, check = open_graph_run(path)
    assert check is not None and len(check.nodes) == 4
    heads = json.loads((path / "heads.json").read_text())
    assert len(heads) == 2 and all(h["heads"][0]["head"].startswith("L") for h in heads)
    ids = [r["id"] for r in graph.top_features(2)]
    save_supernodes(path, [["pair", *ids]])
    assert open_graph_run(path)[0].supernodes == [["pair", *ids]]
    with pytest.raises(ms.InputError, match="no node"):
        save_supernodes(path, [["bad", "77_7_7"]])
    assert open_graph_run(path)[0].supernodes == [["pair", *ids]]  # the bad call wrote nothing
    record = json.loads((path / "run.json").read_text())
    assert record["scores"]["replacement"] == graph.scores["replacement"]


def test_cli_trains_evaluates_and_graphs(tmp_path) -> None:
    """`mechscope transcoders train|eval` and `mechscope graph`, real processes, a tiny model."""
    folder = tmp_path / "model"
    model = tiny_chat_model("llama")
    model.hf.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    tc = tmp_path / "tc"
    res = run_cli("transcoders", "train", "--model", str(folder), "--corpus", "fortunes",
                  "--width", "16", "--k", "2", "--tokens", "2048", "--batch-size", "256",
                  "--window", "32", "--eval-tokens", "512", "--out", str(tc), cache=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "CE" in res.stdout and (tc / "transcoders" / "transcoders.json").is_file()
    res = run_cli("transcoders", "eval", str(tc), "--model", str(folder), "--corpus", "fortunes",
                  "--tokens", "512", "--window", "32", cache=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "TranscoderEval" in res.stdout or "CE" in res.stdout
    res = run_cli("graph", str(folder), "hello there", "--transcoders", str(tc), "--check", "3",
                  "--heads", "1", "--out", str(tmp_path / "graph"), cache=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "AttributionGraph(" in res.stdout and "GraphCheck(" in res.stdout
    assert (tmp_path / "graph" / "neuronpedia.json").is_file()
    res = run_cli("graph", str(folder), "hello", "--transcoders", str(tmp_path / "nowhere"),
                  "--out", str(tmp_path / "g2"), cache=tmp_path)  # fmt: skip
    assert res.returncode == 2 and "no such folder" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "g2").exists()

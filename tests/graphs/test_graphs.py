"""Attribution graphs on tiny models: exactness, finite differences, invariance, pruning, files.

The finite-difference harness below is a second, value-based construction of
the local replacement model (clean attention patterns patched in, each norm
replaced by its clean output plus its frozen linear map of the input's change,
each MLP by the transcoder with its clean latents plus the clean error term):
a perturbation of one node's write then moves every target by its edge weight.
It shares no code with `mechscope.graphs.local`, which differentiates instead.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import mechscope as ms
from mechscope.core.weights import frozen_norm
from mechscope.graphs import (
    AttributionGraph,
    GraphError,
    LocalReplacement,
    attribution_graph,
    clean_run,
    prune,
    scores,
)
from mechscope.graphs.prune import EMBEDDING, ERROR, FEATURE, LOGIT, influence
from mechscope.testing import tiny_model
from mechscope.transcoders import TranscoderSet
from mechscope.transcoders.model import mlp_sites

ARCHS = ("llama", "gpt2", "gpt_neox")
PROMPT = "the cat sat on"


def _set(model: ms.Model, seed: int = 0) -> TranscoderSet:
    tcs = TranscoderSet.build(model, width=24, k=3, skip=True, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for tc in tcs.transcoders.values():
            tc.W_skip.normal_(0, 0.05, generator=g)
            tc.b_dec.normal_(0, 0.1, generator=g)
            tc.b_enc.normal_(0, 0.1, generator=g)
            tc.W_dec.mul_(0.5)
    return tcs


@pytest.fixture(scope="module", params=ARCHS)
def built(request: pytest.FixtureRequest) -> tuple[ms.Model, TranscoderSet, AttributionGraph]:
    model = tiny_model(request.param)
    tcs = _set(model)
    graph = attribution_graph(model, tcs, PROMPT, batch=16, max_feature_nodes=10_000,
                              progress=False)  # fmt: skip
    return model, tcs, graph


def _frozen(
    model: ms.Model,
    tcs: TranscoderSet,
    ids: torch.Tensor,
    writes: dict[int, torch.Tensor],
    zero_sources: bool = False,
) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Pre-activations [T, width] per layer and the last logits of the value-based frozen model.

    `writes` adds [T, d] at the embeddings (key -1) or layer L's MLP output (key L);
    `zero_sources` removes every source's write (embeddings, latents, errors).
    """
    assert model.dims is not None and model.adapter is not None
    n, a = model.dims.n_layers, model.adapter
    parallel = bool(getattr(model.hf.config, "use_parallel_residual", False))
    names = ["blocks.0.resid_pre", "final_norm", f"blocks.{n - 1}.resid_post"]
    for layer in range(n):
        names += [f"blocks.{layer}.attn.pattern", f"blocks.{layer}.resid_pre",
                  f"blocks.{layer}.resid_mid", f"{a.layers}.{layer}.{a.attn_norm}",
                  *mlp_sites(model, layer)]  # fmt: skip
    clean = model.run(ids, save=names).cache
    now: dict[str, torch.Tensor] = {}
    pre: dict[int, torch.Tensor] = {}
    ivs = []

    def embed(x: torch.Tensor) -> torch.Tensor:
        x = torch.zeros_like(x) if zero_sources else x
        return x + writes[-1] if -1 in writes else x

    ivs.append(ms.apply("blocks.0.resid_pre", embed))

    def grab(key: str):
        def keep(x: torch.Tensor) -> None:
            now[key] = x

        return keep

    def norm(
        which: str, layer: int | None, key: str, clean_in: torch.Tensor, clean_out: torch.Tensor
    ):
        lin = frozen_norm(model, which, clean_in, layer)  # type: ignore[arg-type]

        def f(y: torch.Tensor) -> torch.Tensor:
            return clean_out + lin(now[key] - clean_in)

        return f

    for layer in range(n):
        site_in, site_out = mlp_sites(model, layer)
        ivs.append(ms.observe(f"blocks.{layer}.resid_pre", grab(f"pre{layer}")))
        ivs.append(ms.apply(f"{a.layers}.{layer}.{a.attn_norm}",
                            norm("attn", layer, f"pre{layer}", clean[f"blocks.{layer}.resid_pre"],
                                 clean[f"{a.layers}.{layer}.{a.attn_norm}"])))  # fmt: skip
        ivs.append(
            ms.replace(f"blocks.{layer}.attn.pattern", clean[f"blocks.{layer}.attn.pattern"])
        )
        src = f"pre{layer}" if parallel else f"mid{layer}"
        src_site = f"blocks.{layer}.resid_pre" if parallel else f"blocks.{layer}.resid_mid"
        ivs.append(ms.observe(f"blocks.{layer}.resid_mid", grab(f"mid{layer}")))
        normed = norm("mlp", layer, src, clean[src_site], clean[site_in])

        def mlp_in(y: torch.Tensor, layer: int = layer, normed=normed) -> torch.Tensor:
            x = normed(y)
            now[f"in{layer}"] = x
            tc = tcs[layer]
            pre[layer] = tc.pre_activation(x[0])
            return x

        def mlp_out(y: torch.Tensor, layer: int = layer, site_in: str = site_in,
                    site_out: str = site_out) -> torch.Tensor:  # fmt: skip
            tc = tcs[layer]
            x_clean, y_clean = clean[site_in], clean[site_out]
            f = tc.encode(x_clean)
            err = y_clean - tc.decode(f, x_clean)
            if zero_sources:
                f, err = torch.zeros_like(f), torch.zeros_like(err)
            out = f @ tc.W_dec + tc.b_dec + now[f"in{layer}"] @ tc.W_skip + err
            return out + writes[layer] if layer in writes else out

        ivs += [ms.apply(site_in, mlp_in), ms.apply(site_out, mlp_out)]
    ivs.append(ms.observe(f"blocks.{n - 1}.resid_post", grab("final")))
    ivs.append(ms.apply("final_norm", norm("final", None, "final", clean[f"blocks.{n - 1}.resid_post"],
                                           clean["final_norm"])))  # fmt: skip
    with torch.no_grad():
        logits = model.run(ids, interventions=ivs).logits
    assert logits is not None
    return pre, logits[0, -1]


def _targets(
    graph: AttributionGraph, pre: dict[int, torch.Tensor], last: torch.Tensor
) -> np.ndarray:
    """Every target node's value (feature pre-activation, demeaned logit) from `_frozen`."""
    out = np.zeros(graph.n_nodes)
    kind, layer, pos, index = (graph.kind.numpy(), graph.layer.numpy(), graph.pos.numpy(),
                               graph.index.numpy())  # fmt: skip
    for i in range(graph.n_nodes):
        if kind[i] == FEATURE:
            out[i] = float(pre[int(layer[i])][int(pos[i]), int(index[i])])
        elif kind[i] == LOGIT:
            out[i] = float(last[int(index[i])] - last.mean())
    return out


def _write(
    model: ms.Model, tcs: TranscoderSet, graph: AttributionGraph, s: int
) -> tuple[int, torch.Tensor]:
    """Where node s writes (layer, or -1 for the embeddings) and its write vector [T, d]."""
    ids = torch.tensor([graph.token_ids])
    clean = clean_run(model, tcs, ids, first_as_error=graph.config["first_as_error"])
    t, d = ids.shape[1], model.dims.d_model  # type: ignore[union-attr]
    write = torch.zeros(t, d)
    kind, layer, pos, index = (int(graph.kind[s]), int(graph.layer[s]), int(graph.pos[s]),
                               int(graph.index[s]))  # fmt: skip
    if kind == FEATURE:
        write[pos] = clean.latents[layer][pos, index] * tcs[layer].W_dec[index].detach()
        return layer, write
    if kind == ERROR:
        write[pos] = clean.errors[layer][pos]
        return layer, write
    write[pos] = clean.resid0[pos]
    return -1, write


def test_local_replacement_is_the_model(built: tuple) -> None:
    """The local replacement's forward gives the model's logits; its targets the clean values."""
    model, tcs, graph = built
    ids = model.to_tokens(PROMPT)
    clean = clean_run(model, tcs, ids)
    with torch.enable_grad():
        fwd = LocalReplacement(model, tcs, clean).forward(3)
    plain = model.run(ids).logits
    assert (fwd.logits.detach() - plain).abs().max() < 1e-5
    # the graph's values: each latent's clean pre-activation, each logit demeaned
    kind = graph.kind.numpy()
    for i in np.flatnonzero(kind == FEATURE)[:20]:
        layer, pos, idx = int(graph.layer[i]), int(graph.pos[i]), int(graph.index[i])
        want = tcs[layer].pre_activation(clean.mlp_in[layer][pos])[idx].detach()
        assert abs(float(graph.value[i]) - float(want)) < 1e-5
    last = plain[0, -1]
    for i in np.flatnonzero(kind == LOGIT):
        tok = int(graph.index[i])
        assert abs(float(graph.value[i]) - float(last[tok] - last.mean())) < 1e-4


def test_edges_are_finite_difference_direct_effects(built: tuple) -> None:
    model, tcs, graph = built
    ids = torch.tensor([graph.token_ids])
    base = _targets(graph, *_frozen(model, tcs, ids, {}))
    kind = graph.kind.numpy()
    # also the value-based frozen model reproduces the graph's own target values
    rows = (kind == FEATURE) | (kind == LOGIT)
    np.testing.assert_allclose(base[rows], graph.value.numpy()[rows], atol=1e-4)
    rng = np.random.default_rng(0)
    picked = []
    for k in (FEATURE, ERROR, EMBEDDING):
        nodes = np.flatnonzero(kind == k)
        picked += rng.choice(nodes, size=min(3, len(nodes)), replace=False).tolist()
    checked = 0
    for s in picked:
        where, write = _write(model, tcs, graph, int(s))
        eps = 0.5
        moved = _targets(graph, *_frozen(model, tcs, ids, {where: eps * write}))
        fd = (moved - base) / eps
        edges = graph.adjacency.numpy()[:, s]
        np.testing.assert_allclose(fd[rows], edges[rows], atol=2e-4, rtol=1e-3)
        checked += int((np.abs(edges[rows]) > 1e-3).sum())
    assert checked > 10  # the comparison saw real edges, not only zeros


def test_edges_into_a_node_sum_to_its_value(built: tuple) -> None:
    """Input invariance: Σ in-edges + the part no source writes (all sources zeroed) = value."""
    model, tcs, graph = built
    ids = torch.tensor([graph.token_ids])
    constant = _targets(graph, *_frozen(model, tcs, ids, {}, zero_sources=True))
    kind = graph.kind.numpy()
    rows = (kind == FEATURE) | (kind == LOGIT)
    adj = graph.adjacency.numpy()
    np.testing.assert_allclose(
        adj[rows].sum(1) + constant[rows], graph.value.numpy()[rows], atol=2e-4, rtol=1e-4
    )
    np.testing.assert_allclose(graph.bias.numpy()[rows], constant[rows], atol=2e-4, rtol=1e-4)


def test_batching_gives_the_same_rows() -> None:
    model = tiny_model("llama")
    tcs = _set(model, seed=3)
    one = attribution_graph(model, tcs, PROMPT, batch=1, progress=False)
    many = attribution_graph(model, tcs, PROMPT, batch=13, progress=False)
    assert one.node_ids() == many.node_ids()
    np.testing.assert_allclose(one.adjacency.numpy(), many.adjacency.numpy(), atol=1e-5)
    assert one.config["backward_passes"] > many.config["backward_passes"]


def test_a_feature_budget_expands_the_most_influential() -> None:
    model = tiny_model("llama")
    tcs = _set(model, seed=4)
    full = attribution_graph(model, tcs, PROMPT, batch=8, progress=False)
    small = attribution_graph(model, tcs, PROMPT, batch=8, max_feature_nodes=12, progress=False)
    assert small.config["expanded_features"] == 12 < full.config["expanded_features"]
    full_ids = full.node_ids()
    # every expanded latent's row is the full graph's row over the columns both have
    for i in small.nodes_of(FEATURE):
        j = full_ids.index(small.node_id(i))
        cols = [full_ids.index(n) for n in small.node_ids()]
        np.testing.assert_allclose(
            small.adjacency.numpy()[i], full.adjacency.numpy()[j, cols], atol=1e-5
        )
    # the latents chosen carry more influence in the full graph than the ones left out
    infl = {n: float(full.influence[k]) for k, n in enumerate(full_ids)}
    chosen = [infl[small.node_id(i)] for i in small.nodes_of(FEATURE)]
    left = [infl[n] for k, n in enumerate(full_ids)
            if full.kind[k] == FEATURE and n not in set(small.node_ids())]  # fmt: skip
    assert np.mean(chosen) > np.mean(left)


def test_scores_and_influence_on_a_hand_made_graph() -> None:
    # nodes: latent f, error e, token t, logit l;  l ← f (3), l ← e (1); f ← t (2), f ← e (−2)
    kind = torch.tensor([FEATURE, ERROR, EMBEDDING, LOGIT])
    adj = torch.zeros(4, 4)
    adj[3, 0], adj[3, 1], adj[0, 2], adj[0, 1] = 3.0, 1.0, 2.0, -2.0
    w = torch.tensor([0.0, 0.0, 0.0, 1.0])
    infl = influence(adj, w, 4)
    np.testing.assert_allclose(infl.numpy(), [0.75, 0.625, 0.375, 0.0])
    s = scores(adj, w, kind, 4)
    assert s["replacement"] == pytest.approx(0.375)
    assert s["completeness"] == pytest.approx((0.5 * 0.75 + 0.75 * 1.0) / 1.75)
    # pruning: with a node threshold of 0.5 the weak second latent goes, the strong one stays
    kind2 = torch.tensor([FEATURE, FEATURE, ERROR, EMBEDDING, LOGIT])
    adj2 = torch.zeros(5, 5)
    adj2[4, 0], adj2[4, 1], adj2[0, 3], adj2[1, 3], adj2[4, 2] = 5.0, 0.1, 1.0, 1.0, 1.0
    nodes, edges = prune(adj2, torch.tensor([0, 0, 0, 0, 1.0]), kind2, 0.5, 0.99, 4)
    assert nodes.tolist() == [True, False, True, True, True]
    assert not edges[:, 1].any() and not edges[1].any() and edges[4, 0]


def test_graph_saves_reopens_and_exports(built: tuple, tmp_path) -> None:
    _, _, graph = built
    back = AttributionGraph.load(graph.save(tmp_path / "g"), arrays="numpy")
    assert back.node_ids() == graph.node_ids()
    np.testing.assert_array_equal(back.adjacency, graph.adjacency.numpy())
    assert back.scores == graph.scores
    data = json.loads(graph.to_neuronpedia(tmp_path / "np.json", slug="t").read_text())
    ids = [n["node_id"] for n in data["nodes"]]
    assert len(ids) == len(set(ids)) == int(graph.node_mask.sum())
    assert {n["feature_type"] for n in data["nodes"]} <= {
        "cross layer transcoder", "mlp reconstruction error", "embedding", "logit"}  # fmt: skip
    assert all(link["source"] in ids and link["target"] in ids for link in data["links"])
    assert len(data["links"]) == int(graph.edge_mask.sum()) > 0
    assert set(data["qParams"]["pinnedIds"]) <= set(ids)
    assert sum(n["is_target_logit"] for n in data["nodes"]) == 1
    # scores are shares, the pruned graph keeps every logit
    for v in graph.scores.values():
        assert 0.0 <= v <= 1.0
    assert graph.node_mask[graph.kind == LOGIT].all()


def test_supernodes_and_labels_are_checked(built: tuple) -> None:
    _, _, graph = built
    ids = [r["id"] for r in graph.top_features(2)]
    grouped = graph.with_supernodes([["pair", *ids]]).with_labels({ids[0]: "a label"})
    assert grouped.supernodes == [["pair", *ids]]
    assert grouped.describe(grouped.find(ids[0])).endswith(": a label")
    with pytest.raises(ms.InputError, match="no node"):
        graph.with_supernodes([["bad", "99_1_1"]])
    with pytest.raises(ms.InputError, match="name, node id"):
        graph.with_supernodes([["lonely"]])


def test_bad_arguments_are_named() -> None:
    model = tiny_model("llama")
    tcs = _set(model)
    with pytest.raises(GraphError, match="batch"):
        attribution_graph(model, tcs, PROMPT, batch=0, progress=False)
    with pytest.raises(GraphError, match="node_threshold"):
        attribution_graph(model, tcs, PROMPT, node_threshold=1.5, progress=False)
    with pytest.raises(GraphError, match="prompt"):
        attribution_graph(model, tcs, "   ", progress=False)
    with pytest.raises(GraphError, match="post-norms"):
        gemma = tiny_model("gemma3")
        attribution_graph(gemma, TranscoderSet.build(gemma, width=8, k=2), PROMPT, progress=False)


def test_head_contributions_split_a_cross_position_edge() -> None:
    """An edge from a layer-0 latent to the logit crosses positions only in layer 1's
    attention, one head per path: its head contributions sum to it, layer 0's are zero."""
    from mechscope.graphs.attribute import head_contributions

    model = tiny_model("llama")
    tcs = _set(model, seed=5)
    graph = attribution_graph(model, tcs, PROMPT, batch=16, progress=False)
    logit = graph.nodes_of(LOGIT)[0]
    last = int(graph.pos[logit])
    adj = graph.adjacency.numpy()
    sources = [i for i in graph.nodes_of(FEATURE)
               if int(graph.layer[i]) == 0 and int(graph.pos[i]) < last]  # fmt: skip
    s = max(sources, key=lambda i: abs(adj[logit, i]))
    same = [
        i for i in graph.nodes_of(FEATURE) if int(graph.layer[i]) == 0 and int(graph.pos[i]) == last
    ]
    edges = [(s, logit)] + ([(same[0], logit)] if same else [])
    shares = head_contributions(model, tcs, graph, edges, batch=5, progress=False)
    assert abs(adj[logit, s]) > 1e-4
    assert float(shares[0].sum()) == pytest.approx(float(adj[logit, s]), rel=1e-4, abs=1e-5)
    assert shares[0, 0].abs().max() < 1e-6
    if same:  # a same-position edge keeps its residual path: the heads carry only part of it
        assert abs(float(shares[1].sum()) - float(adj[logit, same[0]])) > 1e-6


def test_position_zero_latents_are_error_nodes_by_default() -> None:
    model = tiny_model("llama")
    tcs = _set(model, seed=6)
    sink = attribution_graph(model, tcs, PROMPT, batch=16, progress=False)
    kept = attribution_graph(model, tcs, PROMPT, batch=16, first_as_error=False, progress=False)
    feats = sink.nodes_of(FEATURE)
    assert feats and all(int(sink.pos[i]) > 0 for i in feats)
    assert any(int(kept.pos[i]) == 0 for i in kept.nodes_of(FEATURE))
    # the latents' part of position 0 moved to its error nodes: the same writes in total
    errors0 = [i for i in sink.nodes_of(ERROR) if int(sink.pos[i]) == 0]
    errors0_kept = [i for i in kept.nodes_of(ERROR) if int(kept.pos[i]) == 0]
    assert not torch.allclose(sink.activation[errors0], kept.activation[errors0_kept])
    logit = sink.nodes_of(LOGIT)[0]
    assert float(sink.value[logit]) == pytest.approx(float(kept.value[kept.nodes_of(LOGIT)[0]]))

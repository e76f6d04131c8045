"""Circuit discovery on tiny models: EAP scores are exact linearisations; ACDC is exact greedy pruning."""

from __future__ import annotations

import json
import re

import pytest
import torch

import mechscope as ms
from mechscope.patching.ablation import evaluate_circuit
from mechscope.patching.circuit import acdc, circuit_from_scores
from mechscope.patching.eap import edge_attribution_patching
from mechscope.patching.results import Circuit, EdgeScores
from mechscope.testing import tiny_model

FAMILIES = ["llama", "gpt2", "gpt_neox"]  # gpt_neox: parallel attention and MLP


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(3)
    clean = torch.randint(3, 259, (3, 7), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2:4] = torch.randint(3, 259, (3, 2), generator=g)
    return clean, corrupted


def metric(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, -1, 10] - logits[:, -1, 20]


def mean_metric(model, tokens, interventions=()):
    return metric(model.run(tokens, interventions=interventions).logits).mean()


def head_writes(model, z: torch.Tensor, layer: int) -> torch.Tensor:
    """Each head's write to the residual stream, [head, batch, pos, d_model], from the weights."""
    d = model.dims
    proj = model.hf.get_submodule(f"{model.adapter.layers}.{layer}.{model.adapter.attn_proj}")
    out = []
    for h in range(d.n_heads):
        zh = z[:, :, h]
        cols = slice(h * d.d_head, (h + 1) * d.d_head)
        out.append(
            zh @ proj.weight[:, cols].T
            if isinstance(proj, torch.nn.Linear)
            else zh @ proj.weight[cols]
        )
    return torch.stack(out)


@pytest.mark.parametrize("arch", FAMILIES)
def test_scores_into_logits_are_deltas_dotted_with_the_final_gradient(arch, pair):
    model = tiny_model(arch)
    clean, corrupted = pair
    scores = edge_attribution_patching(model, clean, corrupted, metric, progress=False)
    last = model.dims.n_layers - 1
    sites = ["blocks.*.attn.z", "blocks.*.attn.out", "blocks.*.mlp.out"]
    c = model.run(clean, save=sites).cache
    k = model.run(corrupted, save=sites).cache
    grad = model.run(
        clean, save_grad=[f"blocks.{last}.resid_post"], backward=lambda lg: metric(lg).mean()
    ).cache.grads[f"blocks.{last}.resid_post"]
    for layer in range(model.dims.n_layers):
        writes = head_writes(model, c[f"blocks.{layer}.attn.z"], layer)
        # the heads' writes add up to attn.out (up to the projection's bias)
        bias = (c[f"blocks.{layer}.attn.out"] - writes.sum(0))[0, 0]
        torch.testing.assert_close(writes.sum(0) + bias, c[f"blocks.{layer}.attn.out"])
        delta = head_writes(model, k[f"blocks.{layer}.attn.z"], layer) - writes
        for h in range(model.dims.n_heads):
            expected = (delta[h] * grad).sum()
            got = scores.score(f"L{layer}H{h}", "logits")
            torch.testing.assert_close(torch.tensor(got), expected, atol=1e-6, rtol=1e-4)
        mlp = f"blocks.{layer}.mlp.out"
        expected = ((k[mlp] - c[mlp]) * grad).sum()
        torch.testing.assert_close(
            torch.tensor(scores.score(f"MLP{layer}", "logits")), expected, atol=1e-6, rtol=1e-4
        )
    # summed over every receiver, a sender's scores are its attribution-patching estimate
    total = scores.scores.sum(1)
    assert (
        scores.valid[:, -1].all() and not scores.valid[-1, :-1].any()
    )  # the last MLP feeds logits only
    assert total.abs().sum() > 0


def receiver_isolating(model, receiver: str, vec: torch.Tensor, clean_cache) -> list:
    """Interventions that add `vec` to the input of `receiver` only (no other reader sees it)."""
    last = model.dims.n_layers - 1
    if receiver == "logits":  # the last resid_post is read by the unembedding only
        return [ms.add(f"blocks.{last}.resid_post", vec)]
    name, _, part = receiver.partition(".")  # "L1H2.k" or "MLP1"
    m = re.fullmatch(r"L(\d+)H(\d+)|MLP(\d+)", name)
    assert m is not None, receiver
    layer = int(m.group(1) or m.group(3))
    parallel = getattr(model.hf.config, "use_parallel_residual", False)
    if not part and not parallel:  # raise resid_mid through attn.out, take it back after the MLP
        return [ms.add(f"blocks.{layer}.attn.out", vec), ms.add(f"blocks.{layer}.mlp.out", -vec)]
    # raise resid_pre, keep every other reader of it at its clean value, take it back via attn.out
    ivs = [ms.add(f"blocks.{layer}.resid_pre", vec), ms.add(f"blocks.{layer}.attn.out", -vec)]
    if parallel and part:  # the MLP reads resid_pre too
        ivs.append(ms.patch(f"blocks.{layer}.mlp.out", clean_cache))
    kind, idx = (part, int(m.group(2))) if part else ("mlp", -1)
    for s in "qkv":
        n = model.dims.n_heads if s == "q" else model.dims.n_kv_heads
        others = [i for i in range(n) if not (s == kind and i == idx)]
        ivs.append(ms.patch(f"blocks.{layer}.attn.{s}", clean_cache, heads=others))
    return ivs


@pytest.mark.parametrize("arch", FAMILIES)
def test_scores_match_finite_differences_on_the_receiver_input_only(arch, pair):
    model = tiny_model(arch)
    model.hf.to(torch.float64)
    clean, corrupted = pair
    scores = edge_attribution_patching(model, clean, corrupted, metric, progress=False)
    sites = ["blocks.*.attn.z", "blocks.*.mlp.out", "blocks.*.attn.q", "blocks.*.attn.k"]
    sites += ["blocks.*.attn.v", "blocks.0.resid_pre", *(["pos_embed"] if arch == "gpt2" else [])]
    c = model.run(clean, save=sites).cache
    k = model.run(corrupted, save=sites).cache
    delta = {
        "L0H1": (
            head_writes(model, k["blocks.0.attn.z"], 0)
            - head_writes(model, c["blocks.0.attn.z"], 0)
        )[1],
        "MLP0": k["blocks.0.mlp.out"] - c["blocks.0.mlp.out"],
        "embed": k["blocks.0.resid_pre"] - c["blocks.0.resid_pre"],  # positions are the same
    }
    edges = [
        ("L0H1", "L1H2.q"),
        ("L0H1", "L1H1.k"),
        ("L0H1", "L1H0.v"),
        ("L0H1", "MLP1"),
        ("MLP0", "L1H3.q"),
        ("embed", "L0H1.k"),
        ("embed", "MLP0"),
        ("L0H1", "logits"),
    ]
    if not getattr(model.hf.config, "use_parallel_residual", False):
        edges.append(("L0H1", "MLP0"))  # a head feeds its own layer's MLP
    else:
        assert not scores.valid[scores.senders.index("L0H1"), scores.receivers.index("MLP0")]
    # float32 softmax inside attention leaves ~1e-8 of noise on the metric: fit the slope of a
    # cubic through several steps instead of a two-point difference
    steps = torch.tensor([-0.06, -0.04, -0.02, -0.01, 0.01, 0.02, 0.04, 0.06], dtype=torch.float64)
    basis = torch.stack([steps**0, steps, steps**2, steps**3], 1)
    largest = scores.scores.abs().max().item()
    for sender, receiver in edges:
        values = torch.stack(
            [
                mean_metric(model, clean, receiver_isolating(model, receiver, e * delta[sender], c))
                for e in steps.tolist()
            ]
        )
        slope = torch.linalg.lstsq(basis, values[:, None]).solution[1, 0].item()
        got = scores.score(sender, receiver)
        assert got == pytest.approx(slope, rel=1e-3, abs=1e-5 * largest), (sender, receiver)


def test_full_circuit_is_exactly_faithful_and_the_empty_one_is_corrupted(llama, pair):
    clean, corrupted = pair
    every = [*[f"L{l}H{h}" for l in range(2) for h in range(4)], "MLP0", "MLP1", "embed", "logits"]  # noqa: E741
    clean_metric = mean_metric(llama, clean).item()
    corrupt_metric = mean_metric(llama, corrupted).item()
    assert evaluate_circuit(llama, clean, corrupted, metric, every) == pytest.approx(
        clean_metric, abs=1e-6
    )
    assert evaluate_circuit(llama, clean, corrupted, metric, []) == pytest.approx(
        corrupt_metric, abs=1e-6
    )
    full = acdc(llama, clean, corrupted, metric, threshold=0.0, progress=False)
    assert full.faithfulness == 1.0 and full.ratio == 1.0
    assert full.metric_corrupted == pytest.approx(corrupt_metric, abs=1e-6)


@pytest.mark.parametrize("arch", FAMILIES)
def test_acdc_threshold_zero_keeps_every_effective_node_and_a_huge_one_none(arch, pair):
    model = tiny_model(arch)
    clean, corrupted = pair
    full = acdc(model, clean, corrupted, metric, threshold=0.0, progress=False)
    nodes = [n for n in full.nodes if n[0] in "LM"]
    assert len(nodes) == model.dims.n_layers * (model.dims.n_heads + 1)
    base = evaluate_circuit(model, clean, corrupted, metric, full.nodes)
    for n in nodes[:3]:  # each has an effect of its own
        alone = evaluate_circuit(model, clean, corrupted, metric, [m for m in full.nodes if m != n])
        assert alone != base
    empty = acdc(model, clean, corrupted, metric, threshold=1e9, progress=False)
    assert (
        empty.n_heads == 0
        and empty.mlps == []
        and "embed" in empty.nodes
        and "logits" in empty.nodes
    )
    assert empty.metric_circuit == pytest.approx(
        evaluate_circuit(model, clean, corrupted, metric, empty.nodes), abs=1e-6
    )


def greedy_loop(model, clean, corrupted, threshold):
    """ACDC at node level the slow way: one evaluation per candidate."""
    d = model.dims
    nodes = {f"L{l}H{h}" for l in range(d.n_layers) for h in range(d.n_heads)}  # noqa: E741
    nodes |= {f"MLP{l}" for l in range(d.n_layers)} | {"embed", "logits"}  # noqa: E741
    if model.adapter.pos_embed is not None:
        nodes.add("pos_embed")
    clean_metric = mean_metric(model, clean).item()
    denom = abs(clean_metric - mean_metric(model, corrupted).item())
    current = clean_metric
    for layer in reversed(range(d.n_layers)):
        for node in [f"MLP{layer}", *(f"L{layer}H{h}" for h in reversed(range(d.n_heads)))]:
            value = evaluate_circuit(model, clean, corrupted, metric, nodes - {node})
            if abs(value - current) < threshold * denom:
                nodes.discard(node)
                current = value
    return nodes


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_batched_speculative_acdc_equals_the_greedy_loop(batch_size, pair):
    model = tiny_model("gpt2")
    clean, corrupted = pair
    for threshold in (0.02, 0.1, 0.3):
        expected = greedy_loop(model, clean, corrupted, threshold)
        got = acdc(
            model, clean, corrupted, metric, threshold, batch_size=batch_size, progress=False
        )
        assert set(got.nodes) == expected, threshold
        assert got.metric_circuit == pytest.approx(
            evaluate_circuit(model, clean, corrupted, metric, got.nodes), abs=1e-6
        )


def test_edge_scores_order_and_prune_candidates(llama, pair):
    clean, corrupted = pair
    scores = edge_attribution_patching(llama, clean, corrupted, metric, progress=False)
    node_scores = scores.node_scores()
    circuit = acdc(
        llama,
        clean,
        corrupted,
        metric,
        1e9,
        edge_scores=scores,
        try_quantile=0.5,
        order="scores",
        progress=False,
    )
    tried = {n for n in node_scores if n[0] in "LM"}
    cut = torch.tensor([node_scores[n] for n in tried]).quantile(0.5)
    assert {n for n in circuit.nodes if n[0] in "LM"} == {n for n in tried if node_scores[n] > cut}
    # edges of the circuit are the EAP edges between its nodes
    for s, r, v in circuit.edges:
        assert s in circuit.nodes and v == scores.score(s, r)


def test_circuit_from_scores_keeps_the_top_edges_without_dangling_nodes(llama, pair):
    clean, corrupted = pair
    scores = edge_attribution_patching(llama, clean, corrupted, metric, progress=False)
    circuit = circuit_from_scores(
        scores, top_k_edges=12, evaluate_on=(llama, clean, corrupted, metric)
    )
    top = scores.edges(top_k=12)
    assert set(circuit.edges) <= set(top)
    senders = {s for s, _, _ in circuit.edges}
    for node in circuit.nodes:
        if node not in ("logits", "embed"):
            assert node in senders
    assert circuit.metric_circuit == pytest.approx(
        evaluate_circuit(llama, clean, corrupted, metric, circuit.nodes), abs=1e-6
    )
    loose = circuit_from_scores(scores, threshold=0.0, prune_dangling=False)
    assert (
        len(loose.edges) == int(scores.valid.sum()) and loose.metric_circuit != loose.metric_circuit
    )


def test_circuit_and_scores_round_trip(tmp_path, llama, pair):
    clean, corrupted = pair
    scores = edge_attribution_patching(llama, clean, corrupted, metric, progress=False)
    scores.save(tmp_path / "scores.safetensors")
    again = EdgeScores.load(tmp_path / "scores.safetensors")
    assert torch.equal(again.scores, scores.scores) and again.receivers == scores.receivers
    assert again.edges(top_k=5) == scores.edges(top_k=5)
    flat = EdgeScores.load(tmp_path / "scores.safetensors", arrays="numpy")
    assert flat.edges(threshold=0.0) == scores.edges(threshold=0.0)
    assert flat.node_scores() == scores.node_scores()
    circuit = acdc(llama, clean, corrupted, metric, 0.05, edge_scores=scores, progress=False)
    path = circuit.save(tmp_path / "circuit")
    assert path.name == "circuit.safetensors"
    loaded = Circuit.load(path)
    assert loaded == circuit and all(isinstance(e, tuple) for e in loaded.edges)
    assert Circuit.load(path, arrays="numpy").summary() == circuit.summary()
    assert json.loads(circuit.to_json())["faithfulness"] == circuit.faithfulness
    assert Circuit.from_json(circuit.to_json()) == circuit
    assert "faithfulness" in repr(circuit) and "<table>" in circuit._repr_html_()


def test_draw_writes_png_svg_and_html(tmp_path, llama, pair):
    clean, corrupted = pair
    circuit = acdc(llama, clean, corrupted, metric, 0.05, progress=False)
    paths = circuit.figure(tmp_path / "circuit", node_labels={"L1H0": "mover"})["circuit"]
    assert sorted(paths) == ["html", "png", "svg"]
    for path in paths.values():
        assert path.exists() and path.stat().st_size > 0
    assert "mover" in paths["html"].read_text()


def test_post_norm_families_are_refused(pair):
    model = tiny_model("gemma3")
    clean, corrupted = pair
    with pytest.raises(ms.MechscopeError, match="post-norm"):
        edge_attribution_patching(model, clean, corrupted, metric)
    with pytest.raises(ms.InputError, match="unknown nodes"):
        evaluate_circuit(tiny_model("llama"), clean, corrupted, metric, ["L9H0"])


# --- SmolLM2 (marked `model`) -----------------------------------------------------------

NAMES = ["Mary", "John", "Alice", "Bob", "James", "Sarah", "Tom", "Anna", "David", "Emma"]
NAMES += ["Kate", "Paul", "Lisa", "Mark", "Peter", "Jane", "Michael", "Laura", "Daniel", "Rachel"]
TEMPLATE = "When {A} and {B} went to the {P}, {S} gave a {O} to"


def ioi_prompts(model, n: int = 16, seed: int = 0):
    """IOI prompts (ABBA and BABA) with ABC corruptions, and logit(IO) − logit(S) at the end."""
    import random

    rng = random.Random(seed)
    clean, corrupted, io, s = [], [], [], []
    for i in range(n):
        a, b, c, d, e = rng.sample(NAMES, 5)
        fill = {"P": rng.choice(["store", "park", "school", "beach"])}
        fill["O"] = rng.choice(["drink", "book", "ball", "gift"])
        first, second = (a, b) if i % 2 == 0 else (b, a)
        clean.append(TEMPLATE.format(A=first, B=second, S=b, **fill))
        corrupted.append(TEMPLATE.format(A=c, B=d, S=e, **fill))
        io.append(model.to_single_token(f" {a}"))
        s.append(model.to_single_token(f" {b}"))
    clean_ids, corrupt_ids = model.to_tokens(clean), model.to_tokens(corrupted)
    assert (clean_ids != model.pad_token_id).all() and clean_ids.shape == corrupt_ids.shape
    io_ids, s_ids = torch.tensor(io), torch.tensor(s)

    def logit_diff(logits: torch.Tensor) -> torch.Tensor:
        tile = logits.shape[0] // n  # ACDC hands the metric experiment-major copies of the batch
        rows = torch.arange(logits.shape[0])
        last = logits[:, -1]
        return last[rows, io_ids.repeat(tile)] - last[rows, s_ids.repeat(tile)]

    return clean_ids, corrupt_ids, logit_diff


@pytest.mark.model
def test_ioi_circuit_on_smollm2_keeps_80_percent_with_under_10_percent_of_heads(smollm2):
    clean, corrupted, logit_diff = ioi_prompts(smollm2)
    scores = edge_attribution_patching(smollm2, clean, corrupted, logit_diff, progress=False)
    assert scores.metric_clean > 3 and scores.metric_corrupted < 1
    circuit = acdc(
        smollm2,
        clean,
        corrupted,
        logit_diff,
        threshold=0.03,
        edge_scores=scores,
        order="scores",
        include_mlps=False,  # MLPs stay; heads are pruned
        last_only=True,
        progress=False,
    )
    assert circuit.n_heads <= 27 and circuit.ratio >= 0.8, circuit
    # the late heads that write the answer are in it
    assert {"L23H3", "L29H1"} <= set(circuit.heads)


def test_version_1_circuits_load_with_heads_renamed(tmp_path):
    import json

    from safetensors.numpy import save_file

    from mechscope.patching.results import Circuit

    record = {
        "nodes": ["embed", "a0.1", "m1", "logits"],
        "edges": [{"__tuple__": ["a0.1", "a1.0.k", 0.5]}, {"__tuple__": ["m1", "logits", 0.25]}],
        "metric_model": 2.0, "metric_circuit": 1.5, "metric_corrupted": 0.0,
        "n_layers": 2, "heads_per_layer": 4,
    }  # fmt: skip
    meta = {"format": "mechscope.circuit/1", "record": record}
    path = tmp_path / "old.safetensors"
    save_file({}, str(path), metadata={"mechscope": json.dumps(meta)})
    old = Circuit.load(path)
    assert old.nodes == ["embed", "L0H1", "MLP1", "logits"]
    assert old.edges == [("L0H1", "L1H0.k", 0.5), ("MLP1", "logits", 0.25)]
    assert old.heads == ["L0H1"] and old.mlps == ["MLP1"]

"""A graph run folder: the graph, its check by intervention, its figure and exports.

``graph_run`` writes ``graph.safetensors`` (`AttributionGraph`),
``check.safetensors`` (`GraphCheck`), ``neuronpedia.json`` and
``figures/graph.{png,svg,html}``; with a harvest of the transcoder latents, each
latent is labelled by the tokens its top examples peak on, and the run records
the harvest's folder so that the viewer links every node to its feature page.

Example::

    path = graph_run(model, tcs, "The capital of France is", "runs/graph",
                     harvest="runs/tc-harvest")
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._arrays import as_numpy, atomic_file
from ..errors import InputError
from ..store import model_record, new_run, read_json_list
from .results import EMBEDDING, ERROR, FEATURE, GRAPH_FILE, LOGIT, AttributionGraph
from .validate import CHECK_FILE, GraphCheck, check_graph

if TYPE_CHECKING:
    from ..core.model import Model
    from ..transcoders.model import TranscoderSet

NEURONPEDIA_FILE = "neuronpedia.json"
SUPERNODES_FILE = "supernodes.json"
HEADS_FILE = "heads.json"


def latent_site(layer: int, name: str = "tc") -> str:
    """The site of layer `layer`'s transcoder latents: ``blocks.{layer}.mlp.{name}.latents``.

    Example: ``latent_site(3)`` → ``"blocks.3.mlp.tc.latents"``.
    """
    return f"blocks.{layer}.mlp.{name}.latents"


def harvest_labels(graph: AttributionGraph, harvest: str | Path, n: int = 3) -> dict[str, str]:
    """Labels for the graph's latents from a harvest of ``blocks.L.mlp.tc.latents``: the
    tokens the top examples peak on, most frequent first (latents not harvested: none).

    Example: ``harvest_labels(g, "runs/tc-harvest")["20_88_6"]`` → ``"' Paris' ' France'"``.
    """
    from ..harvest.tables import open_harvest

    store = open_harvest(harvest)
    labels: dict[str, str] = {}
    layer, index = as_numpy(graph.layer).astype(int), as_numpy(graph.index).astype(int)
    for i in graph.nodes_of(FEATURE):
        site = latent_site(int(layer[i]))
        if site not in store.sites or not 0 <= int(index[i]) < store.n_units(site):
            continue
        rec = store.unit(site, int(index[i]))
        peaks = Counter(ex.tokens[ex.max_pos] for ex in rec.top if 0 <= ex.max_pos < len(ex.tokens))
        if peaks:
            labels[graph.node_id(i)] = " ".join(repr(t) for t, _ in peaks.most_common(n))
    return labels


def graph_run(
    model: Model,
    transcoders: TranscoderSet,
    prompt: str,
    out: str | Path,
    *,
    harvest: str | Path | None = None,
    check_top: int = 10,
    slug: str | None = None,
    source: str = "",
    heads: int = 0,
    **options: Any,
) -> Path:
    """Build, check, label and write one prompt's graph; the finished folder.

    `options` go to `attribution_graph` (logits, max_feature_nodes, batch, thresholds);
    `check_top` latents are checked by zero-ablation (0: no check); the `heads`
    strongest edges between positions are split by the attention heads that carry them
    (`cross_position_heads`, written to ``heads.json``).

    Example: ``graph_run(model, tcs, "When Mary and John went to the store, John gave a drink to",
    "runs/graph-ioi", logits=[" Mary"])``.
    """
    from .attribute import attribution_graph

    if harvest is not None and not Path(harvest).is_dir():
        raise InputError(f"--harvest {harvest}: no such harvest folder")
    record = {"model": model_record(model), "prompt": prompt, "transcoders": source,
              "harvest": str(harvest) if harvest else None, "check_top": check_top,
              "options": {k: v for k, v in options.items() if k != "progress"}}  # fmt: skip
    with new_run("graph", out, record) as run:
        t0 = time.perf_counter()
        graph = attribution_graph(model, transcoders, prompt, source=source, **options)
        run.timed("graph", t0)
        if harvest is not None:
            graph = graph.with_labels(harvest_labels(graph, harvest))
        graph.save(run.dir / GRAPH_FILE)
        graph.to_neuronpedia(run.dir / NEURONPEDIA_FILE, slug=slug or Path(out).name)
        check = None
        if check_top:
            t0 = time.perf_counter()
            check = check_graph(model, transcoders, graph, top=check_top)
            check.save(run.dir / CHECK_FILE)
            run.timed("check", t0)
        if heads:
            t0 = time.perf_counter()
            carried = cross_position_heads(model, transcoders, graph, heads)
            run.write_json(HEADS_FILE, carried)
            run.timed("heads", t0)
        plot_graph(graph, run.figures / "graph")
        run.extra.update({"scores": graph.scores, "config": graph.config,
                          "check": {"logit": check.logit_correlation,
                                    "downstream": check.downstream_correlation} if check else None})  # fmt: skip
        return run.finish()


def cross_position_heads(
    model: Model, transcoders: TranscoderSet, graph: AttributionGraph, n: int, top: int = 5
) -> list[dict[str, Any]]:
    """The `n` strongest pruned edges between two positions (by normalised weight times the
    target's influence plus logit weight), each with the `top` heads carrying most of it.

    Example: ``cross_position_heads(model, tcs, g, 3)[0]["heads"][0]`` →
    ``{"head": "L23H0", "carries": 0.41, "share": 0.6}``.
    """
    from .attribute import head_contributions
    from .prune import normalized

    adj = as_numpy(graph.adjacency)
    mask = as_numpy(graph.edge_mask).astype(bool)
    pos = as_numpy(graph.pos).astype(int)
    weight = np.zeros(graph.n_nodes)
    logits = graph.nodes_of(LOGIT)
    weight[logits] = as_numpy(graph.activation)[logits]
    score = as_numpy(normalized(_torch(adj))) * (as_numpy(graph.influence) + weight)[:, None]
    score = np.where(mask & (pos[:, None] != pos[None, :]), score, 0.0)
    order = np.argsort(-score, axis=None)[:n]
    edges = [(int(s), int(t)) for t, s in zip(*np.unravel_index(order, score.shape), strict=True)
             if score[t, s] > 0]  # fmt: skip
    if not edges:
        return []
    shares = head_contributions(model, transcoders, graph, edges)
    out = []
    for (s, t), per in zip(edges, shares, strict=True):
        flat = per.flatten()
        best = flat.abs().argsort(descending=True)[:top].tolist()
        n_heads = per.shape[1]
        w = float(adj[t, s])
        out.append({
            "source": graph.node_id(s), "target": graph.node_id(t), "weight": w,
            "source_name": graph.describe(s), "target_name": graph.describe(t),
            "heads": [{"head": f"L{k // n_heads}H{k % n_heads}", "carries": float(flat[k]),
                       "share": float(flat[k]) / w if w else float("nan")} for k in best],
        })  # fmt: skip
    return out


def _torch(a: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(a))


def open_graph_run(path: str | Path) -> tuple[AttributionGraph, GraphCheck | None]:
    """The graph (with the supernodes saved beside it) and its check, when there is one,
    of a graph run folder.

    Example: ``graph, check = open_graph_run("runs/graph")``.
    """
    path = Path(path)
    if not (path / GRAPH_FILE).is_file():
        raise InputError(f"{path} is not a graph run folder (no {GRAPH_FILE})")
    graph = AttributionGraph.load(path / GRAPH_FILE, arrays="numpy")
    if (path / SUPERNODES_FILE).is_file():
        groups = read_json_list(path / SUPERNODES_FILE, "supernodes", "[name, node id, …] groups")
        graph = graph.with_supernodes(groups)
    check = (
        GraphCheck.load(path / CHECK_FILE, arrays="numpy")
        if (path / CHECK_FILE).is_file()
        else None
    )
    return graph, check


def save_supernodes(path: str | Path, groups: list[list[str]]) -> Path:
    """Save supernodes (``[name, node id, …]`` groups, checked against the run's graph) in a
    graph run folder, replacing the ones saved before; the file written.

    Example: ``save_supernodes("runs/graph", [["France", "3_11_4", "5_90_4"]])``.
    """
    if not isinstance(path, (str, Path)):
        raise InputError(f"path must be a graph run folder, got {type(path).__name__}")
    path = Path(path)
    if not (path / GRAPH_FILE).is_file():
        raise InputError(f"{path} is not a graph run folder (no {GRAPH_FILE})")
    # the graph alone: a damaged supernodes.json is replaced, not read
    graph = AttributionGraph.load(path / GRAPH_FILE, arrays="numpy")
    if not isinstance(groups, list):
        raise InputError(f"supernodes are a list of [name, node id, …] groups, got {groups!r}")
    checked = graph.with_supernodes(groups).supernodes
    target = path / SUPERNODES_FILE
    with atomic_file(target) as tmp:
        tmp.write_text(json.dumps(checked, indent=1))
    return target


# --- the figure ------------------------------------------------------------------------


def _layout(graph: AttributionGraph) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of every node: x = position (latents of one cell spread apart), y = layer."""
    kind = as_numpy(graph.kind).astype(int)
    layer = as_numpy(graph.layer).astype(float)
    pos = as_numpy(graph.pos).astype(float)
    x, y = pos.copy(), layer.copy()
    y[kind == EMBEDDING] = -1.0
    y[kind == ERROR] += 0.35
    keep = as_numpy(graph.node_mask).astype(bool)
    cells: dict[tuple[int, int], list[int]] = {}
    for i in np.flatnonzero(keep & ((kind == FEATURE) | (kind == LOGIT))):
        cells.setdefault((int(layer[i]), int(pos[i])), []).append(int(i))
    for members in cells.values():
        for j, i in enumerate(members):
            x[i] = pos[i] + (j - (len(members) - 1) / 2) * min(0.8 / len(members), 0.15)
    return x, y


def plot_graph(graph: AttributionGraph, path: str | Path) -> dict[str, Path]:
    """The pruned graph as PNG/SVG (matplotlib) and interactive HTML (plotly): positions
    across, layers up, edge widths by |weight|, blue positive and red negative.

    Example: ``plot_graph(g, "runs/graph/figures/graph")``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go
    from matplotlib.collections import LineCollection

    from ..figures import save_html, save_static

    stem = Path(path)
    x, y = _layout(graph)
    kind = as_numpy(graph.kind).astype(int)
    keep = np.flatnonzero(as_numpy(graph.node_mask).astype(bool))
    edges = graph.edges(pruned=True)
    top = max((abs(w) for _, _, w in edges), default=1.0) or 1.0
    colors = {FEATURE: "#4c72b0", ERROR: "#999999", EMBEDDING: "#55a868", LOGIT: "#c44e52"}
    fig, ax = plt.subplots(figsize=(max(6, len(graph.tokens) * 0.9), 7))
    # one collection of segments, not one artist per edge (a graph has tens of thousands)
    ax.add_collection(LineCollection(
        [[(x[s], y[s]), (x[t], y[t])] for s, t, _ in edges],
        colors=["#1f77b4" if w > 0 else "#d62728" for _, _, w in edges], alpha=0.5,
        linewidths=[0.3 + 3 * abs(w) / top for _, _, w in edges],
    ))  # fmt: skip
    ax.scatter(x[keep], y[keep], c=[colors[int(kind[i])] for i in keep], s=30, zorder=3)
    ax.set_xticks(
        range(len(graph.tokens)), [repr(t) for t in graph.tokens], rotation=60, fontsize=8
    )
    ax.set_ylabel("layer (embeddings −1, logits top)")
    ax.set_title(
        f"{graph.prompt!r}: replacement {graph.scores.get('pruned_replacement', float('nan')):.2f}"
    )
    out = save_static(fig, stem, dpi=120)
    pfig = go.Figure()
    for s, t, w in edges:
        pfig.add_trace(go.Scatter(
            x=[x[s], x[t]], y=[y[s], y[t]], mode="lines", hoverinfo="skip", showlegend=False,
            line={"width": 0.5 + 4 * abs(w) / top, "color": "#1f77b4" if w > 0 else "#d62728"},
            opacity=0.5,
        ))  # fmt: skip
    pfig.add_trace(go.Scatter(
        x=x[keep], y=y[keep], mode="markers", showlegend=False,
        marker={"color": [colors[int(kind[i])] for i in keep], "size": 9},
        text=[graph.describe(int(i)) for i in keep], hoverinfo="text",
    ))  # fmt: skip
    pfig.update_layout(
        title=f"attribution graph: {graph.prompt!r}",
        xaxis={"tickvals": list(range(len(graph.tokens))), "ticktext": list(graph.tokens)},
        yaxis={"title": "layer"},
    )
    out["html"] = save_html(pfig, stem)
    return out

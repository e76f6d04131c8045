"""`AttributionGraph`: one prompt's graph of direct effects, readable without torch.

Nodes are numbered latents first (ordered by layer, position, index), then
errors (layer-major), then token embeddings, then logits; ``kind`` says which
(FEATURE 0, ERROR 1, EMBEDDING 2, LOGIT 3). ``adjacency[t, s]`` is the direct
effect of node s on node t (rows only for latents and logits). The pruned
graph is ``node_mask`` / ``edge_mask``. `to_neuronpedia` writes the JSON that
Neuronpedia's graph viewer (and circuit-tracer's local one) reads.

Example::

    g = AttributionGraph.load("runs/graph/graph.safetensors", arrays="numpy")
    g.scores, g.top_features(5), g.to_neuronpedia("graph.json", slug="capital")
"""

from __future__ import annotations

import dataclasses
import json
import math
import unicodedata
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._arrays import as_numpy, atomic_file
from ..errors import InputError
from ..results import Result, result

if TYPE_CHECKING:
    from jaxtyping import Bool, Float, Int
    from torch import Tensor

FEATURE, ERROR, EMBEDDING, LOGIT = 0, 1, 2, 3
"""The kinds of node (`AttributionGraph.kind`)."""
FORMAT = "mechscope.attribution_graph/1"
GRAPH_FILE = "graph.safetensors"
KIND_NAMES = {FEATURE: "feature", ERROR: "error", EMBEDDING: "embedding", LOGIT: "logit"}
__all__ = ["EMBEDDING", "ERROR", "FEATURE", "LOGIT", "AttributionGraph", "GRAPH_FILE"]


@result
class AttributionGraph(Result):
    """The nodes, the dense adjacency and the pruned masks of one prompt's graph.

    Per node [node]: ``kind``, ``layer`` (−1 for embeddings, n_layers for logits),
    ``pos``, ``index`` (latent index; token id for embeddings and logits; −1 for
    errors), ``activation`` (the latent's value; the norm of an error's or an
    embedding's write; a logit's probability), ``value`` (a target's pre-activation
    or demeaned logit), ``bias`` (value minus the sum of its in-edges: the biases),
    ``influence`` on the logits. ``labels`` maps node ids to names (from harvests or
    explanations); ``supernodes`` holds ``[name, node id, …]`` groups.

    Example: ``g.describe(g.top_features(1)[0]["node"])`` → ``"L12 #301 @ ' France' (4)"``.
    """

    format = FORMAT
    model: str
    prompt: str
    tokens: list[str]
    token_ids: list[int]
    n_layers: int
    transcoders: str
    kind: Int[Tensor, " node"]
    layer: Int[Tensor, " node"]
    pos: Int[Tensor, " node"]
    index: Int[Tensor, " node"]
    activation: Float[Tensor, " node"]
    value: Float[Tensor, " node"]
    bias: Float[Tensor, " node"]
    influence: Float[Tensor, " node"]
    adjacency: Float[Tensor, "node node"]
    node_mask: Bool[Tensor, " node"]
    edge_mask: Bool[Tensor, "node node"]
    scores: dict[str, float]
    node_threshold: float
    edge_threshold: float
    labels: dict[str, str] = field(default_factory=dict)
    supernodes: list[list[str]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = int(self.kind.shape[0]) if len(self.kind.shape) == 1 else -1
        if n < 0:
            raise InputError(f"kind should be [node], got shape {list(self.kind.shape)}")
        for name in ("layer", "pos", "index", "activation", "value", "bias", "influence",
                     "node_mask"):  # fmt: skip
            shape = list(getattr(self, name).shape)
            if shape != [n]:
                raise InputError(f"{name} should be [node={n}], got shape {shape}")
        for name in ("adjacency", "edge_mask"):
            shape = list(getattr(self, name).shape)
            if shape != [n, n]:
                raise InputError(f"{name} should be [node, node] = [{n}, {n}], got {shape}")
        kinds = set(as_numpy(self.kind).astype(int).tolist())
        if not kinds <= set(KIND_NAMES):
            raise InputError(f"kind holds {sorted(kinds - set(KIND_NAMES))}; valid: 0..3")
        if len(self.tokens) != len(self.token_ids):
            raise InputError(f"{len(self.tokens)} tokens but {len(self.token_ids)} token ids")
        for group in self.supernodes:
            if not isinstance(group, list) or len(group) < 2:
                raise InputError(f"a supernode is [name, node id, …], got {group!r}")

    # --- reading nodes ------------------------------------------------------------------

    @property
    def n_nodes(self) -> int:
        return int(self.kind.shape[0])

    def _np(self, name: str) -> np.ndarray:
        return as_numpy(getattr(self, name))

    def node_id(self, i: int) -> str:
        """Neuronpedia's id of node i: ``{layer}_{latent}_{pos}``, ``{layer}_-1_{pos}`` (error),
        ``E_{token}_{pos}``, ``{n_layers + 1}_{token}_{pos}`` (logit).

        Example: ``g.node_id(0)`` → ``"0_117_3"``.
        """
        kind, layer, pos, index = (int(self._np(k)[i]) for k in ("kind", "layer", "pos", "index"))
        if kind == FEATURE:
            return f"{layer}_{index}_{pos}"
        if kind == ERROR:
            return f"{layer}_-1_{pos}"
        if kind == EMBEDDING:
            return f"E_{index}_{pos}"
        return f"{self.n_layers + 1}_{index}_{pos}"

    def node_ids(self) -> list[str]:
        """Every node's id (`node_id`), in node order."""
        return [self.node_id(i) for i in range(self.n_nodes)]

    def find(self, node_id: str) -> int:
        """The node number of a Neuronpedia id; InputError naming a few valid ones otherwise.

        Example: ``g.find("3_117_5")`` → 42.
        """
        ids = self.node_ids()
        if node_id not in ids:
            raise InputError(f"no node {node_id!r} in this graph; e.g. {', '.join(ids[:3])}")
        return ids.index(node_id)

    def describe(self, i: int) -> str:
        """A short human name for node i, with its label when it has one.

        Example: ``g.describe(0)`` → ``"L0 #117 @ ' capital' (3)"``.
        """
        kind, layer, pos, index = (int(self._np(k)[i]) for k in ("kind", "layer", "pos", "index"))
        tok = self.tokens[pos] if 0 <= pos < len(self.tokens) else "?"
        label = self.labels.get(self.node_id(i))
        if kind == FEATURE:
            name = f"L{layer} #{index} @ {tok!r} ({pos})"
        elif kind == ERROR:
            name = f"L{layer} error @ {tok!r} ({pos})"
        elif kind == EMBEDDING:
            name = f"token {tok!r} ({pos})"
        else:
            name = f"logit {self.logit_token(i)!r}"
        return f"{name}: {label}" if label else name

    def logit_token(self, i: int) -> str:
        """The text of logit node i's token (from the config's logit texts when present)."""
        texts = self.config.get("logit_texts", {})
        return str(texts.get(str(int(self._np("index")[i])), int(self._np("index")[i])))

    def nodes_of(self, kind: int, pruned: bool = False) -> list[int]:
        """Node numbers of one kind (FEATURE, ERROR, EMBEDDING, LOGIT), optionally pruned."""
        sel = self._np("kind").astype(int) == kind
        if pruned:
            sel &= self._np("node_mask").astype(bool)
        return [int(i) for i in np.flatnonzero(sel)]

    def top_features(self, n: int = 10, pruned: bool = True) -> list[dict[str, Any]]:
        """The `n` latents of highest influence on the logits, as rows.

        Example: ``g.top_features(3)[0]`` → ``{"node": 12, "id": "20_88_6", "layer": 20, …}``.
        """
        infl = self._np("influence")
        picked = sorted(self.nodes_of(FEATURE, pruned), key=lambda i: -float(infl[i]))[:n]
        return [self.row(i) for i in picked]

    def row(self, i: int) -> dict[str, Any]:
        """Node i as a dict (id, kind, layer, pos, token, index, activation, influence, label)."""
        pos = int(self._np("pos")[i])
        return {
            "node": i,
            "id": self.node_id(i),
            "kind": KIND_NAMES[int(self._np("kind")[i])],
            "layer": int(self._np("layer")[i]),
            "pos": pos,
            "token": self.tokens[pos] if 0 <= pos < len(self.tokens) else "",
            "index": int(self._np("index")[i]),
            "activation": float(self._np("activation")[i]),
            "influence": float(self._np("influence")[i]),
            "label": self.labels.get(self.node_id(i), ""),
        }

    def edges(self, pruned: bool = True) -> list[tuple[int, int, float]]:
        """(source, target, weight) of every edge (of the pruned graph by default)."""
        adj = self._np("adjacency")
        mask = self._np("edge_mask").astype(bool) if pruned else adj != 0
        t, s = np.nonzero(mask)
        return [(int(a), int(b), float(adj[b, a])) for a, b in zip(s, t, strict=True)]

    def strongest_paths(self, n: int = 5, target: int | None = None) -> list[list[int]]:
        """The `n` paths into `target` (default: the top logit) of largest product of
        normalised edge weights in the pruned graph, each from a source to the target.

        Example: ``[g.describe(i) for i in g.strongest_paths(1)[0]]``.
        """
        adj = np.abs(self._np("adjacency")) * self._np("edge_mask").astype(bool)
        rows = adj.sum(1, keepdims=True)
        norm = np.divide(adj, rows, out=np.zeros_like(adj), where=rows > 0)
        if target is None:
            logits = self.nodes_of(LOGIT)
            acts = self._np("activation")
            target = max(logits, key=lambda i: float(acts[i]))
        # best path products ending at `target`, by dynamic programming down the layers
        found: list[tuple[float, list[int]]] = []
        stack: list[tuple[float, list[int]]] = [(1.0, [target])]
        while stack:
            score, path = stack.pop()
            head = path[0]
            srcs = np.flatnonzero(norm[head] > 0)
            if not len(srcs):
                if len(path) > 1:
                    found.append((score, path))
                continue
            best = srcs[np.argsort(-norm[head, srcs])][:3]
            for s in best:
                stack.append((score * float(norm[head, s]), [int(s), *path]))
            if len(stack) > 5000:
                break
        found.sort(key=lambda x: -x[0])
        return [p for _, p in found[:n]]

    # --- edits ---------------------------------------------------------------------------

    def with_labels(self, labels: dict[str, str]) -> AttributionGraph:
        """A copy with `labels` (node id → name) merged in.

        Example: ``g.with_labels({"20_88_6": "Paris"})``.
        """
        if not isinstance(labels, dict):
            raise InputError(
                f"labels must be a dict of node id → text, got {type(labels).__name__}"
            )
        ids = set(self.node_ids())
        for key, text in labels.items():
            if not isinstance(key, str) or key not in ids:
                raise InputError(f"labels: no node {key!r} in this graph")
            if not isinstance(text, str):
                raise InputError(f"labels: the label of {key!r} must be text, got {text!r}")
        return dataclasses.replace(self, labels={**self.labels, **labels})

    def with_supernodes(self, groups: list[list[str]]) -> AttributionGraph:
        """A copy whose supernodes are `groups` (``[name, node id, …]``; ids must exist).

        Example: ``g.with_supernodes([["France", "3_11_4", "5_90_4"]])``.
        """
        check_supernodes(groups, set(self.node_ids()))
        return dataclasses.replace(self, supernodes=[list(g) for g in groups])

    # --- export -----------------------------------------------------------------------

    def neuronpedia(self, slug: str = "mechscope-graph", pruned: bool = True) -> dict[str, Any]:
        """The graph as Neuronpedia's graph JSON (metadata, qParams, nodes, links).

        Example: ``g.neuronpedia("capital")["nodes"][0]["feature_type"]``.
        """
        keep = self._np("node_mask").astype(bool) if pruned else np.ones(self.n_nodes, bool)
        acts, infl = self._np("activation"), self._np("influence")
        nodes = []
        for i in np.flatnonzero(keep):
            i = int(i)
            kind, layer, pos, index = (
                int(self._np(k)[i]) for k in ("kind", "layer", "pos", "index")
            )
            nid = self.node_id(i)
            node: dict[str, Any] = {
                "node_id": nid, "ctx_idx": pos, "run_idx": 0, "reverse_ctx_idx": 0,
                "influence": _finite(infl[i]), "clerp": self.labels.get(nid, ""),
                "token_prob": 0.0, "is_target_logit": False,
            }  # fmt: skip
            if kind == FEATURE:
                node.update(feature=_cantor(layer, index), layer=str(layer),
                            feature_type="cross layer transcoder",
                            jsNodeId=f"{layer}_{index}-0", activation=_finite(acts[i]))  # fmt: skip
            elif kind == ERROR:
                node.update(feature=-1, layer=str(layer), feature_type="mlp reconstruction error",
                            jsNodeId=f"{layer}_-1-{pos}")  # fmt: skip
            elif kind == EMBEDDING:
                node.update(feature=pos, layer="E", feature_type="embedding",
                            jsNodeId=f"E_{index}-{pos}")  # fmt: skip
            else:
                p = float(acts[i])
                top = p == float(max(acts[j] for j in self.nodes_of(LOGIT)))
                node.update(feature=index, layer=str(self.n_layers + 1), feature_type="logit",
                            jsNodeId=f"L_{index}-{pos}", token_prob=p, is_target_logit=top,
                            clerp=f'Output "{self.logit_token(i)}" (p={p:.3f})')  # fmt: skip
            nodes.append(node)
        ids = self.node_ids()
        adj = self._np("adjacency")
        mask = self._np("edge_mask").astype(bool) if pruned else adj != 0
        links = [
            {"source": ids[int(s)], "target": ids[int(t)], "weight": float(adj[t, s])}
            for t, s in zip(*np.nonzero(mask), strict=True)
        ]
        pinned = [self.node_id(r["node"]) for r in self.top_features(5)]
        return {
            "metadata": {
                "slug": slug, "scan": self.model, "transcoder_list": [self.transcoders],
                "prompt_tokens": list(self.tokens), "prompt": self.prompt,
                "node_threshold": self.node_threshold, "schema_version": 1,
                "info": {"creator_name": "mechscope", "generator": {"name": "mechscope"}},
            },
            "qParams": {
                "pinnedIds": pinned, "supernodes": [list(g) for g in self.supernodes],
                "linkType": "both", "clickedId": pinned[0] if pinned else "", "sg_pos": "",
            },
            "nodes": nodes,
            "links": links,
        }  # fmt: skip

    def to_neuronpedia(self, path: str | Path, slug: str = "mechscope-graph") -> Path:
        """Write `neuronpedia` (the pruned graph) as JSON to `path`; returns the path.

        Example: ``g.to_neuronpedia("runs/graph/neuronpedia.json", slug="capital")``.
        """
        path = Path(path)
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(self.neuronpedia(slug)))
        return path

    # --- display ------------------------------------------------------------------------

    def summary(self) -> str:
        n_f = len(self.nodes_of(FEATURE))
        kept = self._np("node_mask").astype(bool).sum()
        edges = int(self._np("edge_mask").astype(bool).sum())
        s = self.scores
        logits = ", ".join(
            f"{self.logit_token(i)!r} {float(self._np('activation')[i]):.2f}"
            for i in self.nodes_of(LOGIT)[:3]
        )
        return (
            f"AttributionGraph({self.model}, {self.prompt!r}: {n_f} latents expanded of "
            f"{self.config.get('active_features', n_f)} active; pruned to {kept} nodes, "
            f"{edges} edges; replacement {s.get('replacement', math.nan):.3f} "
            f"(pruned {s.get('pruned_replacement', math.nan):.3f}), completeness "
            f"{s.get('completeness', math.nan):.3f} "
            f"(pruned {s.get('pruned_completeness', math.nan):.3f}); logits {logits})"
        )


MAX_SUPERNODES = 500
MAX_NAME = 200


def check_supernodes(groups: Any, ids: set[str] | None = None) -> None:
    """Refuse supernodes that are not a list of ``[name, node id, …]`` groups with unique
    one-line names of 1..200 characters, at most 500 groups, each id once in its group (and,
    with `ids`, a node of the graph).

    Example: ``check_supernodes([["France", "3_11_4"]], {"3_11_4"})`` → None.
    """
    if not isinstance(groups, list):
        raise InputError(
            f"supernodes are a JSON list of [name, node id, …] groups, not a "
            f"{type(groups).__name__}"
        )
    if len(groups) > MAX_SUPERNODES:
        raise InputError(f"{len(groups)} supernodes; at most {MAX_SUPERNODES} are kept")
    seen: set[str] = set()
    for n, group in enumerate(groups, 1):
        if not isinstance(group, list) or len(group) < 2:
            raise InputError(
                f"supernode {n}: a group is [name, node id, …] with a node or more, got "
                f"{str(group)[:60]}"
            )
        name, members = group[0], group[1:]
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"supernode {n}: its name must be text, got {str(group)[:60]}")
        if len(name) > MAX_NAME:
            raise InputError(f"supernode {n}: a name has at most {MAX_NAME} characters")
        if any(unicodedata.category(ch) == "Cc" for ch in name):
            raise InputError(f"supernode {n}: a name is one line of text, without controls")
        if name in seen:
            raise InputError(f"two supernodes are named {name[:60]!r}; give each its own name")
        seen.add(name)
        held: set[str] = set()
        for m in members:
            if not isinstance(m, str) or (ids is not None and m not in ids):
                raise InputError(f"supernode {name[:60]!r}: no node {repr(m)[:60]} in this graph")
            if m in held:
                raise InputError(f"supernode {name[:60]!r} holds node {m!r} twice")
            held.add(m)


def _cantor(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


def _finite(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None

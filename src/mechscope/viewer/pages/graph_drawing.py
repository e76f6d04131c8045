"""The drawing of a graph run's page (pages/graph.py): the pruned graph placed for inline SVG.

Across, the token positions, each as wide as its fullest cell; up, the rows:
token embeddings at the bottom, layer L at row L + 1, logits at the top. The
template ``graph/svg.html`` draws what `layout` returns (numbers as strings,
text escaped by Jinja2).
"""

from __future__ import annotations

import math
import unicodedata
from typing import Any

import numpy as np

from ...graphs.results import EMBEDDING, ERROR, FEATURE, KIND_NAMES, LOGIT, AttributionGraph

MAX_EDGES = 4000  # the strongest edges drawn
# the drawing, in SVG user units
ROW_H, LEFT, TOP, BOTTOM, SPACING = 46, 56, 14, 58, 13
COLUMN = (48, 220)  # a position's width: at least, at most


def _row(kind: int, layer: int, n_layers: int) -> int:
    """The node's row from the bottom: embeddings 0, layer L at L + 1, logits at the top."""
    if kind == EMBEDDING:
        return 0
    if kind == LOGIT:
        return n_layers + 1
    return min(max(layer, 0), n_layers - 1) + 1


def _visible(token: str, limit: int) -> str:
    """A token as one line of SVG text: whitespace and control characters made visible, cut."""
    text = "".join(
        {"\n": "↵", "\r": "␍", "\t": "⇥"}.get(ch)
        or (f"\\x{ord(ch):02x}" if unicodedata.category(ch) == "Cc" else ch)
        for ch in token
    )
    text = text or "∅"
    return text if len(text) <= limit else text[: max(limit - 1, 1)] + "…"


def layout(graph: AttributionGraph) -> dict[str, Any]:
    """The pruned graph placed for the SVG: nodes (x, y, size, shape), edges, rows, tokens.

    A (row, position) cell holds its nodes side by side: latents by influence, then the
    error node; logits by probability. Each position is as wide as its fullest cell needs.

    Example: ``layout(g)["nodes"][0]`` → ``{"id": "0_17_16", "kind": "feature", "x": …}``.
    """
    kind = np.asarray(graph.kind).astype(int)
    layer = np.asarray(graph.layer).astype(int)
    pos = np.asarray(graph.pos).astype(int)
    act = np.asarray(graph.activation).astype(float)
    infl = np.asarray(graph.influence).astype(float)
    keep = np.flatnonzero(np.asarray(graph.node_mask).astype(bool))
    n_rows, n_pos = graph.n_layers + 2, max(len(graph.tokens), 1)
    cells: dict[tuple[int, int], list[int]] = {}
    for i in keep:
        i = int(i)
        cells.setdefault((_row(kind[i], layer[i], graph.n_layers), int(pos[i])), []).append(i)
    for members in cells.values():
        members.sort(key=lambda i: (kind[i] == ERROR, -(act[i] if kind[i] == LOGIT else infl[i])))
    fullest = [1] * n_pos
    for (_, p), members in cells.items():
        if 0 <= p < n_pos:
            fullest[p] = max(fullest[p], len(members))
    col_w = [float(min(max(n * SPACING + 16, COLUMN[0]), COLUMN[1])) for n in fullest]
    mid = [LEFT + sum(col_w[:p]) + col_w[p] / 2 for p in range(n_pos)]
    width = LEFT + sum(col_w) + 8
    height = TOP + n_rows * ROW_H + BOTTOM
    top_infl = max((infl[i] for i in keep if kind[i] == FEATURE), default=0.0) or 1.0
    top_prob = max((act[i] for i in keep if kind[i] == LOGIT), default=0.0) or 1.0
    ids = graph.node_ids()
    nodes, where = [], {}
    for (row, p), members in cells.items():
        p = min(max(p, 0), n_pos - 1)
        step = min(SPACING, (col_w[p] - 14) / max(len(members) - 1, 1))
        for j, i in enumerate(members):
            x = mid[p] + (j - (len(members) - 1) / 2) * step
            y = TOP + (n_rows - 1 - row + 0.5) * ROW_H
            k = int(kind[i])
            if k == FEATURE:
                size = 3.0 + 3.3 * math.sqrt(max(infl[i], 0.0) / top_infl)
            elif k == LOGIT:
                size = 3.5 + 3.0 * math.sqrt(max(act[i], 0.0) / top_prob)
            else:
                size = 4.5
            where[i] = (x, y)
            nodes.append({"id": ids[i], "kind": KIND_NAMES[k], "square": k == ERROR,
                          "x": f"{x:.1f}", "y": f"{y:.1f}", "r": f"{size:.1f}",
                          "sx": f"{x - 4:.1f}", "sy": f"{y - 4:.1f}",
                          "title": graph.describe(i)})  # fmt: skip
    edges = [e for e in graph.edges(pruned=True) if e[0] in where and e[1] in where]
    edges.sort(key=lambda e: abs(e[2]))
    dropped = max(len(edges) - MAX_EDGES, 0)
    edges = edges[dropped:]  # the strongest, drawn last (on top)
    top_w = max((abs(w) for _, _, w in edges), default=1.0) or 1.0
    lines = []
    for s, t, w in edges:
        share_w = abs(w) / top_w
        (x1, y1), (x2, y2) = where[s], where[t]
        lines.append({"s": ids[s], "t": ids[t], "cls": "pos" if w > 0 else "neg",
                      "x1": f"{x1:.1f}", "y1": f"{y1:.1f}", "x2": f"{x2:.1f}", "y2": f"{y2:.1f}",
                      "w": f"{0.4 + 3.6 * share_w:.2f}", "o": f"{0.18 + 0.6 * share_w:.2f}"})  # fmt: skip
    rows = [
        {"y": f"{TOP + (n_rows - 1 - r + 0.5) * ROW_H + 4:.1f}",
         "label": "emb" if r == 0 else "logits" if r == n_rows - 1 else f"L{r - 1}",
         "line": f"{TOP + (n_rows - 1 - r) * ROW_H:.1f}"}
        for r in range(n_rows)
    ]  # fmt: skip
    base = TOP + n_rows * ROW_H
    tokens = [
        {"x": f"{mid[p]:.1f}", "y": f"{base + 16:.1f}", "py": f"{base + 32:.1f}",
         "text": _visible(tok, max(int(col_w[p] / 7), 3)), "full": f"{p}: {tok!r}", "pos": p}
        for p, tok in enumerate(graph.tokens)
    ]  # fmt: skip
    return {"width": f"{width:.0f}", "height": f"{height:.0f}", "nodes": nodes, "edges": lines,
            "rows": rows, "tokens": tokens, "dropped": dropped, "left": LEFT,
            "right": f"{width - 8:.0f}"}  # fmt: skip

"""Drawing a `Circuit`: nodes on a layer × head grid, edges by |score| and sign.

Both renderings share one layout (`_Layout`): node positions (layers bottom to
top, heads left to right, the MLP at the right end), the drawn lines (a
key/value input goes to every kept head of its group), node classes and
colours. matplotlib writes the PNG and SVG, plotly the HTML with hover text.
Imported by `Circuit.draw` on first use; matplotlib and plotly only when drawing.

Example::

    draw(circuit, Path("runs/ioi/figures/circuit"), {"L23H0": "name_mover"}, None)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .nodes import NODE_RE, node_kind, receiver_nodes

if TYPE_CHECKING:
    from .results import Circuit

_SIGN_COLOURS = ("#d62728", "#1f77b4")  # positive, negative
_STYLES = {"k": "dashed", "v": "dotted"}
_PALETTE = ("#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def _position(node: str, n_layers: int, n_heads: int) -> tuple[float, float]:
    m = NODE_RE.match(node)
    assert m is not None, node
    if m.group(1) is not None:
        return float(m.group(2)), float(m.group(1))
    if m.group(3) is not None:
        return n_heads + 0.5, float(m.group(3))
    centre = (n_heads - 1) / 2
    return {
        "embed": (centre - 0.5, -1.5),
        "pos_embed": (centre + 1.0, -1.5),
        "logits": (centre, n_layers + 0.5),
    }[node]


def _segments(circuit: Circuit) -> list[tuple[str, str, str, float]]:
    """(sender, receiver node, input kind, score) per drawn line; k/v go to each kept head."""
    kept = set(circuit.nodes)
    out = []
    kv = circuit.kv_heads_per_layer or circuit.heads_per_layer
    for s, r, v in circuit.edges:
        kind = r.partition(".")[2] or "in"
        targets = receiver_nodes(r, circuit.heads_per_layer, kv)
        out += [(s, t, kind, v) for t in targets if t in kept]
    return out


def _classes(circuit: Circuit, labels: dict[str, str]) -> dict[str, str]:
    return {n: labels.get(n, node_kind(n)) for n in circuit.nodes}


@dataclass(frozen=True)
class _Layout:
    """What both renderings share: node positions, drawn lines, node classes and colours."""

    pos: dict[str, tuple[float, float]]
    segments: list[tuple[str, str, str, float]]
    top: float  # the largest |score|
    classes: dict[str, str]
    colours: dict[str, str]
    grid: list[tuple[float, float]]  # every head and MLP slot, drawn faintly

    @classmethod
    def of(cls, circuit: Circuit, labels: dict[str, str]) -> _Layout:
        n_layers, n_heads = circuit.n_layers, circuit.heads_per_layer
        segments = _segments(circuit)
        classes = _classes(circuit, labels)
        colours = {
            c: _PALETTE[i % len(_PALETTE)] for i, c in enumerate(dict.fromkeys(classes.values()))
        }
        colours["input/output"] = "#333333"
        grid = [(float(h), float(layer)) for layer in range(n_layers) for h in range(n_heads)]
        grid += [(n_heads + 0.5, float(layer)) for layer in range(n_layers)]
        return cls(
            pos={n: _position(n, n_layers, n_heads) for n in circuit.nodes},
            segments=segments,
            top=max((abs(v) for *_, v in segments), default=0.0) or 1.0,
            classes=classes,
            colours=colours,
            grid=grid,
        )

    def members(self, cls: str) -> list[str]:
        return [n for n, c in self.classes.items() if c == cls]


def draw(
    circuit: Circuit, path: Path, labels: dict[str, str], title: str | None
) -> dict[str, Path]:
    """Write `circuit` as ``path``.png/.svg and .html; `labels` give nodes a class (see `Circuit.draw`).

    Example::

        draw(circuit, Path("runs/ioi/figures/circuit"), {"L23H0": "name_mover"}, None)
        # {"png": …/circuit.png, "svg": …/circuit.svg, "html": …/circuit.html}
    """
    layout = _Layout.of(circuit, labels)
    title = title or circuit.summary()
    stem = path.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = _draw_matplotlib(circuit, layout, stem, title.replace("; ", "\n", 1))
    out["html"] = _draw_plotly(circuit, layout, stem.with_suffix(".html"), title)
    return out


def _draw_matplotlib(circuit: Circuit, layout: _Layout, stem: Path, title: str) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.colors import to_rgba

    n_layers, n_heads, pos = circuit.n_layers, circuit.heads_per_layer, layout.pos
    fig, ax = plt.subplots(
        figsize=(max(7.5, 0.75 * (n_heads + 5)), max(6.0, 0.32 * (n_layers + 4)))
    )
    ax.scatter(*zip(*layout.grid, strict=True), s=6, c="#dddddd", zorder=1)
    strongest_last = sorted(layout.segments, key=lambda e: abs(e[3]))
    if strongest_last:
        weights = [abs(v) / layout.top for *_, v in strongest_last]
        lines = LineCollection(
            [[pos[s], pos[t]] for s, t, _, _ in strongest_last],
            linewidths=[0.3 + 3.2 * w for w in weights],
            colors=[
                to_rgba(_SIGN_COLOURS[v < 0], 0.1 + 0.85 * w)
                for (*_, v), w in zip(strongest_last, weights, strict=True)
            ],
            linestyles=[_STYLES.get(kind, "solid") for _, _, kind, _ in strongest_last],
            zorder=2,
        )
        ax.add_collection(lines)
    for cls, colour in layout.colours.items():
        if members := layout.members(cls):
            xy = zip(*(pos[n] for n in members), strict=True)
            ax.scatter(*xy, s=60, c=colour, label=cls, zorder=3, edgecolors="k")
    for n in circuit.nodes:
        ax.annotate(n, pos[n], xytext=(4, 3), textcoords="offset points", fontsize=6, zorder=4)
    ax.set_xticks([*range(n_heads), n_heads + 0.5], [*map(str, range(n_heads)), "MLP"])
    ax.set_yticks(range(n_layers))
    ax.set_xlim(-1, n_heads + 1.5)
    ax.set_ylim(-2.2, n_layers + 1.2)
    ax.set(xlabel="head", ylabel="layer")
    ax.set_title(title, fontsize=8)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    fig.tight_layout()
    out = {}
    for fmt in ("png", "svg"):
        out[fmt] = stem.with_suffix(f".{fmt}")
        fig.savefig(out[fmt], dpi=120)
    plt.close(fig)
    return out


def _draw_plotly(circuit: Circuit, layout: _Layout, target: Path, title: str) -> Path:
    import plotly.graph_objects as go

    n_layers, n_heads, pos = circuit.n_layers, circuit.heads_per_layer, layout.pos
    fig = go.Figure()
    xs, ys = zip(*layout.grid, strict=True)
    grey = {"size": 4, "color": "#dddddd"}
    fig.add_trace(
        go.Scatter(x=xs, y=ys, mode="markers", marker=grey, hoverinfo="skip", showlegend=False)
    )
    # plotly styles whole traces: bin the lines by sign, input kind and width
    bins: dict[tuple[bool, str, int], list[tuple[str, str]]] = {}
    for s, t, kind, v in layout.segments:
        key = (v < 0, kind, min(4, int(5 * abs(v) / layout.top)))
        bins.setdefault(key, []).append((s, t))
    for (negative, kind, b), pairs in sorted(bins.items()):
        x = [c for s, t in pairs for c in (pos[s][0], pos[t][0], None)]
        y = [c for s, t in pairs for c in (pos[s][1], pos[t][1], None)]
        line = {"width": 0.5 + 0.9 * b, "color": _SIGN_COLOURS[negative]}
        line["dash"] = {"k": "dash", "v": "dot"}.get(kind, "solid")
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines",
                line=line,
                opacity=0.2 + 0.18 * b,
                hoverinfo="skip",
                showlegend=False,
            )
        )
    if layout.segments:  # hover targets at the middle of each line
        fig.add_trace(
            go.Scatter(
                x=[(pos[s][0] + pos[t][0]) / 2 for s, t, _, _ in layout.segments],
                y=[(pos[s][1] + pos[t][1]) / 2 for s, t, _, _ in layout.segments],
                mode="markers",
                marker={
                    "size": 5,
                    "opacity": 0.5,
                    "color": [_SIGN_COLOURS[v < 0] for *_, v in layout.segments],
                },
                text=[f"{s} → {t} ({k})<br>score {v:+.4g}" for s, t, k, v in layout.segments],
                hovertemplate="%{text}<extra></extra>",
                showlegend=False,
            )
        )
    strength = dict.fromkeys(circuit.nodes, 0.0)
    for s, t, _, v in layout.segments:
        strength[s] += abs(v)
        strength[t] += abs(v)
    for cls, colour in layout.colours.items():
        if members := layout.members(cls):
            fig.add_trace(
                go.Scatter(
                    x=[pos[n][0] for n in members],
                    y=[pos[n][1] for n in members],
                    mode="markers+text",
                    name=cls,
                    showlegend=True,
                    text=members,
                    textposition="top right",
                    textfont={"size": 8},
                    marker={"size": 11, "color": colour, "line": {"width": 1, "color": "black"}},
                    customdata=[[cls, strength[n]] for n in members],
                    hovertemplate="%{text}<br>%{customdata[0]}<br>Σ|edge score| %{customdata[1]:.4g}<extra></extra>",
                )
            )
    fig.update_layout(
        title={"text": title, "font": {"size": 12}},
        xaxis={
            "title": "head",
            "tickvals": [*range(n_heads), n_heads + 0.5],
            "ticktext": [*map(str, range(n_heads)), "MLP"],
        },
        yaxis={"title": "layer", "range": [-2.2, n_layers + 1.2]},
        width=max(600, 70 * (n_heads + 3)),
        height=max(600, 26 * (n_layers + 4)),
        plot_bgcolor="white",
    )
    fig.write_html(target, include_plotlyjs="directory", full_html=True)
    return target

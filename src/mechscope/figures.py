"""Figures: every figure is written as PNG, SVG and interactive HTML side by side.

PNG/SVG come from matplotlib (Agg, no screen); HTML from plotly, with
plotly.js written once beside the pages (``include_plotlyjs="directory"``) so
the pages work offline. This module holds the writers (`figure_stem`,
`save_static`, `save_html`) and the figures of numbers and tokens (heatmaps,
lines, bars, attention patterns, unit cards); figures of images are in
``mechscope.image_figures``.

Example: ``heatmap(torch.randn(4, 6), "figs/scores", title="scores")`` writes
figs/scores.png, .svg and .html.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ._arrays import atomic_file

FORMATS = ("png", "svg", "html")

Figures = dict[str, dict[str, Path]]
"""What every result's ``figure(path)`` returns: figure name → format (png, svg, html) → file.

A result that draws one figure names it after `path` (``probes.figure("runs/p/accuracy")`` →
``{"accuracy": {"png": …, "svg": …, "html": …}}``); one that draws several names each (a causal
trace: ``{"hidden": {…}, "mlp": {…}, "attn": {…}}``).
"""


def named(path: str | Path, paths: dict[str, Path]) -> Figures:
    """One figure's files (format → file) as `Figures`, named after `path`.

    Example: ``named("runs/p/accuracy", line(series, "runs/p/accuracy"))`` →
    ``{"accuracy": {"png": …, "svg": …, "html": …}}``.
    """
    return {figure_stem(path).name: paths}


def _np(values: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=float)


def figure_stem(path: str | Path) -> Path:
    """`path` without a figure extension; other dots stay (``neuron_blocks.3.mlp.post_7``).

    Example: ``figure_stem("figs/h.png")`` → ``Path("figs/h")``;
    ``figure_stem("neuron_blocks.3.mlp.post_7")`` keeps its dots.
    """
    p = Path(path)
    return p.with_suffix("") if p.suffix.lstrip(".") in FORMATS else p


def save_static(fig: object, stem: Path, dpi: int) -> dict[str, Path]:
    """Write a matplotlib figure as PNG and SVG beside `stem`, then close it.

    Example::

        fig, ax = plt.subplots()
        ax.plot([1, 2, 3])
        save_static(fig, Path("figs/curve"), dpi=120)   # {"png": …/curve.png, "svg": …/curve.svg}
    """
    import matplotlib.pyplot as plt

    out = {}
    for fmt in ("png", "svg"):
        target = stem.with_name(f"{stem.name}.{fmt}")
        fig.savefig(target, dpi=dpi, bbox_inches="tight")  # type: ignore[attr-defined]
        out[fmt] = target
    plt.close(fig)  # type: ignore[arg-type]
    return out


def save_html(pfig: object, stem: Path) -> Path:
    """Write a plotly figure as HTML, plotly.js once beside it (works offline).

    Example: ``save_html(plotly.graph_objects.Figure(), Path("figs/curve"))`` → figs/curve.html,
    with figs/plotly.min.js beside it.
    """
    target = stem.with_name(f"{stem.name}.html")
    _plotly_bundle(target.parent / "plotly.min.js")
    pfig.write_html(target, include_plotlyjs="directory", full_html=True)  # type: ignore[attr-defined]
    return target


def _plotly_bundle(path: Path) -> None:
    """Write plotly.js at `path` whole (atomically) unless it is there whole: plotly writes it
    only when absent, so one cut short by a killed run would stay cut."""
    from plotly.offline import get_plotlyjs

    if path.exists() and path.stat().st_size == _plotly_size():
        return
    with atomic_file(path) as tmp:
        tmp.write_text(get_plotlyjs(), encoding="utf-8")


@functools.cache
def _plotly_size() -> int:
    from plotly.offline import get_plotlyjs

    return len(get_plotlyjs().encode("utf-8"))


def heatmap(
    values: Float[Tensor, "rows cols"] | np.ndarray,
    path: str | Path,
    *,
    title: str,
    x_labels: Sequence[str] | None = None,
    y_labels: Sequence[str] | None = None,
    x_title: str = "",
    y_title: str = "",
    value_title: str = "",
    center: float | None = 0.0,
    cmap: str = "RdBu",
) -> dict[str, Path]:
    """Write a heatmap as ``path``.png/.svg/.html; returns the paths by format.

    `center` makes the colour scale symmetric around it (diverging data);
    None uses the data's range.

    Example::

        heatmap(torch.randn(4, 6), "figs/scores", title="scores", x_title="pos", y_title="layer")
        # {"png": figs/scores.png, "svg": figs/scores.svg, "html": figs/scores.html}
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    data = _np(values)
    rows, cols = data.shape
    xl = list(x_labels) if x_labels is not None else [str(i) for i in range(cols)]
    yl = list(y_labels) if y_labels is not None else [str(i) for i in range(rows)]
    if center is not None:
        span = float(np.nanmax(np.abs(data - center))) or 1.0
        vmin, vmax = center - span, center + span
    else:
        vmin, vmax = float(np.nanmin(data)), float(np.nanmax(data))
    stem = figure_stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    width = min(2 + 0.32 * cols, 18)
    height = min(1.5 + 0.22 * rows, 14)
    fig, ax = plt.subplots(figsize=(max(width, 4), max(height, 3)))
    mpl_cmap = {"RdBu": "RdBu_r"}.get(cmap, cmap)
    im = ax.imshow(
        data, cmap=mpl_cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest"
    )
    ax.set_title(title)
    ax.set_xlabel(x_title)
    ax.set_ylabel(y_title)
    step_x = max(1, cols // 40)
    step_y = max(1, rows // 40)
    ax.set_xticks(range(0, cols, step_x), [xl[i] for i in range(0, cols, step_x)], rotation=90)
    ax.set_yticks(range(0, rows, step_y), [yl[i] for i in range(0, rows, step_y)])
    fig.colorbar(im, ax=ax, label=value_title)
    with warnings.catch_warnings():  # long labels: the saved figure is cropped to fit instead
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()
    out.update(save_static(fig, stem, dpi=120))

    # plotly needs unique axis labels; keep the display text in hover
    x_ids = [f"{i}: {label}" for i, label in enumerate(xl)]
    y_ids = [f"{i}: {label}" for i, label in enumerate(yl)]
    pfig = go.Figure(
        go.Heatmap(
            z=data,
            x=x_ids,
            y=y_ids,
            colorscale=cmap,
            reversescale=cmap == "RdBu",
            zmin=vmin,
            zmax=vmax,
            colorbar={"title": value_title},
            hovertemplate=f"{y_title} %{{y}}<br>{x_title} %{{x}}<br>{value_title} %{{z:.4g}}<extra></extra>",
        )
    )
    pfig.update_layout(
        title=title,
        xaxis_title=x_title,
        yaxis_title=y_title,
        yaxis={"autorange": "reversed"},
        width=max(500, 30 * cols + 200),
        height=max(400, 22 * rows + 200),
    )
    out["html"] = save_html(pfig, stem)
    return out


def patterns(
    patterns: Float[Tensor, "n q_pos k_pos"],
    tokens: Sequence[str],
    names: Sequence[str],
    path: str | Path,
    *,
    title: str,
) -> dict[str, Path]:
    """Attention patterns of several heads on one prompt, side by side (PNG, SVG, HTML).

    Example::

        _, cache = model.run(text, save=["blocks.5.attn.pattern"])
        patterns(cache["blocks.5.attn.pattern"][0, :2], model.to_str_tokens(text), ["L5H0", "L5H1"],
                 "figs/l5", title="layer 5")
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    data = _np(patterns)
    n = data.shape[0]
    stem = figure_stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    labels = [f"{i}:{t!r}"[:14] for i, t in enumerate(tokens)]
    out: dict[str, Path] = {}
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.2 * rows), squeeze=False)
    for k in range(rows * cols):
        ax = axes[k // cols][k % cols]
        if k >= n:
            ax.axis("off")
            continue
        ax.imshow(data[k], cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(names[k], fontsize=9)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    out.update(save_static(fig, stem, dpi=110))

    pfig = make_subplots(rows=rows, cols=cols, subplot_titles=list(names))
    for k in range(n):
        pfig.add_trace(
            go.Heatmap(
                z=data[k],
                x=labels,
                y=labels,
                colorscale="Blues",
                zmin=0,
                zmax=1,
                showscale=k == 0,
                hovertemplate="query %{y}<br>key %{x}<br>attention %{z:.3f}<extra></extra>",
            ),
            row=k // cols + 1,
            col=k % cols + 1,
        )
    pfig.update_yaxes(autorange="reversed")
    pfig.update_layout(title=title, width=380 * cols, height=380 * rows + 80)
    out["html"] = save_html(pfig, stem)
    return out


def line(
    series: dict[str, Sequence[float] | Tensor],
    path: str | Path,
    *,
    title: str,
    x_labels: Sequence[str] | None = None,
    x_title: str = "",
    y_title: str = "",
) -> dict[str, Path]:
    """Several named series over the same x axis (PNG, SVG, HTML).

    Example::

        line({"clean": [0.1, 0.5], "patched": [0.2, 0.1]}, "figs/ld", title="logit diff",
             x_labels=["L0", "L1"])          # {"png": figs/ld.png, "svg": …, "html": …}
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    stem = figure_stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    pfig = go.Figure()
    for name, ys in series.items():
        y = _np(torch.as_tensor(ys) if not isinstance(ys, Tensor) else ys)
        x = list(x_labels) if x_labels is not None else list(range(len(y)))
        ax.plot(range(len(y)), y, marker="o", ms=3, label=name)
        pfig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name))
    if x_labels is not None:
        step = max(1, len(x_labels) // 30)
        ax.set_xticks(range(0, len(x_labels), step), list(x_labels)[::step], rotation=90)
    ax.set_title(title)
    ax.set_xlabel(x_title)
    ax.set_ylabel(y_title)
    ax.axhline(0, color="grey", lw=0.5)
    ax.legend()
    fig.tight_layout()
    out.update(save_static(fig, stem, dpi=120))
    pfig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title)
    out["html"] = save_html(pfig, stem)
    return out


def unit_card(
    tokens: Sequence[Sequence[str]],
    acts: Float[Tensor, "example pos"] | np.ndarray,
    hist_edges: Sequence[float],
    hist_counts: Sequence[int],
    path: str | Path,
    *,
    title: str,
    row_labels: Sequence[str] | None = None,
) -> dict[str, Path]:
    """A Neuroscope card as ``path``.png/.svg/.html: activation histogram over examples as token heatmaps.

    `tokens` and `acts` are examples (rows) of equal length; each cell shows
    its token on a background coloured by the activation (diverging around 0,
    scaled to the largest |activation|). The HTML shows the value on hover.

    Example::

        unit_card([[" the", " cat"]], torch.tensor([[0.5, 2.0]]), [0.0, 1.0, 2.0], [3, 1],
                  "figs/card", title="blocks.3.mlp.post 7")
    """
    import html

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    data = _np(acts)
    rows, cols = data.shape
    shown = [[t.replace("\n", "↵").replace("\t", "⇥") for t in row] for row in tokens]
    labels = list(row_labels) if row_labels is not None else [f"#{i + 1}" for i in range(rows)]
    span = float(np.nanmax(np.abs(data))) if data.size else 1.0
    span = span or 1.0
    stem = figure_stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    centers = [f"{(a + b) / 2:.3g}" for a, b in zip(hist_edges[:-1], hist_edges[1:], strict=True)]

    fig, (hax, tax) = plt.subplots(
        2,
        1,
        figsize=(min(2 + 0.75 * cols, 22), 2.6 + 0.42 * rows),
        gridspec_kw={"height_ratios": [2, max(rows, 1) * 0.45]},
    )
    hax.bar(
        range(len(hist_counts)),
        hist_counts,
        color=["#1e6eff" if float(c) < 0 else "#ff6e00" for c in centers],
    )
    hax.set_yscale("log")
    step = max(1, len(centers) // 12)
    hax.set_xticks(range(0, len(centers), step), centers[::step], fontsize=7)
    hax.set_ylabel("tokens")
    hax.set_title(title)
    tax.imshow(data, cmap="RdBu_r", vmin=-span, vmax=span, aspect="auto", interpolation="nearest")
    for r in range(rows):
        for c in range(cols):
            dark = abs(float(data[r, c])) > 0.6 * span
            tax.text(
                c,
                r,
                shown[r][c],
                ha="center",
                va="center",
                fontsize=6,
                family="monospace",
                color="white" if dark else "black",
            )
    tax.set_yticks(range(rows), labels)
    tax.set_xticks([])
    fig.tight_layout()
    out = save_static(fig, stem, dpi=130)

    pfig = make_subplots(rows=2, cols=1, row_heights=[0.3, 0.7], vertical_spacing=0.08)
    pfig.add_trace(
        go.Bar(
            x=centers,
            y=list(hist_counts),
            name="tokens",
            hovertemplate="~%{x}: %{y}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    pfig.add_trace(
        go.Heatmap(
            z=data,
            text=[[html.escape(t) for t in row] for row in shown],
            texttemplate="%{text}",
            y=labels,
            colorscale="RdBu",
            reversescale=True,
            zmin=-span,
            zmax=span,
            hovertemplate="%{text}: %{z:.4g}<extra></extra>",
        ),
        row=2,
        col=1,
    )
    pfig.update_yaxes(type="log", row=1, col=1)
    pfig.update_yaxes(autorange="reversed", row=2, col=1)
    pfig.update_xaxes(showticklabels=False, row=2, col=1)
    pfig.update_layout(
        title=title, width=max(700, 60 * cols), height=300 + 32 * rows, showlegend=False
    )
    out["html"] = save_html(pfig, stem)
    return out


def grouped_bars(
    series: Mapping[str, Sequence[float]],
    labels: Sequence[str],
    path: str | Path,
    *,
    title: str,
    y_title: str = "",
) -> dict[str, Path]:
    """One group of bars per label, one bar per series (PNG/SVG/HTML).

    Example::

        series = {"clean": [1.0, 2.0], "ablated": [0.5, 1.5]}
        grouped_bars(series, ["L0", "L1"], "figs/bars", title="logit diff")
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    stem = figure_stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    n, width = len(series), 0.8 / max(1, len(series))
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(labels) + 2), 4))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + (i - (n - 1) / 2) * width, list(values), width, label=name)
    ax.set_xticks(x, list(labels), rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(y_title)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    out = save_static(fig, stem, dpi=110)
    pfig = go.Figure(
        [go.Bar(name=name, x=list(labels), y=list(values)) for name, values in series.items()]
    )
    pfig.update_layout(title=title, barmode="group", yaxis_title=y_title, height=450)
    out["html"] = save_html(pfig, stem)
    return out

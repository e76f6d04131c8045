"""Figures of the toy models of superposition, as in Elhage et al. 2022 (PNG, SVG and HTML).

`plot_sparsity_sweep`: WᵀW and the feature norms coloured by superposition,
one column per sparsity; `plot_features_represented`: features represented
against sparsity with m as a reference line; `plot_phase_diagram`: what
happens to the one extra feature over relative importance × sparsity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..figures import figure_stem, save_html, save_static
from .toy import (
    PHASE_COLOURS,
    PHASES,
    ToyResult,
    feature_norms,
    features_represented,
    phases,
    superposition,
)

# --- figures --------------------------------------------------------------------------------

GRAM_HOVER = "WᵀW[%{y}, %{x}] = %{z:.3f}<extra></extra>"
BAR_HOVER = "feature %{y}: ||W_i|| %{x:.3f}, superposition %{customdata:.3f}<extra></extra>"
PHASE_HOVER = "1 − S %{x}, importance %{y}: %{text}<extra></extra>"


def _start(path: str | Path) -> tuple[Any, Any, Path]:
    """pyplot (Agg, no screen), plotly's graph objects, and the figure's stem (folder made)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    stem = figure_stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    return plt, go, stem


def plot_sparsity_sweep(result: ToyResult, path: str | Path, *, decay: int = 0) -> dict[str, Path]:
    """The paper's 'sparsity increases superposition': per sparsity, WᵀW and ||W_i|| bars.

    Bars are coloured by superposition (dark: none; yellow: shared). `decay`
    indexes the grid's first axis. Writes ``path``.png/.svg/.html.

    Example: ``plot_sparsity_sweep(quick_sweep(), "figures/sweep")["png"]`` →
    ``Path("figures/sweep.png")``.
    """
    from plotly.subplots import make_subplots

    plt, go, stem = _start(path)
    W = result.reshape(result.W)[decay]
    gram = (W.transpose(-1, -2) @ W).numpy()  # [sparsity, n, n]
    norms, sup = feature_norms(W).numpy(), superposition(W).clamp(0, 1).numpy()
    labels = [f"1−S={1 - s:.2g}" for s in result.grid["sparsity"]]
    k, n = len(labels), result.n_features
    title = f"sparsity increases superposition (n={n}, m={result.d_hidden})"

    fig, axes = plt.subplots(2, k, figsize=(1.9 * k + 1, 4.6), squeeze=False)
    for c, (top, bars) in enumerate(zip(*axes, strict=True)):
        top.imshow(gram[c], cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        top.set_title(labels[c], fontsize=9)
        top.axis("off")
        bars.barh(range(n), norms[c], color=plt.get_cmap("plasma")(sup[c]))
        bars.set_xlim(0, max(1.2, float(norms.max())))
        bars.invert_yaxis()
        bars.set_yticks([])
        bars.tick_params(labelsize=7)
    axes[1][0].set_ylabel("||W_i||, feature 0 on top")
    fig.suptitle(f"{title}: WᵀW above, ||W_i|| coloured by superposition below")
    fig.tight_layout()
    out = save_static(fig, stem, dpi=120)

    pfig = make_subplots(rows=2, cols=k, subplot_titles=labels, vertical_spacing=0.08)
    bar_colour = {"colorscale": "Plasma", "cmin": 0, "cmax": 1}
    for c in range(k):
        heat = go.Heatmap(z=gram[c], coloraxis="coloraxis", hovertemplate=GRAM_HOVER)
        pfig.add_trace(heat, row=1, col=c + 1)
        bar = go.Bar(x=norms[c], y=list(range(n)), orientation="h", customdata=sup[c])
        bar.update(marker={"color": sup[c], **bar_colour}, hovertemplate=BAR_HOVER)
        pfig.add_trace(bar, row=2, col=c + 1)
    pfig.update_yaxes(autorange="reversed", showticklabels=False)
    colours = {"colorscale": "RdBu", "reversescale": True, "cmin": -1, "cmax": 1}
    pfig.update_layout(title=title, showlegend=False, coloraxis=colours)
    pfig.update_layout(width=max(700, 170 * k), height=560)
    out["html"] = save_html(pfig, stem)
    return out


def plot_features_represented(
    results: dict[str, ToyResult], path: str | Path, *, decay: int = 0
) -> dict[str, Path]:
    """Features represented (||W_i|| > 0.5) against 1 − S, a line per result, m dashed.

    Example: ``plot_features_represented({"ReLU": quick_sweep()}, "figures/represented")`` →
    ``{"png": …, "svg": …, "html": …}``.
    """
    plt, go, stem = _start(path)
    first = next(iter(results.values()))
    density = [1 - s for s in first.grid["sparsity"]]
    m = first.d_hidden
    title = f"features represented vs sparsity (n={first.n_features}, m={m})"
    x_title = "feature density 1 − S (sparser to the right)"
    y_title = "features with ||W_i|| > 0.5"
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    pfig = go.Figure()
    for name, r in results.items():
        y = features_represented(r.reshape(r.W)[decay]).tolist()
        ax.plot(density, y, marker="o", label=name)
        pfig.add_trace(go.Scatter(x=density, y=y, mode="lines+markers", name=name))
    ax.axhline(m, color="grey", ls="--", label=f"m = {m} dimensions")
    ax.set(xscale="log", xlim=(max(density) * 1.3, min(density) / 1.3), ylim=(0, None))
    ax.set(title=title, xlabel=x_title, ylabel=y_title)
    ax.legend()
    fig.tight_layout()
    out = save_static(fig, stem, dpi=120)
    pfig.add_hline(y=m, line_dash="dash", line_color="grey", annotation_text=f"m = {m}")
    pfig.update_xaxes(type="log", autorange="reversed")
    pfig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title)
    out["html"] = save_html(pfig, stem)
    return out


def plot_phase_diagram(result: ToyResult, path: str | Path) -> dict[str, Path]:
    """The extra feature's phase over relative importance (rows) × density 1 − S (columns).

    Example: ``plot_phase_diagram(phase_diagram(), "figures/phase")`` → its PNG, SVG and HTML.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    plt, go, stem = _start(path)
    grid = result.reshape(phases(result)).flip(0).numpy()  # most important at the top
    rows = [f"{r:.2g}" for r in reversed(result.grid["relative_importance"])]
    cols = [f"{1 - s:.2g}" for s in result.grid["sparsity"]]
    title = f"phase of one extra feature (n={result.n_features}, m={result.d_hidden})"
    x_title, y_title = "feature density 1 − S", "extra feature's relative importance"

    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.imshow(grid, cmap=ListedColormap(PHASE_COLOURS), vmin=0, vmax=2, interpolation="nearest")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set(xlabel=x_title, ylabel=y_title, title=title)
    handles = [Patch(color=c, label=p) for c, p in zip(PHASE_COLOURS, PHASES, strict=True)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    out = save_static(fig, stem, dpi=120)

    # a stepped colour scale: each phase one flat colour over its third of [-0.5, 2.5]
    scale = [[(i + e) / 3, c] for i, c in enumerate(PHASE_COLOURS) for e in (0, 1)]
    names = [[PHASES[v] for v in row] for row in grid]
    ticks = {"tickvals": [0, 1, 2], "ticktext": list(PHASES)}
    heat = go.Heatmap(z=grid, x=cols, y=rows, zmin=-0.5, zmax=2.5, colorscale=scale, text=names)
    heat.update(colorbar=ticks, hovertemplate=PHASE_HOVER)
    pfig = go.Figure(heat)
    pfig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, width=760, height=520)
    out["html"] = save_html(pfig, stem)
    return out

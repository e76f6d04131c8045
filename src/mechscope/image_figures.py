"""Figures of images, as PNG, SVG and interactive HTML: image grids and conv weight circuits.

The writers and the plotting conventions are those of ``mechscope.figures``;
these take RGB images in [0, 1] (channel visualisations) and a conv unit's
spatial weight maps.

Example::

    image_grid(torch.rand(2, 3, 3, 32, 32), "figs/grid", title="channels")
    # {"png": figs/grid.png, "svg": figs/grid.svg, "html": figs/grid.html}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from jaxtyping import Float
from torch import Tensor

from .figures import _np, figure_stem, save_html, save_static


def image_grid(
    images: Float[Tensor, "rows cols 3 h w"],
    path: str | Path,
    *,
    title: str,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
) -> dict[str, Path]:
    """A grid of RGB images in [0, 1] as ``path``.png/.svg/.html (the HTML zooms and shows pixels).

    Example::

        images = torch.rand(2, 3, 3, 32, 32)       # [rows cols 3 h w] in [0, 1]
        image_grid(images, "figs/grid", title="channels", row_labels=["a", "b"])
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if images.ndim != 5 or images.shape[2] != 3:
        raise ValueError(f"image_grid takes [rows, cols, 3, h, w], got {tuple(images.shape)}")
    rows, cols = images.shape[:2]
    pixels = images.detach().float().clamp(0, 1).permute(0, 1, 3, 4, 2).cpu().numpy() * 255
    pixels = pixels.round().astype(np.uint8)
    stem = figure_stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    rl = list(row_labels) if row_labels is not None else [""] * rows
    cl = list(col_labels) if col_labels is not None else [""] * cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols + 0.6, 1.6 * rows + 0.6),
                             squeeze=False)  # fmt: skip
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(pixels[r, c])
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and cl[c]:
                ax.set_title(cl[c], fontsize=8)
            if c == 0 and rl[r]:
                ax.set_ylabel(rl[r], fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out = save_static(fig, stem, dpi=100)
    titles = [f"{rl[r]} {cl[c]}".strip() for r in range(rows) for c in range(cols)]
    pfig = make_subplots(rows=rows, cols=cols, subplot_titles=titles)
    for r in range(rows):
        for c in range(cols):
            pfig.add_trace(go.Image(z=pixels[r, c]), row=r + 1, col=c + 1)
    pfig.update_xaxes(showticklabels=False)
    pfig.update_yaxes(showticklabels=False)
    pfig.update_layout(title=title, height=220 * rows + 80, width=220 * cols + 80)
    out["html"] = save_html(pfig, stem)
    return out


def weight_circuit(
    maps: Float[Tensor, "c_in kh kw"],
    groups: Sequence[tuple[str, Sequence[int]]],
    path: str | Path,
    *,
    title: str,
    images: Mapping[int, Float[Tensor, "3 h w"]] | None = None,
    unit_image: Float[Tensor, "3 h w"] | None = None,
) -> dict[str, Path]:
    """Input channels beside their spatial weight maps, one row pair per group (PNG/SVG/HTML).

    ``groups`` is e.g. [("excitation", [12, 7, …]), ("inhibition", […])]; red
    is positive, blue negative, on one scale for every map.

    Example::

        groups = [("excitation", [3, 7]), ("inhibition", [1])]
        weight_circuit(torch.randn(16, 3, 3), groups, "figs/circuit", title="unit 5")
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    weights = _np(maps.float())
    k = max(len(chs) for _, chs in groups)
    shown = [c for _, chs in groups for c in chs]
    vmax = float(np.abs(weights[shown]).max()) if shown else 1.0
    per = 2 if images else 1  # rows per group: visualisations, then maps
    rows, cols = per * len(groups), k + 1

    def rgb(x: Tensor) -> np.ndarray:
        return (_np(x.float().clamp(0, 1).permute(1, 2, 0)) * 255).round().astype(np.uint8)

    def label(c: int) -> str:
        w = weights[c]
        return f"ch {c}\n+{w.clip(min=0).sum():.2f} −{abs(w.clip(max=0).sum()):.2f}"

    stem = figure_stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 1.8 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if unit_image is not None:
        axes[0][0].imshow(rgb(unit_image))
        axes[0][0].set_title("unit", fontsize=8)
    image = None
    for g, (kind, chs) in enumerate(groups):
        axes[g * per + per - 1][0].text(0.5, 0.5, kind, ha="center", va="center", fontsize=9)
        for j, c in enumerate(chs):
            if images and c in images:
                axes[g * per][j + 1].imshow(rgb(images[c]))
            ax = axes[g * per + per - 1][j + 1]
            image = ax.imshow(weights[c], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            ax.set_title(label(c), fontsize=7)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.5, label="weight")
    fig.suptitle(title)
    out = save_static(fig, stem, dpi=110)

    pfig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.02, vertical_spacing=0.06)
    if unit_image is not None:
        pfig.add_trace(go.Image(z=rgb(unit_image), name="unit"), row=1, col=1)
    for g, (kind, chs) in enumerate(groups):
        for j, c in enumerate(chs):
            if images and c in images:
                pfig.add_trace(
                    go.Image(z=rgb(images[c]), name=f"ch {c}"), row=g * per + 1, col=j + 2
                )
            pfig.add_trace(
                go.Heatmap(z=weights[c][::-1], zmin=-vmax, zmax=vmax, zmid=0, colorscale="RdBu",
                           reversescale=True, showscale=(g == 0 and j == 0), name=f"ch {c}",
                           hovertemplate=f"{kind} {label(c).replace(chr(10), ' ')}<br>x %{{x}}, y %{{y}}: %{{z:.3f}}"
                           "<extra></extra>"),
                row=g * per + per, col=j + 2,
            )  # fmt: skip
    pfig.update_xaxes(showticklabels=False)
    pfig.update_yaxes(showticklabels=False)
    pfig.update_layout(title=title, height=170 * rows + 90, width=150 * cols + 80)
    out["html"] = save_html(pfig, stem)
    return out

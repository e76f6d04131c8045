"""Pictures of mazes: renders (PNG), rollouts (GIF) and vector fields (PNG, SVG, interactive HTML).

A vector field draws, on every open square, the mouse's expected move
(Σ p(action) · move) as an arrow, the picture of Turner, Mini et al.; side
by side panels compare the policy before and after an edit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from ..figures import figure_stem, save_html, save_static
from .behaviour import VectorField
from .env import ACTIONS, Mazes

WALL, OPEN, CHEESE, MOUSE, TRAIL, TARGET = (
    (40, 40, 52), (236, 232, 220), (246, 190, 0), (120, 120, 125), (160, 200, 240), (220, 60, 60),
)  # fmt: skip


def maze_image(
    mazes: Mazes, i: int = 0, *, mouse: Sequence[int] | None = None, trail: Tensor | None = None,
    scale: int = 16, crop: bool = True,
) -> np.ndarray:  # fmt: skip
    """An RGB picture [h w 3] (uint8) of maze `i`: walls, the cheese, the mouse and its trail.

    Example: ``Image.fromarray(maze_image(mazes, 0, mouse=mazes.start[0].tolist())).save("m.png")``.
    """
    grid = mazes.open[i].numpy()
    img = np.where(grid[..., None], np.array(OPEN), np.array(WALL)).astype(np.uint8)
    if trail is not None:
        for r, c in trail.tolist():
            img[r, c] = TRAIL
    if bool(mazes.has_cheese[i]):
        r, c = mazes.cheese[i].tolist()
        img[r, c] = CHEESE
    if mouse is not None:
        img[mouse[0], mouse[1]] = MOUSE
    if crop:
        o, s = int(mazes.offset[i]), int(mazes.size[i])
        img = img[o : o + s, o : o + s]
    return img.repeat(scale, 0).repeat(scale, 1)


def save_render(mazes: Mazes, path: str | Path, *, columns: int = 4, scale: int = 12) -> Path:
    """A PNG sheet of the first mazes of a batch, padded views side by side.

    Example: ``save_render(generate(8), "figures/mazes")`` → ``Path("figures/mazes.png")``.
    """
    from PIL import Image

    n = min(len(mazes), columns * 2)
    tiles = [
        maze_image(mazes, i, mouse=mazes.start[i].tolist(), scale=scale, crop=False)
        for i in range(n)
    ]
    h, w, _ = tiles[0].shape
    rows = -(-n // columns)
    sheet = np.full((rows * (h + 4), columns * (w + 4), 3), 255, dtype=np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        sheet[r * (h + 4) : r * (h + 4) + h, c * (w + 4) : c * (w + 4) + w] = tile
    target = Path(path).with_suffix(".png")
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(target)
    return target


def save_rollout_gif(
    mazes: Mazes, paths: Int[Tensor, "batch steps 2"], path: str | Path, *, count: int = 4, scale: int = 12,
    ms_per_frame: int = 120,
) -> Path:  # fmt: skip
    """An animated GIF of the first `count` rollouts side by side (the mouse and its trail).

    Example: ``save_rollout_gif(mazes, rollout(mazes, policy), "figures/rollouts")`` → the .gif.
    """
    from PIL import Image

    count = min(count, len(mazes))
    frames = []
    length = paths.shape[1]
    for t in range(length):
        tiles = [maze_image(mazes, i, mouse=paths[i, t].tolist(), trail=paths[i, : t + 1], scale=scale,
                            crop=False) for i in range(count)]  # fmt: skip
        frames.append(
            Image.fromarray(
                np.concatenate(
                    [np.pad(x, ((2, 2), (2, 2), (0, 0)), constant_values=255) for x in tiles], 1
                )
            )
        )
        if (
            t > 0
            and torch.equal(paths[:count, t], paths[:count, -1])
            and torch.equal(paths[:count, t], paths[:count, t - 1])
        ):
            break  # every mouse has stopped
    target = Path(path).with_suffix(".gif")
    target.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(target, save_all=True, append_images=frames[1:], duration=ms_per_frame, loop=0)
    return target


def _segments(field: VectorField) -> tuple[list[float], list[float]]:
    """Arrow shafts (x, y with None breaks) in plot coordinates: x = col, y = row (down)."""
    xs: list[float] = []
    ys: list[float] = []
    arrows = field.arrows
    for r, c in field.open.nonzero().tolist():
        dr, dc = arrows[r, c].tolist()
        xs += [c, c + 0.45 * dc, None]  # type: ignore[list-item]
        ys += [r, r + 0.45 * dr, None]  # type: ignore[list-item]
    return xs, ys


def vector_fields(
    fields: Sequence[VectorField], titles: Sequence[str], path: str | Path, *, title: str,
    marks: Sequence[dict[str, tuple[int, int]]] | None = None,
) -> dict[str, Path]:  # fmt: skip
    """Panels of action-probability arrows over mazes (PNG, SVG, HTML).

    `marks` gives per panel extra squares to draw, e.g. ``{"decision": (r, c), "target": (r, c)}``.

    Example: ``vector_fields([field], ["unsteered"], "runs/maze/figures/field", title="policy")``
    → ``{"png": …, "svg": …, "html": …}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    stem = figure_stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    n = len(fields)
    marks = list(marks or [{}] * n)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.4), squeeze=False)
    pfig = make_subplots(rows=1, cols=n, subplot_titles=list(titles), horizontal_spacing=0.04)
    colours = {"decision": "#1f77b4", "target": "#d62728", "corner": "#9467bd"}
    for k, (field, ax) in enumerate(zip(fields, axes[0], strict=True)):
        o, s = field.offset, field.size
        lo, hi = o - 0.5, o + s - 0.5
        ax.imshow(np.where(field.open.numpy(), 0.93, 0.18), cmap="gray", vmin=0, vmax=1)
        rc = field.open.nonzero()
        arrows = field.arrows
        ax.quiver(rc[:, 1], rc[:, 0], arrows[rc[:, 0], rc[:, 1], 1], arrows[rc[:, 0], rc[:, 1], 0],
                  color="#c0392b", angles="xy", scale_units="xy", scale=1.6, width=0.006)  # fmt: skip
        if field.cheese is not None:
            ax.plot(field.cheese[1], field.cheese[0], "o", color="#f6be00", ms=11, mec="k")
        for name, (r, c) in marks[k].items():
            ax.plot(c, r, "s", mfc="none", mec=colours.get(name, "k"), ms=13, mew=2, label=name)
        if marks[k]:
            ax.legend(loc="lower right", fontsize=7)
        ax.set_xlim(lo, hi)
        ax.set_ylim(hi, lo)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(titles[k], fontsize=9)
        # interactive: the maze as a heatmap, arrows as segments, probabilities on hover
        col = k + 1
        pfig.add_trace(go.Heatmap(z=np.where(field.open.numpy(), 1.0, 0.0), colorscale=[[0, "#28283a"], [1, "#ece8dc"]],
                                  showscale=False, hoverinfo="skip"), row=1, col=col)  # fmt: skip
        xs, ys = _segments(field)
        pfig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": "#c0392b", "width": 2},
                                  hoverinfo="skip", showlegend=False), row=1, col=col)  # fmt: skip
        probs = field.probs[rc[:, 0], rc[:, 1]]
        text = [
            "<br>".join(f"{a}: {p:.2f}" for a, p in zip(ACTIONS, row, strict=True))
            for row in probs.tolist()
        ]
        pfig.add_trace(go.Scatter(x=rc[:, 1].tolist(), y=rc[:, 0].tolist(), mode="markers", marker={"size": 4, "color": "#c0392b"},
                                  text=text, hovertemplate="(%{y}, %{x})<br>%{text}<extra></extra>",
                                  showlegend=False), row=1, col=col)  # fmt: skip
        if field.cheese is not None:
            pfig.add_trace(go.Scatter(x=[field.cheese[1]], y=[field.cheese[0]], mode="markers", name="cheese",
                                      marker={"size": 14, "color": "#f6be00", "line": {"color": "black", "width": 1}},
                                      showlegend=k == 0), row=1, col=col)  # fmt: skip
        for name, (r, c) in marks[k].items():
            pfig.add_trace(go.Scatter(x=[c], y=[r], mode="markers", name=name, showlegend=True,
                                      marker={"size": 16, "symbol": "square-open", "color": colours.get(name, "black"),
                                              "line": {"width": 3}}), row=1, col=col)  # fmt: skip
        pfig.update_xaxes(range=[lo, hi], showticklabels=False, row=1, col=col)
        pfig.update_yaxes(
            range=[hi, lo],
            showticklabels=False,
            scaleanchor=f"x{col if col > 1 else ''}",
            row=1,
            col=col,
        )
    fig.suptitle(title)
    fig.tight_layout()
    out = save_static(fig, stem, dpi=110)
    pfig.update_layout(title=title, height=480, width=max(520, 430 * n), plot_bgcolor="white")
    out["html"] = save_html(pfig, stem)
    return out

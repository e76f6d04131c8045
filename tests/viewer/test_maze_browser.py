"""Real maze runs (a briefly trained policy) in real Chromium: figures load, vector fields draw.

The runs are written by `train_run`, `eval_run` and `steer_run` themselves,
so the interactive vector fields are the real plotly pages with plotly.js
served beside them, not stand-ins.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mechscope.maze import eval_run, steer_run, train_run


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from mechscope.viewer import serve

    root = tmp_path_factory.mktemp("maze-runs")
    train_run(root / "maze-train", steps=40, n_mazes=300, eval_every=20, n_eval=16, progress=False)
    eval_run(root / "maze-train", root / "maze-eval", n=16, progress=False)
    steer_run(root / "maze-train", root / "maze-steer", n=10, coeffs=(0.0, -1.0), channel_counts=(2,),
              strengths=(1.0,), progress=False)  # fmt: skip
    with serve([root]) as viewer:
        yield viewer.url.rstrip("/")


def _images_loaded(pg: Any) -> list[int]:
    return pg.locator("img").evaluate_all("imgs => imgs.map(i => i.complete ? i.naturalWidth : -1)")


def test_maze_pages_show_their_figures_and_draw_vector_fields(page: Any, base: str) -> None:
    from playwright.sync_api import expect

    pg, errors = page, page.errors
    for run, least in (("maze-train", 4), ("maze-eval", 4), ("maze-steer", 4)):
        pg.goto(f"{base}/run/{run}")
        for img in pg.locator("img").all():
            img.scroll_into_view_if_needed()
        pg.wait_for_function("[...document.images].every(i => i.complete)")
        widths = _images_loaded(pg)
        assert len(widths) >= least and all(w > 0 for w in widths), (run, widths)
        if run != "maze-steer":  # the rollout GIF is among them
            assert pg.locator('img[src$="rollouts.gif"]').count() == 1
    # the steer page opens with the vector fields before and after; their plotly page draws
    fields = pg.locator('details.interactive[data-figure="fields_cheese_vector"]')
    fields.locator("summary").click()
    frame = pg.frame_locator('details.interactive[data-figure="fields_cheese_vector"] iframe')
    expect(frame.locator(".main-svg").first).to_be_visible(timeout=30_000)
    # three panels: the maze heatmaps are drawn
    expect(frame.locator(".heatmaplayer .hm")).to_have_count(3)
    assert errors == []

"""Maze-agent runs in the viewer: ``maze-train``, ``maze-eval`` and ``maze-steer`` homes.

The run folders are written by hand, file for file as `mechscope.maze.runs`
writes them (its reports with known numbers, empty bins as NaN, tiny PNGs,
plotly-like HTML, a two-frame GIF), so no policy runs; the method,
the policy path and the site names are hostile on purpose. Copies with a file
broken, removed or malformed check the error pages. One real server serves
them all.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import (
    PLOTLY_LIKE,
    assert_error_pages,
    copy_run,
    fetch,
    get_ok,
    make_run,
    png_bytes,
    text_of,
)
from mechscope.maze.reports import (
    BehaviourReport,
    Calibration,
    DistanceBin,
    RetargetSummary,
    SteerReport,
    SweepPoint,
    TrainingCurve,
)
from mechscope.testing import edit_result
from mechscope.viewer import serve

XSS = "<script>alert(1)</script>"
PAGE = Path(__file__).resolve().parents[2] / "src" / "mechscope" / "viewer" / "pages" / "maze.py"
MODEL = {"name": "maze-policy", "source": "/p.safetensors", "weights_sha256": None,
         "dtype": "float32"}  # fmt: skip
NAN = float("nan")


def _bin(lo: float, hi: float, mazes: int, cheese: float, corner: float, p: float) -> DistanceBin:
    """A bin whose P(toward corner) is 1 − P(toward cheese) − 1/32 (NaN where p is)."""
    return DistanceBin(lo, hi, mazes, cheese, corner, p, p if p != p else 1 - p - 0.03125)


BEHAVIOUR = BehaviourReport(
    train_mazes=300, train_reach=0.99, deploy_mazes=300, deploy_reach=0.875, corner_first=0.0625,
    decisions=169, p_cheese=0.8125, p_corner=0.125,
    by_corner_distance=[_bin(0.0, 3.0, 51, 1.0, 0.25, 0.96875), _bin(3.0, 6.0, 0, NAN, NAN, NAN),
                        _bin(6.0, 22.0, 12, 0.5, 0.0, NAN)],
    by_decision_distance=[_bin(0.0, 2.0, 27, 1.0, 0.0, 0.9), _bin(2.0, 22.0, 36, 0.75, 0.0, 0.5)],
)  # fmt: skip
STEER = SteerReport(
    site=f"block2.res1{XSS}", mazes=100, coeff=-1.0, p_cheese_before=0.85, p_cheese_after=0.4375,
    p_cheese_control=0.8125, lowered=0.98, vector_norm=3.5,
    sweep=[SweepPoint(0.0, 0.85, 0.85), SweepPoint(-1.0, 0.4375, 0.8125),
           SweepPoint(-2.0, 0.25, 0.625)],
    channel_order=[15, 12, 7, 5, 6, 0, 4, 2, 9, 1],
    correlation=[0.625, 0.5, 0.375, 0.25, 0.125, 0.1, 0.05, 0.025, -0.5, -0.625],
    retarget=RetargetSummary(
        site="block1.res2&", channels=[15, 12, 7, 5], strength=4.0, mazes=100, reached=0.63,
        reached_plain=0.22, reached_cheese=0.875,
        calibration=[Calibration(4, 2.0, 0.5, 0.25), Calibration(4, 4.0, 0.625, 0.25),
                     Calibration(8, 4.0, 0.5625, 0.25)]),
)  # fmt: skip
CURVE = TrainingCurve(step=[50, 100], loss=[1.0, 0.5], accuracy=[0.5, 0.75], eval_step=[100],
                      reach=[0.8125], seconds=12.0, final_reach=0.8125, n_eval=500)  # fmt: skip


def figures(run: Path, *stems: str) -> None:
    """PNG, SVG and plotly-like HTML of each figure, with the script the HTML loads."""
    folder = run / "figures"
    folder.mkdir(exist_ok=True)
    (folder / "fake-plotly.js").write_text(
        "function drawPlot() { document.getElementById('plot').textContent = 'drawn by js'; }"
    )
    for stem in stems:
        (folder / f"{stem}.png").write_bytes(png_bytes())
        (folder / f"{stem}.svg").write_text(
            '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"></svg>'
        )
        (folder / f"{stem}.html").write_text(PLOTLY_LIKE)


def gif(path: Path) -> None:
    """A two-frame animated GIF, 24×16."""
    from PIL import Image

    frames = [Image.new("RGB", (24, 16), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    path.write_bytes(buf.getvalue())


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("maze") / "runs"
    train = make_run(
        root / "mz-train",
        "maze-train",
        {"steps": 6000, "batch": 256, "region": 5, "n_mazes": 20000, "seed": 3, "eval_every": 500,
         "n_eval": 500, "method": f"imitation {XSS}"},
        {"finished": "2026-01-01T00:00:00+00:00", "summary": f"reaches the cheese {XSS}",
         "reach": 0.8125},
    )  # fmt: skip
    CURVE.save(train / "curve")
    figures(train, "curve", "reach")
    (train / "figures" / "mazes.png").write_bytes(png_bytes())
    gif(train / "figures" / "rollouts.gif")
    (train / "policy.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    (train / "checkpoints").mkdir()
    for step in (1000, 500, 10000):
        (train / "checkpoints" / f"step-{step}.safetensors").write_bytes(b"x" * step)
    (train / "checkpoints" / "notes.safetensors").write_bytes(b"not a step")
    evaluation = make_run(
        root / "mz-eval",
        "maze-eval",
        {"model": MODEL, "policy": f"/runs/{XSS}/policy.safetensors", "n": 300, "seed": 1,
         "region": 5, "steps": 250},
        {"extra": {"summary": "cheese reached: 99.0% of training mazes"}},
    )  # fmt: skip
    BEHAVIOUR.save(evaluation / "report")
    figures(evaluation, "by_corner_distance", "by_decision_distance", "fields")
    gif(evaluation / "figures" / "rollouts.gif")
    steer = make_run(
        root / "mz-steer",
        "maze-steer",
        {"model": MODEL, "n": 100, "site": STEER.site},
        {"summary": "cheese vector: 0.850 → 0.438"},
    )
    STEER.save(steer / "steer")
    figures(steer, "cheese_vector", "fields_cheese_vector", "channels", "fields_retarget")
    (steer / "effect.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")

    (copy_run(root, "mz-train", "train-none") / "curve.safetensors").unlink()
    edit_result(copy_run(root, "mz-train", "train-odd") / "curve.safetensors",
                lambda r, t: r.pop("step"))  # fmt: skip
    (copy_run(root, "mz-eval", "eval-bad") / "report.safetensors").write_text("{ not safetensors")
    (copy_run(root, "mz-eval", "eval-none") / "report.safetensors").unlink()
    CURVE.save(copy_run(root, "mz-eval", "eval-odd") / "report")  # another result's file
    (copy_run(root, "mz-steer", "steer-bad") / "steer.safetensors").write_bytes(b"\x00garbage")
    edit_result(copy_run(root, "mz-steer", "steer-odd") / "steer.safetensors",
                lambda r, t: r["correlation"].pop())  # fmt: skip
    return root


@pytest.fixture(scope="module")
def base(root: Path) -> Iterator[str]:
    with serve([root]) as viewer:
        yield viewer.url.rstrip("/")


def fact_lists(text: str) -> list[dict[str, str]]:
    """Each ``<dl class="facts">`` of the page, as name → shown text."""
    return [
        {text_of(k): text_of(v) for k, v in re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", dl)}
        for dl in re.findall(r'<dl class="facts">(.*?)</dl>', text)
    ]


def rows(text: str, cls: str) -> list[list[str]]:
    """The body rows of the table whose class list ends with `cls`, as cell texts."""
    found = re.search(rf'<table class="grid maze {cls}">.*?<tbody>(.*?)</tbody>', text)
    assert found is not None, cls
    return [[text_of(c) for c in re.findall(r"<td>(.*?)</td>", r)]
            for r in re.findall(r"<tr[^>]*>(.*?)</tr>", found[1])]  # fmt: skip


def assert_figure(base: str, text: str, run: str, stem: str) -> None:
    """The figure's PNG shown, its interactive HTML collapsed below, links to every format."""
    prefix = f"/run/{run}/files/figures/{stem}"
    assert f'<img class="figure" src="{prefix}.png"' in text, stem
    for fmt in ("png", "svg", "html"):
        assert f'<a href="{prefix}.{fmt}">{fmt}</a>' in text, (stem, fmt)
    block = re.search(rf'<details class="interactive" data-figure="{stem}">(.*?)</details>', text)
    assert block is not None and f'src="{prefix}.html"' in block[1], stem
    assert fetch(base, f"{prefix}.png").headers["content-type"] == "image/png"


def assert_image(base: str, text: str, run: str, relative: str, content_type: str) -> None:
    src = f"/run/{run}/files/{relative}"
    assert f'<img class="figure" src="{src}"' in text, relative
    reply = fetch(base, src)
    assert reply.status == 200 and reply.headers["content-type"] == content_type


def h1(text: str) -> str:
    found = re.search(r"<h1>(.*?)</h1>", text)
    assert found is not None
    return text_of(found[1])


# ---------------------------------------------------------------------------- maze-train


def test_train_home_shows_config_reach_figures_and_downloads(base: str, root: Path) -> None:
    text = get_ok(base, "/run/mz-train")
    assert h1(text) == "Maze policy mz-train"
    assert f'<pre class="summary">reaches the cheese {html.escape(XSS)}</pre>' in text
    [facts] = fact_lists(text)
    assert facts == {
        "method": f"imitation {XSS}",
        "steps": "6000",
        "batch": "256",
        "cheese region": "top-right 5×5",
        "training mazes": "20000",
        "seed": "3",
        "final reach": "81.2% of 500 held-out training mazes",
        "finished": "2026-01-01 00:00:00+00:00",
    }
    assert_figure(base, text, "mz-train", "curve")
    assert_figure(base, text, "mz-train", "reach")
    assert_image(base, text, "mz-train", "figures/mazes.png", "image/png")
    assert_image(base, text, "mz-train", "figures/rollouts.gif", "image/gif")
    href = "/run/mz-train/files/policy.safetensors"
    assert f'<a href="{href}" download="">' in text
    assert fetch(base, href).body == (root / "mz-train" / "policy.safetensors").read_bytes()
    steps = [r[0] for r in rows(text, "checkpoints")]
    assert steps == ["500", "1000", "10000"]  # by step, not by name; other files left out
    link = '<a href="/run/mz-train/files/checkpoints/step-10000.safetensors" download="">'
    assert link in text and "notes.safetensors" not in text


# ---------------------------------------------------------------------------- maze-eval


def test_eval_home_tables_behaviour_and_bins(base: str) -> None:
    text = get_ok(base, "/run/mz-eval")
    assert h1(text) == "Maze behaviour mz-eval"
    assert "cheese reached: 99.0% of training mazes" in text  # run.json's extra summary
    [facts] = fact_lists(text)
    assert facts["policy"] == f"/runs/{XSS}/policy.safetensors"
    assert [r[:2] for r in rows(text, "behaviour")] == [
        ["cheese reached, training mazes", "99.0%"],
        ["cheese reached, deployment mazes", "87.5%"],
        ["corner reached before the cheese", "6.2%"],
        ["decision squares", "169"],
        ["mean P(toward cheese)", "0.812"],
        ["mean P(toward corner)", "0.125"],
    ]
    assert rows(text, "behaviour")[0][2] == "300 mazes, cheese in the top-right 5×5"
    corner, decision = re.findall(r'<table class="grid maze bins">.*?</table>', text)
    assert rows(corner, "bins") == [
        ["0–3", "51", "100.0%", "25.0%", "0.969", "0.000"],
        ["3–6", "0", "—", "—", "—", "—"],  # an empty bin: NaN
        ["6–22", "12", "50.0%", "0.0%", "—", "—"],  # no decision square in the bin: NaN
    ]
    assert rows(decision, "bins") == [
        ["0–2", "27", "100.0%", "0.0%", "0.900", "0.069"],
        ["2–22", "36", "75.0%", "0.0%", "0.500", "0.469"],
    ]
    assert "nan" not in text_of(text).lower()
    for stem in ("by_corner_distance", "by_decision_distance", "fields"):
        assert_figure(base, text, "mz-eval", stem)
    assert_image(base, text, "mz-eval", "figures/rollouts.gif", "image/gif")
    assert text.index("figures/by_corner_distance.png") < text.index("figures/fields.png")


# ---------------------------------------------------------------------------- maze-steer


def test_steer_home_leads_with_the_vector_fields(base: str) -> None:
    text = get_ok(base, "/run/mz-steer")
    assert h1(text) == "Maze steering mz-steer"
    assert '<pre class="summary">cheese vector: 0.850 → 0.438</pre>' in text
    assert_figure(base, text, "mz-steer", "fields_cheese_vector")
    fields = text.index("figures/fields_cheese_vector.png")
    assert fields < text.index('<dl class="facts">') and fields < text.index("maze sweep")
    vector, retarget = fact_lists(text)
    assert vector == {
        "site": f"block2.res1{XSS}",
        "decision squares": "100",
        "P(toward cheese)": "0.850 → 0.438 (cheese vector × -1)",
        "control": "0.812 (a vector from two cheese-free mazes, same norm)",
        "mazes lowered": "98.0%",
        "mean vector norm": "3.500",
    }
    assert rows(text, "sweep") == [
        ["0", "0.850", "0.850"],
        ["-1 ★", "0.438", "0.812"],  # the coefficient the facts report
        ["-2", "0.250", "0.625"],
    ]
    assert_figure(base, text, "mz-steer", "cheese_vector")


def test_steer_home_shows_cheese_channels_and_retargeting(base: str, root: Path) -> None:
    text = get_ok(base, "/run/mz-steer")
    said = text_of(text)
    assert "Channels of block1.res2& whose activation map follows the cheese's cell" in said
    assert "(8 of 10)" in said
    channels = rows(text, "channels")
    assert channels[:3] == [["15", "+0.625"], ["12", "+0.500"], ["7", "+0.375"]]
    assert [c for c, _ in channels] == ["15", "12", "7", "5", "6", "0", "4", "2"]
    assert_figure(base, text, "mz-steer", "channels")
    _, retarget = fact_lists(text)
    assert retarget == {
        "site": "block1.res2&",
        "channels edited": "15, 12, 7, 5",
        "strength": "4",
        "target reached": "63.0% of 100 cheese-free mazes (without the edit 22.0%; a real cheese there 87.5%)",
    }
    assert rows(text, "calibration") == [
        ["4", "2", "50.0%", "25.0%"],
        ["4 ★", "4", "62.5%", "25.0%"],  # the edit the run measured
        ["8", "4", "56.2%", "25.0%"],
    ]
    assert_figure(base, text, "mz-steer", "fields_retarget")
    href = "/run/mz-steer/files/effect.safetensors"
    assert f'<a href="{href}" download="">' in text
    assert fetch(base, href).body == (root / "mz-steer" / "effect.safetensors").read_bytes()


# ---------------------------------------------------------------------------- errors, escaping


def test_broken_files_give_clear_error_pages(base: str) -> None:
    cases = {
        "/run/train-none": (
            404, "maze-train run train-none has no curve.safetensors: it did not finish"
        ),
        "/run/train-odd": (
            400, "maze-train run train-odd: curve.safetensors: not a complete mechscope.maze_curve/1"
        ),
        "/run/eval-bad": (
            400, "maze-eval run eval-bad: report.safetensors is not a readable result file"
        ),
        "/run/eval-none": (404, "maze-eval run eval-none has no report.safetensors"),
        "/run/eval-odd": (
            400,
            "maze-eval run eval-odd: report.safetensors holds mechscope.maze_curve/1, not "
            "mechscope.behaviour_report/1",
        ),
        "/run/steer-bad": (
            400, "maze-steer run steer-bad: steer.safetensors is not a readable result file"
        ),
        "/run/steer-odd": (
            400,
            "maze-steer run steer-odd: steer.safetensors: channel_order and correlation should "
            "be lists of one length, got 10 and 9",
        ),
    }  # fmt: skip
    assert_error_pages(base, cases)
    assert 'href="/run/eval-none/record"' in fetch(base, "/run/eval-none").text


def test_text_from_the_run_files_is_escaped(base: str) -> None:
    for run in ("mz-train", "mz-eval", "mz-steer"):
        text = get_ok(base, f"/run/{run}")
        assert XSS not in text, run
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text, run
    assert "block1.res2&amp;" in get_ok(base, "/run/mz-steer")


def test_the_page_reads_no_tensors() -> None:
    source = PAGE.read_text()
    assert not re.search(r"^\s*(import|from)\s+(torch|safetensors)", source, re.M)


def test_the_runs_are_listed_with_their_kinds(base: str) -> None:
    text = get_ok(base, "/")
    for run, kind in (("mz-train", "maze-train"), ("mz-eval", "maze-eval"),
                      ("mz-steer", "maze-steer")):  # fmt: skip
        row = re.search(rf'<tr><td><a href="/run/{run}">{run}</a></td><td>([\w-]+)</td>', text)
        assert row is not None and row[1] == kind

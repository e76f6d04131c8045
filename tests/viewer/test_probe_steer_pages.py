"""Probe and steer runs in the viewer: accuracy per layer, the steering sweep and its examples.

Real runs of the tiny Llama, built once for the module (a probe sweep over 24
contrast pairs with markup in their statements, and a steering sweep of two
layers × three coefficients), copies with a file broken, removed or made
hostile, all served by one real server. Numbers on the pages are checked
against what the library returned.
"""

from __future__ import annotations

import html
import random
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import markupsafe
import pytest

from conftest import (  # tests/viewer/conftest.py: one request, sent as is
    assert_error_pages,
    copy_run,
    edit_json,
    fetch,
    get_ok,
    text_of,
)
from mechscope.probes.results import ProbePairs
from mechscope.steering.results import SteeringExamples
from mechscope.testing import edit_result
from mechscope.viewer import serve
from mechscope.viewer.tokens import show_token

SCRIPT = "<script>alert(1)</script>"
LABELS = {"ccs": "CCS", "logistic": "logistic", "mean_diff": "mean diff"}  # as on the page
METHODS = tuple(LABELS)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The run folders under ``root`` and what the library returned for each."""
    import torch

    from mechscope.probes.data import ContrastPair
    from mechscope.probes.runs import probe_run
    from mechscope.steering.runs import steer_run
    from mechscope.steering.vectors import SteeringVector
    from mechscope.testing import tiny_model

    root = tmp_path_factory.mktemp("probe-steer") / "runs"
    rng = random.Random(0)
    labels = [i % 2 == 0 for i in range(24)]
    rng.shuffle(labels)
    pairs = [
        ContrastPair(f"Statement {i} says <b>{'yes' if label else 'no'}</b> & more", label)
        for i, label in enumerate(labels)
    ]
    model = tiny_model("llama")
    probes = probe_run(
        model, pairs, root / "probe-x", test=8, restarts=2, epochs=20, progress=False
    )
    with torch.no_grad():  # sharper next-token distributions, so steering can cost perplexity
        model.hf.model.norm.weight.mul_(30)
    sweep = steer_run(
        model,
        [
            SteeringVector(torch.randn(32, generator=torch.Generator().manual_seed(layer)), layer)
            for layer in (0, 1)
        ],
        [0.0, 4.0, 64.0],
        root / "steer-x",
        words=["a", "b"],
        score=lambda texts: 1 - len(set("".join(texts))) / 100,
        target="repetitiveness",
        prompts=["hello there", "abc def"],
        samples=2,
        max_new_tokens=5,
        corpus=torch.randint(3, 250, (2, 10), generator=torch.Generator().manual_seed(0)),
        progress=False,
    )
    assert (sweep.perplexity_rise > 0.10).any(), "the fixture needs a cell over the bound"

    def copy(name: str, to: str) -> Path:
        return copy_run(root, name, to)

    edit = edit_json

    (copy("probe-x", "probe-bad") / "probes.safetensors").write_text("{ not a result")
    odd = copy("probe-x", "probe-odd") / "probes.safetensors"
    edit_result(odd, lambda r, _: r["accuracy"]["ccs"].pop())
    (copy("probe-x", "probe-none") / "probes.safetensors").unlink()
    bad_pairs = copy("probe-x", "probe-bad-pairs") / "pairs.safetensors"
    edit_result(bad_pairs, lambda r, _: r.update(n_train=99))
    (copy("probe-x", "probe-no-pairs") / "pairs.safetensors").unlink()
    (copy("steer-x", "steer-bad") / "sweep.safetensors").write_bytes(b"\x00garbage")
    odd = copy("steer-x", "steer-odd") / "sweep.safetensors"
    edit_result(odd, lambda _, t: t.update(kl=t["kl"][:, :2].contiguous()))
    no_best = copy("steer-x", "steer-no-best")
    (no_best / "examples.safetensors").unlink()
    (copy("steer-x", "steer-no-examples") / "examples.safetensors").unlink()
    edit(no_best / "run.json", lambda d: d.update(best=None))
    hostile = copy("steer-x", "steer-hostile")

    def poison(r: dict[str, Any], _: Any) -> None:
        r["steered"][0] = SCRIPT + " & more"
        r["prompts"][1] = "<b>bold</b>"

    edit_result(hostile / "examples.safetensors", poison)
    edit_result(hostile / "sweep.safetensors", lambda r, _: r.update(target="<i>topic</i>"))
    return SimpleNamespace(root=root, pairs=pairs, probes=probes, sweep=sweep)


@pytest.fixture(scope="module")
def base(runs: SimpleNamespace) -> Iterator[str]:
    with serve([runs.root]) as viewer:
        yield viewer.url.rstrip("/")


def facts(text: str) -> dict[str, str]:
    """The page's facts list (dt → dd), as text."""
    return {text_of(k): text_of(v) for k, v in re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", text)}


def interval(acc: Any) -> str:
    return f"{acc.value:.3f} [{acc.low:.3f}, {acc.high:.3f}]"


# ---------------------------------------------------------------------------- probe runs


def test_probe_home_shows_accuracy_per_layer_with_the_best_layers_marked(
    base: str, runs: Any
) -> None:
    probes = runs.probes
    text = get_ok(base, "/run/probe-x")
    rows = dict(re.findall(r'<tr data-layer="(\d+)">(.*?)</tr>', text))
    assert [int(layer) for layer in rows] == probes.layers
    for method in METHODS:
        best_layer, best = probes.best(method)
        for i, layer in enumerate(probes.layers):
            cell = re.search(
                rf'<td class="([^"]*)" data-method="{method}"[^>]*>(.*?)</td>', rows[str(layer)]
            )
            assert cell is not None, (method, layer)
            acc = probes.accuracy[method][i]
            assert cell[2].startswith(interval(acc))
            assert (cell[1] == "best") == (layer == best_layer), (method, layer)
        shown = facts(text)[f"best {LABELS[method]}"]
        assert shown == f"{interval(best)} at layer {best_layer}"
    zero = re.search(
        r'data-baseline="zero_shot"><th scope="row">zero-shot</th><td[^>]*>(.*?)</td>', text
    )
    assert zero is not None and zero[1] == interval(probes.zero_shot)
    calibrated = re.search(r'data-baseline="zero_shot_calibrated">.*?<td[^>]*>(.*?)</td>', text)
    assert calibrated is not None and calibrated[1] == interval(probes.zero_shot_calibrated)
    assert facts(text)["dataset"] == "custom"
    assert facts(text)["pairs"] == "16 pairs to fit, 8 pairs held out"
    assert "max(acc, 1 − acc)" in text and "sign-free" in text
    assert repr(probes) in html.unescape(text)  # the summary


def test_probe_home_embeds_the_figure_and_links_the_directions(base: str, runs: Any) -> None:
    text = get_ok(base, "/run/probe-x")
    frame = re.search(r'<iframe class="figure"[^>]* src="([^"]+)"', text)
    assert frame is not None and frame[1] == "/run/probe-x/files/figures/accuracy.html"
    assert fetch(base, frame[1]).headers["content-type"].startswith("text/html")
    png = fetch(base, "/run/probe-x/files/figures/accuracy.png")
    assert '<a href="/run/probe-x/files/figures/accuracy.png">png</a>' in text
    assert png.status == 200 and png.headers["content-type"] == "image/png"
    folder = runs.root / "probe-x" / "directions"
    saved = sorted(p.name for p in folder.glob("*.safetensors"))
    assert saved == sorted(f"{m}_L{runs.probes.best(m)[0]}.safetensors" for m in METHODS)
    for name in saved:
        href = f"/run/probe-x/files/directions/{name}"
        assert f'<a href="{href}" download="">' in text
        assert fetch(base, href).body == (folder / name).read_bytes()


def test_probe_home_shows_a_sample_of_the_pairs_escaped(base: str, runs: Any) -> None:
    text = get_ok(base, "/run/probe-x")
    table = re.search(r'<table class="grid pairs">.*?<tbody>(.*?)</tbody>', text)
    assert table is not None
    rows = [
        [text_of(c) for c in re.findall(r"<td>(.*?)</td>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", table[1])
    ]
    shown = [*range(5), *range(16, 21)]  # the first training and held-out pairs
    assert [int(r[0]) for r in rows] == shown
    for row, i in zip(rows, shown, strict=True):
        pair = runs.pairs[i]
        assert row[1:] == [
            "train" if i < 16 else "held out",
            pair.statement,
            "true" if pair.label else "false",
        ]
    assert "<b>yes</b>" not in text and "&lt;b&gt;yes&lt;/b&gt; &amp; more" in text
    assert '<a href="/run/probe-x/files/pairs.safetensors" download="">' in text
    saved = ProbePairs.load(runs.root / "probe-x" / "pairs.safetensors")
    assert saved.pairs == runs.pairs and saved.n_train == runs.probes.n_train == 16
    assert "No pairs.safetensors in this run." in get_ok(base, "/run/probe-no-pairs")


# ---------------------------------------------------------------------------- steer runs


def test_steer_home_leads_with_the_examples_side_by_side(base: str, runs: Any) -> None:
    text = get_ok(base, "/run/steer-x")
    examples = SteeringExamples.load(runs.root / "steer-x" / "examples.safetensors")
    layer, coef, *_ = runs.sweep.best()
    assert (examples.layer, examples.coef) == (layer, coef)
    table = re.search(r'<table class="grid examples">.*?<tbody>(.*?)</tbody>', text)
    assert table is not None
    assert text.index('class="grid examples"') < text.index('id="sweep"')  # the headline
    rows = re.findall(r"<tr>(.*?)</tr>", table[1])
    assert len(rows) == 2
    for row, (prompt, plain, steered) in zip(rows, examples.rows, strict=True):
        cells = re.findall(r"<td>(.*?)</td>", row)
        assert cells == [
            str(markupsafe.escape(prompt)),
            f'<div class="tokens">{show_token(plain)}</div>',
            f'<div class="tokens">{show_token(steered)}</div>',
        ]
    assert examples.steered != examples.unsteered
    assert "the layer" in text and f"with {coef:g} × the layer {layer} vector added" in text


def test_steer_sweep_table_marks_costly_cells_and_the_best_one(base: str, runs: Any) -> None:
    sweep = runs.sweep
    text = get_ok(base, "/run/steer-x")
    cells = re.findall(
        r'<td class="([^"]*)" data-layer="(\d+)" data-coef="([^"]+)" data-factor="([^"]+)" '
        r'data-effect="([^"]+)" data-rise="([^"]+)" data-kl="([^"]+)">(.*?)</td>',
        text,
    )
    assert len(cells) == len(sweep.layers) * len(sweep.coefs)
    best = sweep.best()
    rise = sweep.perplexity_rise
    for cls, layer, coef, factor, effect, shown_rise, kl, content in cells:
        i, j = sweep.layers.index(int(layer)), sweep.coefs.index(float(coef))
        assert float(factor) == pytest.approx(float(sweep.factor()[i, j]), rel=1e-5)
        assert f"×{float(sweep.factor()[i, j]):.1f}" in content
        assert float(effect) == pytest.approx(float(sweep.effect[i, j]))
        assert float(shown_rise) == pytest.approx(float(rise[i, j]), rel=1e-5)
        assert float(kl) == pytest.approx(float(sweep.kl[i, j]))
        over = float(rise[i, j]) > 0.10
        assert ("over" in cls.split()) == over
        assert ("⚠ over 10%" in content) == over
        assert f"perplexity {float(rise[i, j]):+.1%}" in content
        is_best = (int(layer), float(coef)) == best[:2]
        assert ("best" in cls.split()) == is_best
    assert sum("over" in c[0].split() for c in cells) == int((rise > 0.10).sum()) > 0
    bi, bj = sweep.layers.index(best[0]), sweep.coefs.index(best[1])
    assert facts(text)["best cell"] == (
        f"layer {best[0]} × {best[1]:g}: target words ×{float(sweep.factor()[bi, bj]):.1f} as "
        f"likely next; repetitiveness {float(sweep.effect[bi, bj]):.3f} "
        f"(unsteered {sweep.baseline_effect:.3f}); perplexity {best[3]:+.1%}"
    )
    assert repr(sweep) in html.unescape(text)


def test_steer_home_has_figures_samples_and_vectors(base: str, runs: Any) -> None:
    sweep = runs.sweep
    text = get_ok(base, "/run/steer-x")
    frames = re.findall(r'<iframe class="figure"[^>]* src="([^"]+)"', text)
    assert frames == [
        f"/run/steer-x/files/figures/sweep_{s}.html"
        for s in ("probability", "effect", "perplexity")
    ]
    for src in frames:
        assert fetch(base, src).status == 200
        assert f'<a href="{src[:-4]}png">png</a>' in text
    details = re.findall(r'<details class="samples" data-cell="([^"]+)">(.*?)</details>', text)
    assert [key for key, _ in details] == ["unsteered"] + [
        f"{layer},{coef:g}" for layer in sweep.layers for coef in sweep.coefs
    ]
    for key, inner in details:
        items = re.findall(r'<li><div class="tokens">(.*?)</div></li>', inner)
        assert items == [str(show_token(t)) for t in sweep.samples[key]]
    for layer in sweep.layers:
        href = f"/run/steer-x/files/vectors/L{layer}.safetensors"
        assert f'<a href="{href}" download="">' in text
        assert fetch(base, href).status == 200


def test_a_sweep_without_a_best_cell_says_why_there_are_no_examples(base: str) -> None:
    text = get_ok(base, "/run/steer-no-best")
    assert "No examples: no cell kept the perplexity rise within 10%" in text
    assert facts(text)["best cell"] == "none: every cell raises perplexity more than 10%"
    assert 'class="best"' not in text and 'class="over best"' not in text
    text = get_ok(base, "/run/steer-no-examples")  # an older run, with examples.json only
    assert "No examples: the run did not write examples.safetensors." in text


# ---------------------------------------------------------------------------- index, errors


def test_probe_and_steer_runs_are_listed_on_the_home_page(base: str) -> None:
    text = get_ok(base, "/")
    for run, kind in (("probe-x", "probe"), ("steer-x", "steer")):
        row = re.search(rf'<tr><td><a href="/run/{run}">{run}</a></td><td>(\w+)</td>', text)
        assert row is not None and row[1] == kind


def test_broken_files_give_clear_error_pages(base: str) -> None:
    cases = {
        "/run/probe-bad": (400, "probe run probe-bad: "),
        "/run/probe-odd": (
            400,
            "probe run probe-odd: probes.safetensors: probe results: ccs has 1 accuracies for 2 layers",
        ),
        "/run/probe-none": (
            404,
            "probe run probe-none has no probes.safetensors: it did not finish",
        ),
        "/run/probe-bad-pairs": (
            400,
            "probe run probe-bad-pairs: pairs.safetensors: probe pairs: 99 training pairs of 24",
        ),
        "/run/steer-bad": (400, "steer run steer-bad: "),
        "/run/steer-odd": (
            400,
            "steer run steer-odd: sweep.safetensors: a steering sweep's kl grid is [2, 2], not [2 layers, 3 "
            "coefficients]",
        ),
    }
    assert_error_pages(base, cases)
    for run, name in (("probe-bad", "probes.safetensors"), ("steer-bad", "sweep.safetensors")):
        assert f"{name} is not a readable result file" in html.unescape(
            fetch(base, f"/run/{run}").text
        )
    assert 'href="/run/probe-none/record"' in fetch(base, "/run/probe-none").text


def test_text_from_the_run_files_is_escaped(base: str) -> None:
    text = get_ok(base, "/run/steer-hostile")
    assert SCRIPT not in text and "<b>bold</b>" not in text and "<i>topic</i>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in text
    assert "&lt;b&gt;bold&lt;/b&gt;" in text
    assert facts(text)["target"] == "<i>topic</i>"


# ---------------------------------------------------------------------------- Chromium


def test_probe_and_steer_pages_render_in_chromium(page: Any, base: str, runs: Any) -> None:
    from playwright.sync_api import expect

    pg, errors = page, page.errors
    pg.goto(f"{base}/run/probe-x")
    pg.locator("iframe.figure").scroll_into_view_if_needed()
    plot = pg.frame_locator("iframe.figure").locator(".plotly-graph-div .main-svg").first
    expect(plot).to_be_visible()  # plotly ran, from the script served beside the figure
    best = pg.locator("table#accuracy td.best").first
    expect(best).to_have_css("font-weight", "700")
    pg.goto(f"{base}/run/steer-x")
    expect(pg.locator("table.examples tbody tr")).to_have_count(2)
    assert pg.locator("table#sweep td.over").count() > 0
    colours = pg.locator("table#sweep td.over, table#sweep td.best").evaluate_all(
        "tds => tds.map(td => getComputedStyle(td).backgroundColor)"
    )
    assert "rgba(0, 0, 0, 0)" not in colours  # marked cells are visibly shaded
    assert errors == []

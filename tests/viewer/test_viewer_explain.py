"""Explain runs in the viewer: the run's summary, explained-unit pages, the harvest's Explanations.

One real tiny harvest and one real explain run for the module, explained and
simulated by scripted backends so the text is known: a good explanation, a
failed one whose raw answer holds a ``<script>``, an explanation that *is* a
``<script>``, and one failed simulation with a ``<script>`` raw answer.
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from mechscope.autointerp import ExplainSummary, explain_run
from mechscope.harvest import harvest, open_harvest
from mechscope.testing import ScriptedBackend as Scripted
from mechscope.testing import tiny_model
from mechscope.viewer import App, serve

SITE = "blocks.1.mlp.post"
UNITS = [(SITE, u) for u in range(4)]
XSS = "<script>alert(1)</script>"
RAW_XSS = "123\n<script>alert(2)</script>"  # fails: no words on its first line
SIM_XSS = "<script>alert(3)</script> no list here"
EXPLANATIONS = ["the letter e", RAW_XSS, XSS, "spaces between words"]
FAILED_SIM_CALL = 2  # the 2nd simulation asked for: unit 0, llm, 2nd held-out window


def simulator_answers() -> Callable[[Any], str]:
    """Simulations that vary with the tokens (one fails, see FAILED_SIM_CALL); yes/no otherwise."""
    calls = {"sim": 0, "judge": 0}

    def answer(messages: Any) -> str:
        task = messages[-1]["content"]
        found = re.search(r"Tokens: (\[.*\])\n\nAnswer with a JSON list", task, re.DOTALL)
        if found is None:
            calls["judge"] += 1
            return "Yes" if calls["judge"] % 2 else "No"
        calls["sim"] += 1
        if calls["sim"] == FAILED_SIM_CALL:
            return SIM_XSS
        tokens = json.loads(found.group(1))
        return json.dumps([(3 * len(t) + i) % 11 for i, t in enumerate(tokens)])

    return answer


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a real harvest (``harvest-real``) and its explain run (``explain-demo``)."""
    root = tmp_path_factory.mktemp("explain") / "runs"
    harvest(
        tiny_model("llama"),
        "fortunes",
        out=root / "harvest-real",
        sites=SITE,
        tokens=48 * 16,
        window=16,
        k=10,
        n_random=6,
        batch_size=8,
        progress=False,
    )
    explain_run(
        open_harvest(root / "harvest-real"),
        UNITS,
        explainer=Scripted(EXPLANATIONS),
        simulator=Scripted([simulator_answers()]),
        out=root / "explain-demo",
        n_show=3,
        n_test=2,
        progress=False,
    )
    return root


@pytest.fixture(scope="module")
def base(runs: Path) -> Iterator[str]:
    with serve([runs]) as viewer:
        yield viewer.url.rstrip("/")


def get(base: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(base + path, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def records(runs: Path, name: str) -> list[dict[str, Any]]:
    lines = (runs / "explain-demo" / f"{name}.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines]


class Tables(HTMLParser):
    """The text of every cell of every ``<table>``, by the table's class: {cls: [[cell, …], …]}."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._rows: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._rows = self.tables.setdefault(dict(attrs).get("class") or "", [])
        elif tag == "tr" and self._rows is not None:
            self._rows.append([])
        elif tag in ("td", "th") and self._rows is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._rows is not None and self._cell is not None:
            self._rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._rows = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_explain_home_shows_what_judged_the_summary_and_every_unit(base: str, runs: Path) -> None:
    status, text = get(base, "/run/explain-demo")
    assert status == 200
    assert "json:scripted" in text and "scripted" in text  # simulator, explainer and judge
    assert '<a href="/run/harvest-real">harvest-real</a>' in text  # the harvest, served here
    tables = Tables(text).tables
    summary = ExplainSummary.load(runs / "explain-demo" / "summary.safetensors").records()
    rows = tables["grid summary"][1:]
    assert len(rows) == len(summary) == 9  # 3 methods × 3 scorers
    for row, want in zip(rows, summary, strict=True):
        assert row[:2] == [want["method"], want["scorer"]] and row[4] == str(want["n"])
        if want["mean"] == want["mean"]:  # not NaN
            assert row[2] == f"{want['mean']:.3f}"
    units = tables["grid units"]
    assert units[0] == ["site", "unit", "LLM explanation", "correlation", "detection", "fuzzing"]
    assert [r[:3] for r in units[1:]] == [
        [SITE, "0", "the letter e"],
        [SITE, "1", f"failed: no words in the answer: {RAW_XSS[:80]!r}"],
        [SITE, "2", XSS],
        [SITE, "3", "spaces between words"],
    ]
    assert "no explanation" in units[2][3]  # the failed unit has no LLM scores
    for _, unit in UNITS:
        assert f'<a href="/run/explain-demo/explained/{SITE}/{unit}">{unit}</a>' in text


def test_explained_unit_page_shows_each_held_out_window_actual_above_simulated(
    base: str, runs: Path
) -> None:
    status, text = get(base, f"/run/explain-demo/explained/{SITE}/0")
    assert status == 200
    tables = Tables(text).tables
    methods = {r[0]: r[1] for r in tables["grid explanations"][1:]}
    assert methods["llm"] == "the letter e"
    assert methods["top_tokens"].startswith("the tokens")
    llm = {r["unit"]: r for r in records(runs, "explanations") if r["method"] == "llm"}
    donor = re.search(r"the LLM explanation of blocks\.1\.mlp\.post:(\d+)", methods["random"])
    assert donor is not None and donor.group(1) != "0"
    assert methods["random"].startswith(llm[int(donor.group(1))]["text"] or "failed")
    scores = tables["grid scores"]
    assert scores[0] == ["method", "correlation", "detection", "fuzzing"]
    assert [r[0] for r in scores[1:]] == ["llm", "top_tokens", "random"]
    assert "1 failed" in scores[1][1]  # the failed simulation

    sims = [r for r in records(runs, "simulations") if r["unit"] == 0 and r["method"] == "llm"]
    assert len(sims) == 4  # 2 held-out top windows and 2 random ones
    section = text.split('<section class="sim" id="sim-llm">')[1].split("</section>")[0]
    windows = section.split('<div class="example sim-window ')[1:]
    assert len(windows) == len(sims)
    for block, sim in zip(windows, sims, strict=True):
        actual = block.split('<div class="tokens actual">')[1].split("</div>")[0]
        acts = re.findall(r'data-act="([^"]+)"', actual)
        assert acts == [f"{a:.6g}" for a in sim["true"]]
        if sim["simulated"] is None:
            assert "simulation failed: no JSON list in the answer" in block
            assert "&lt;script&gt;alert(3)&lt;/script&gt; no list here" in block
        else:
            simulated = block.split('<div class="tokens simulated">')[1].split("</div>")[0]
            values = re.findall(r'data-act="([^"]+)"', simulated)
            assert values == [f"{v:.6g}" for v in sim["simulated"]]
            assert "background:rgba(255,110,0," in simulated
    assert sum(s["simulated"] is None for s in sims) == 1
    for method in ("top_tokens", "random"):  # baselines: folded sections
        assert f'<details class="sim" id="sim-{method}">' in text
    assert f'href="/run/harvest-real/unit/{SITE}/0" id="harvest-unit"' in text
    assert f'href="/run/explain-demo/explained/{SITE}/1" rel="next" id="next-unit"' in text
    assert 'rel="prev"' not in text
    _, last = get(base, f"/run/explain-demo/explained/{SITE}/3")
    assert f'href="/run/explain-demo/explained/{SITE}/2" rel="prev"' in last
    assert 'rel="next"' not in last


def test_harvest_unit_page_lists_the_explanations_of_its_unit(base: str) -> None:
    status, text = get(base, f"/run/harvest-real/unit/{SITE}/0")
    assert status == 200
    section = text.split('<section id="explanations">')[1].split("</section>")[0]
    rows = Tables(section).tables["grid explanations"][1:]
    assert len(rows) == 1 and rows[0][:2] == ["explain-demo", "the letter e"]
    assert "correlation" in rows[0][2] and "fuzzing" in rows[0][2]
    assert f'<a href="/run/explain-demo/explained/{SITE}/0">explain-demo</a>' in section
    _, other = get(base, f"/run/harvest-real/unit/{SITE}/9")  # not explained
    assert 'id="explanations"' not in other and 'id="top-examples"' in other


def test_unknown_units_are_friendly_404s(base: str) -> None:
    for path in (
        f"/run/explain-demo/explained/{SITE}/9",
        "/run/explain-demo/explained/blocks.0.mlp.post/0",
    ):
        status, text = get(base, path)
        assert status == 404 and "explain-demo did not explain" in text, path
    status, text = get(base, f"/run/harvest-real/explained/{SITE}/0")
    assert status == 404 and "explain runs" in text


def test_model_output_is_escaped_everywhere(base: str) -> None:
    pages = [
        "/run/explain-demo",
        *(f"/run/explain-demo/explained/{SITE}/{u}" for u in range(4)),
        f"/run/harvest-real/unit/{SITE}/2",
    ]
    for path in pages:
        status, text = get(base, path)
        assert status == 200, path
        assert "<script>alert" not in text, path
    _, failed = get(base, f"/run/explain-demo/explained/{SITE}/1")
    assert "failed: no words in the answer" in failed
    assert '<pre class="raw">123\n&lt;script&gt;alert(2)&lt;/script&gt;</pre>' in failed
    _, scripted = get(base, f"/run/explain-demo/explained/{SITE}/2")
    assert '<span class="explanation">&lt;script&gt;alert(1)&lt;/script&gt;</span>' in scripted


def test_a_run_with_parquet_tables_only_reads_the_same(runs: Path, tmp_path: Path) -> None:
    copy = tmp_path / "explain-parquet"
    shutil.copytree(runs / "explain-demo", copy)
    for name in ("explanations", "scores", "simulations"):
        (copy / f"{name}.jsonl").unlink()
    path = f"/run/{{}}/explained/{SITE}/0"
    ours = App([copy]).handle("GET", path.format("explain-parquet")).body.decode()
    theirs = App([runs / "explain-demo"]).handle("GET", path.format("explain-demo")).body.decode()
    assert ours.replace("explain-parquet", "explain-demo") == theirs


def test_a_run_without_its_summary_result_says_so(runs: Path, tmp_path: Path) -> None:
    copy = tmp_path / "explain-old"
    shutil.copytree(runs / "explain-demo", copy)
    (copy / "summary.safetensors").unlink()  # a run from before the summary was a result
    page = App([copy]).handle("GET", "/run/explain-old")
    assert page.status == 404 and "has no summary.safetensors" in page.body.decode()


# ---------------------------------------------------------------------------- Chromium


def test_explained_unit_in_chromium_colours_both_rows_and_shows_values(
    browser: Any, base: str, runs: Path
) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    dialogs: list[str] = []
    errors: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: errors.append(str(e)))
    sims = [r for r in records(runs, "simulations") if r["unit"] == 0 and r["method"] == "llm"]
    try:
        page.goto(f"{base}/run/explain-demo/explained/{SITE}/0")
        actual = page.locator("#sim-llm .tokens.actual .tok")
        simulated = page.locator("#sim-llm .tokens.simulated .tok")
        assert actual.count() == sum(len(s["tokens"]) for s in sims)
        assert simulated.count() == sum(len(s["tokens"]) for s in sims if s["simulated"])
        for row in (actual, simulated):
            colours = row.evaluate_all("ts => ts.map(t => getComputedStyle(t).backgroundColor)")
            assert len(set(colours)) >= 4  # shaded by value, not one colour
        # the two rows of a window wrap alike: each simulated token sits under its actual one
        first = page.locator("#sim-llm .sim-window").first
        xs = [
            first.locator(f".tokens.{row} .tok").evaluate_all(
                "ts => ts.map(t => Math.round(t.getBoundingClientRect().left))"
            )
            for row in ("actual", "simulated")
        ]
        assert xs[0] == xs[1]
        sim = next(s for s in sims if s["simulated"])
        window = page.locator(f'#sim-llm .sim-window[data-window="{sim["window"]}"]')
        peak = max(range(len(sim["simulated"])), key=lambda i: sim["simulated"][i])
        window.locator(".tokens.simulated .tok").nth(peak).hover()
        expect(page.locator("#tip")).to_contain_text(f"simulated {sim['simulated'][peak]:.6g}")
        window.locator(".tokens.actual .tok").nth(0).hover()
        expect(page.locator("#tip")).to_contain_text(f"actual {sim['true'][0]:.6g}")
        failed = page.locator("#sim-llm .sim-failed pre.raw")
        expect(failed).to_have_text(SIM_XSS)
        page.keyboard.press("j")
        page.wait_for_url(f"**/explained/{SITE}/1")
        expect(page.locator("pre.raw").first).to_have_text(RAW_XSS)
        page.keyboard.press("j")
        page.wait_for_url(f"**/explained/{SITE}/2")
        expect(page.locator("span.explanation").first).to_have_text(XSS)
        assert page.evaluate("document.querySelectorAll('main script').length") == 0
        assert dialogs == [] and errors == []
    finally:
        context.close()

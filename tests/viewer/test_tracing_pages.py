"""Trace and edit runs in the viewer: one-fact and averaged traces, a fact's page, a ROME edit.

Real runs of the tiny Llama, built once for the module (a one-fact trace, a
trace of three facts, a trace of a subject with markup in it, a ROME edit
at layer 0), and copies with a file broken, removed or made hostile, all
served by one real server. Numbers on the pages are checked against what
the library returned.
"""

from __future__ import annotations

import html
import http.client
import math
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from conftest import assert_error_pages
from mechscope.testing import edit_result
from mechscope.tracing.average import TOKEN_KINDS
from mechscope.viewer import serve

HOSTILE = "<b>Rome</b>"
SCRIPT = "<script>alert(1)</script>"
KINDS = ("hidden", "mlp", "attn")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """The run folders under ``root`` and what the library returned for each."""
    from mechscope.testing import tiny_model
    from mechscope.tracing.facts import Fact
    from mechscope.tracing.rome import RomeConfig
    from mechscope.tracing.runs import edit_run, trace_run

    base = tmp_path_factory.mktemp("tracing")
    root = base / "runs"
    model = tiny_model("llama")
    city = "The city of {} lies in"
    facts = [
        Fact("Rome", city, "Italy"),
        Fact("Paris", city, "France"),
        Fact("New York", city, "America"),
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MECHSCOPE_CACHE", str(base / "cache"))  # the key covariance is cached there
        one = trace_run(model, facts[0], root / "t-one", samples=2, noise=5.0, progress=False)
        many = trace_run(model, facts, root / "t-many", samples=2, noise=5.0, progress=False)
        trace_run(
            model,
            Fact(HOSTILE, city, "Italy & <i>co</i>"),
            root / "t-hostile",
            samples=1,
            noise=5.0,
            kinds=("hidden",),
            progress=False,
        )
        capital = "The capital of {} is the city of"
        report, edit = edit_run(
            model,
            Fact("Rome", capital, "Italy", "country_capital"),
            "France",
            [
                Fact("Paris", capital, "France", "country_capital"),
                Fact("Berlin", capital, "Germany", "country_capital"),
            ],  # fmt: skip
            root / "e-one",
            layer=0,
            config=RomeConfig(steps=3, prefixes=2, prefix_length=3, covariance_tokens=2000),
            progress=False,
        )

    def copy(name: str, to: str) -> Path:
        return Path(shutil.copytree(root / name, root / to))

    (copy("e-one", "e-bad-report") / "report.safetensors").write_text("{ not a result")
    (copy("e-one", "e-no-report") / "report.safetensors").unlink()
    odd = copy("e-one", "e-odd-report") / "report.safetensors"
    edit_record(odd, lambda r: r["after"]["paraphrase"].pop())
    hostile = copy("e-one", "e-hostile") / "report.safetensors"

    def poison(record: dict[str, Any]) -> None:
        record["fact"]["subject"] = HOSTILE
        record["generations_after"][0] = SCRIPT + " & more"

    edit_record(hostile, poison)
    (copy("t-one", "t-bad") / "trace.safetensors").write_bytes(b"\x00garbage")
    (copy("t-one", "t-empty") / "trace.safetensors").unlink()
    yield SimpleNamespace(root=root, one=one, many=many, report=report, edit=edit)


def edit_record(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply `change` to the JSON record of the result saved in `path`, in place (arrays kept)."""
    edit_result(path, lambda record, _: change(record))


@pytest.fixture(scope="module")
def base(runs: SimpleNamespace) -> Iterator[str]:
    with serve([runs.root]) as viewer:
        yield viewer.url.rstrip("/")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str


def get(base: str, path: str) -> Reply:
    """One GET, not following redirects."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        return Reply(resp.status, headers, resp.read().decode("utf-8", "replace"))
    finally:
        conn.close()


@dataclass
class Cell:
    text: str
    attrs: dict[str, str]
    links: list[str] = field(default_factory=list)


@dataclass
class Row:
    attrs: dict[str, str]
    cells: list[Cell] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.cells]


class Page(HTMLParser):
    """A page's tables (by id, else class) as rows of cells, its images and its facts list."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[Row]] = {}
        self.images: list[str] = []
        self._rows: list[Row] | None = None
        self._cell: Cell | None = None
        self.feed(text)
        self.facts = {
            _text(k): _text(v) for k, v in re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", text)
        }

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._rows = self.tables.setdefault(a.get("id") or a.get("class", ""), [])
        elif tag == "tr" and self._rows is not None:
            self._rows.append(Row(a))
        elif tag in ("td", "th") and self._rows is not None:
            self._cell = Cell("", a)
            self._rows[-1].cells.append(self._cell)
        elif tag == "a" and self._cell is not None:
            self._cell.links.append(a["href"])
        elif tag == "img":
            self.images.append(a["src"])

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self._cell.text = " ".join(self._cell.text.split())
            self._cell = None
        elif tag == "table":
            self._rows = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.text += data

    def body(self, table: str) -> list[Row]:
        """The table's rows after its header row."""
        return self.tables[table][1:]


def _text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", fragment)).split())


def g4(x: float) -> str:
    return f"{x:.4g}"


# ---------------------------------------------------------------------------- traces


def test_one_fact_home_shows_the_fact_and_its_probabilities(base: str, runs: Any) -> None:
    tr = runs.one
    reply = get(base, "/run/t-one")
    assert reply.status == 200
    page = Page(reply.text)
    assert page.facts["prompt"] == "The city of Rome lies in"
    start, end = tr.subject
    assert page.facts["subject"] == f"Rome (tokens {start}–{end - 1})"
    assert page.facts["object"] == "Italy"
    assert page.facts["P(object), clean"] == g4(tr.clean)
    assert page.facts["P(object), corrupted"] == g4(tr.corrupted)
    assert page.facts["noise"].startswith("5 ")
    assert page.facts["samples"] == "2"
    assert page.facts["window"].startswith("10 layers")
    assert "indirect effect</strong> of a state" in reply.text
    assert '<a href="/run/t-one/facts">facts</a>' in reply.text


def test_one_fact_home_embeds_the_figures_and_a_heat_table_per_kind(base: str, runs: Any) -> None:
    tr = runs.one
    reply = get(base, "/run/t-one")
    page = Page(reply.text)
    assert [Path(unquote(src)).name for src in page.images] == [f"trace_{k}.png" for k in KINDS]
    for src in page.images:
        served = get(base, src)
        assert served.status == 200 and served.headers["content-type"] == "image/png"
    start, end = tr.subject
    for kind in KINDS:
        ie = tr.indirect_effect(kind)  # [layer, pos]
        rows = page.body(f"heat-{kind}")
        assert [r.cells[0].text.rstrip("*") for r in rows] == [
            t if t.strip() else "␣" * len(t) for t in tr.tokens
        ]
        assert [r.attrs.get("class") == "subject" for r in rows] == [
            start <= p < end for p in range(len(tr.tokens))
        ]
        for pos, row in enumerate(rows):
            values = [float(c.attrs["data-value"]) for c in row.cells[1:]]
            assert values == pytest.approx(ie[:, pos].tolist(), abs=1e-8)
            assert "indirect effect" in row.cells[1].attrs["title"]
        # shaded relative to the largest effect, in either direction
        cells = sorted(
            (c for r in rows for c in r.cells[1:]), key=lambda c: abs(float(c.attrs["data-value"]))
        )
        assert cells[-1].attrs["style"].endswith(",1.000)")
        assert cells[0].attrs["style"] == "" or not cells[0].attrs["style"].endswith(",1.000)")


def test_averaged_home_shows_peaks_and_max_effect_per_token_kind(base: str, runs: Any) -> None:
    avg = runs.many
    reply = get(base, "/run/t-many")
    assert reply.status == 200
    page = Page(reply.text)
    assert page.facts["facts"] == "3 (list them)"
    assert page.facts["P(object), clean (mean)"] == g4(avg.clean)
    assert page.facts["P(object), corrupted (mean)"] == g4(avg.corrupted)
    names = {"hidden": "hidden state", "mlp": "MLP output", "attn": "attention output"}
    peaks = {r.texts[0]: r.texts[1:] for r in page.body("grid peaks")}
    for kind in KINDS:
        token_kind, layer, value = avg.peak(kind)
        assert peaks[names[kind]] == [token_kind, str(layer), g4(value)]
        rows = page.body(f"grid aie {kind}")
        grid = avg.effects[kind]
        for g, row in enumerate(rows):
            assert row.texts[:2] == [TOKEN_KINDS[g], str(avg.counts[g])]
            assert row.texts[2:] == [g4(float(grid[g].max())), str(int(grid[g].argmax()))]
        assert len(page.body(f"heat-{kind}")) == len(TOKEN_KINDS)
    for line in avg.summary().splitlines():
        assert line in html.unescape(reply.text)
    stems = [Path(unquote(src)).stem for src in page.images]
    assert stems == [f"average_{k}" for k in KINDS]


def test_facts_page_lists_every_fact_and_each_has_its_page(base: str, runs: Any) -> None:
    from mechscope.tracing.trace import CausalTrace

    reply = get(base, "/run/t-many/facts")
    assert reply.status == 200
    page = Page(reply.text)
    rows = page.body("grid facts")
    assert len(rows) == 3
    for n, row in enumerate(rows):
        tr = CausalTrace.load(runs.root / "t-many" / "facts" / f"{n:04d}.safetensors")
        maxima = [g4(float(tr.indirect_effect(k).max())) for k in KINDS]
        assert row.texts == [
            str(n),
            tr.fact.prompt,
            tr.fact.object,
            g4(tr.clean),
            g4(tr.corrupted),
            *maxima,
        ]
        assert row.cells[1].links == [f"/run/t-many/fact/{n}"]
        fact = get(base, f"/run/t-many/fact/{n}")
        assert fact.status == 200
        shown = Page(fact.text)
        assert shown.facts["prompt"] == tr.fact.prompt
        assert shown.facts["P(object), clean"] == g4(tr.clean)
        for kind in KINDS:
            heat = shown.body(f"heat-{kind}")
            assert len(heat) == len(tr.tokens)
            assert [float(c.attrs["data-value"]) for c in heat[-1].cells[1:]] == pytest.approx(
                tr.indirect_effect(kind)[:, -1].tolist(), abs=1e-8
            )
        assert ('rel="next"' in fact.text) == (n < 2)
        assert ('rel="prev"' in fact.text) == (n > 0)
    middle = Page(get(base, "/run/t-many/fact/2").text)  # "New York": a middle subject token
    assert sum(r.attrs.get("class") == "subject" for r in middle.body("heat-mlp")) == 8
    missing = get(base, "/run/t-many/fact/3")
    assert missing.status == 404 and "trace run t-many has no fact 3" in missing.text
    one = Page(get(base, "/run/t-one/facts").text).body("grid facts")
    assert [r.cells[1].links for r in one] == [["/run/t-one/fact/0"]]
    assert Page(get(base, "/run/t-one/fact/0").text).facts["prompt"] == runs.one.fact.prompt


# ---------------------------------------------------------------------------- edits


def test_edit_home_shows_the_edit_and_its_scores(base: str, runs: Any) -> None:
    report, edit = runs.report, runs.edit
    reply = get(base, "/run/e-one")
    assert reply.status == 200
    page = Page(reply.text)
    assert page.facts["subject"] == "Rome"
    assert page.facts["object"] == "Italy → France"
    assert page.facts["layer"] == "MLP output projection of block 0"
    norms = re.search(r'id="norms" data-delta="([^"]+)" data-v="([^"]+)"', reply.text)
    assert norms is not None
    assert float(norms[1]) == pytest.approx(float(edit.value.norm()), rel=1e-5)
    assert float(norms[2]) == edit.value_norm
    assert (
        f"‖δ‖ {g4(float(edit.value.norm()))} vs ‖v‖ {g4(edit.value_norm)}" in page.facts["update"]
    )
    scores = {r.attrs["data-score"]: r for r in page.body("scores")}
    expected = report.scores()
    for key in ("efficacy", "paraphrase", "neighbourhood", "neighbourhood_kept", "mentions_new"):
        value = scores[key].cells[1]
        assert float(value.attrs["data-value"]) == expected[key], key
        assert value.text == f"{expected[key]:.1%}"
        assert len(scores[key].cells[2].text) > 30
    fb, fa = expected["fluency_before"], expected["fluency_after"]
    assert scores["fluency"].cells[1].text == f"{fb:.3f} → {fa:.3f}"
    assert "(1 prompt)" in scores["efficacy"].cells[2].text
    assert "(5 prompts)" in scores["paraphrase"].cells[2].text


def test_edit_home_shows_every_prompt_before_and_after(base: str, runs: Any) -> None:
    from mechscope.viewer.tokens import show_token  # how tokens are made visible

    report, edit = runs.report, runs.edit
    page = Page(get(base, "/run/e-one").text)
    rows = page.body("grid prompts")
    expected = [
        (group, i, prompt)
        for group in ("edited", "paraphrase", "paraphrase_bare", "neighbourhood")
        for i, prompt in enumerate(report.prompts[group])
    ]
    assert len(rows) == len(expected) == 1 + 5 + 5 + 1  # Paris answers the new object: left out
    for row, (group, i, prompt) in zip(rows, expected, strict=True):
        (tb, nb), (ta, na) = report.before[group][i], report.after[group][i]
        true = report.neighbour_objects[i] if group == "neighbourhood" else "Italy"
        probs = [g4(math.exp(x)) for x in (tb, nb, ta, na)]
        assert row.texts[:7] == [group, prompt, true, *probs]
        before, after = (
            _text(show_token(t)) for t in (report.top_before[group][i], report.top_after[group][i])
        )
        assert row.texts[7] == _text(f"{before} → {after}")
    generations = page.body("grid generations")
    assert [r.texts[0] for r in generations] == report.prompts["generation"]
    history = page.body("grid history")
    assert [r.texts for r in history] == [
        [str(h["step"]), g4(h["nll"]), g4(h["kl"]), g4(h["loss"])] for h in edit.history
    ]
    assert [Path(unquote(src)).name for src in page.images] == ["edit.png"]
    assert get(base, page.images[0]).status == 200


# ---------------------------------------------------------------------------- errors, escaping


def test_missing_or_broken_files_give_clear_error_pages(base: str) -> None:
    unreadable = "trace.safetensors is not a readable result file"
    cases = {
        "/run/e-bad-report": (400, "edit run e-bad-report: "),
        "/run/e-no-report": (404, "edit run e-no-report has no report.safetensors"),
        "/run/e-odd-report": (
            400,
            "edit run e-odd-report: report.safetensors: an edit report's paraphrase prompts, "
            "scores and top tokens "
            "differ in number",
        ),
        "/run/t-bad": (400, "trace run t-bad: "),
        "/run/t-bad/fact/0": (400, "trace run t-bad: "),
        "/run/t-empty": (404, "trace run t-empty has neither trace.safetensors nor"),
        "/run/e-one/facts": (404, "is a page of trace runs"),
    }
    assert_error_pages(base, cases)
    assert unreadable in html.unescape(get(base, "/run/t-bad").text)
    bad = html.unescape(get(base, "/run/e-bad-report").text)
    assert "report.safetensors is not a readable result file" in bad
    assert 'href="/run/e-no-report/record"' in get(base, "/run/e-no-report").text


def test_text_from_the_run_files_is_escaped(base: str) -> None:
    trace = get(base, "/run/t-hostile")
    assert trace.status == 200
    assert HOSTILE not in trace.text and "<i>co</i>" not in trace.text
    page = Page(trace.text)
    assert page.facts["subject"].startswith(HOSTILE)
    assert page.facts["object"] == "Italy & <i>co</i>"
    assert "&lt;b&gt;Rome&lt;/b&gt;" in trace.text
    facts = get(base, "/run/t-hostile/facts")
    assert HOSTILE not in facts.text and "&lt;b&gt;Rome&lt;/b&gt;" in facts.text
    edit = get(base, "/run/e-hostile")
    assert edit.status == 200
    assert HOSTILE not in edit.text and SCRIPT not in edit.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in edit.text
    assert Page(edit.text).facts["subject"] == HOSTILE


# ---------------------------------------------------------------------------- Chromium


def test_edit_and_trace_homes_render_in_chromium(page: Any, base: str, runs: Any) -> None:
    from playwright.sync_api import expect

    errors = page.errors
    page.goto(f"{base}/run/e-one")
    scores = page.locator("table#scores")
    expect(scores).to_be_visible()
    expect(scores.locator('tr[data-score="efficacy"] td.value')).to_have_text(
        f"{runs.report.efficacy:.1%}"
    )
    expect(page.locator("table.generations")).to_be_visible()
    page.goto(f"{base}/run/t-one")
    heat = page.locator("table#heat-mlp")
    expect(heat).to_be_visible()
    expect(heat.locator("tbody tr")).to_have_count(len(runs.one.tokens))
    box = heat.locator("tbody td").first.bounding_box()
    assert box is not None and box["width"] > 10 and box["height"] > 10
    expect(heat.locator("tbody tr.subject th").first).to_have_css("font-weight", "700")
    widths = page.locator("img.figure").evaluate_all(
        "imgs => imgs.map(i => i.complete && i.naturalWidth)"
    )
    assert len(widths) == 3 and all(w > 0 for w in widths)
    assert errors == []

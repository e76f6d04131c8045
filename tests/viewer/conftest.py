"""Fixtures for the viewer: run folders of several kinds, and a fake harvest store.

The fake implements the read API of `mechscope.harvest.HarvestStore` over a
few hand-written windows whose tokens are hostile on purpose (a whole
``<script>…</script>`` token, ``&``, newlines, tabs, control characters) and
whose activations are known, so pages can be checked exactly. A harvest run
folder holding ``fake_harvest.json`` is read with it; any other harvest run
with the real `open_harvest`.
"""

from __future__ import annotations

import html
import json
import math
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mechscope.errors import InputError
from mechscope.harvest.tables import Example, TokenHit, UnitRecord, UnitStats

FAKE_MARKER = "fake_harvest.json"
XSS = "<script>alert(1)</script>"
FAKE_WINDOWS = [
    ["<|bos|>", "The", " capital", " of", " France", " is", " Paris", "."],
    ["<|bos|>", "Fish", " &", " chips", "\n", XSS, " end", "!"],
    ["<|bos|>", "\t", "a", "\x00", "", " Paris", " &amp;", "?"],
]
FAKE_SITES = ["blocks.0.mlp.post", "blocks.1.mlp.post"]
FAKE_UNITS = 6


def fake_act(site: str, unit: int, window: int, pos: int) -> float:
    """The fake's activation: deterministic, with both signs; unit 1 peaks on the XSS token."""
    layer = FAKE_SITES.index(site)
    if unit == 1 and FAKE_WINDOWS[window][pos] == XSS:
        return 5.0
    return round(math.sin(1.3 * (pos + 1) * (unit + 1) + layer + window) * (unit + 1), 4)


class FakeHarvestStore:
    """The HarvestStore read API over `FAKE_WINDOWS`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.config: dict[str, Any] = json.loads((self.path / "config.json").read_text())
        self.sites = list(FAKE_SITES)

    def n_units(self, site: str) -> int:
        if site not in self.sites:
            raise InputError(f"{site!r} was not harvested; harvested: {', '.join(self.sites)}")
        return FAKE_UNITS

    def _acts(self, site: str, unit: int) -> list[list[float]]:
        return [
            [fake_act(site, unit, w, p) for p in range(len(toks))]
            for w, toks in enumerate(FAKE_WINDOWS)
        ]

    def stats(self, site: str, unit: int) -> UnitStats:
        if not 0 <= unit < self.n_units(site):
            raise InputError(f"{site} has units 0…{FAKE_UNITS - 1}, not {unit}")
        flat = [a for row in self._acts(site, unit) for a in row]
        mean = sum(flat) / len(flat)
        std = math.sqrt(sum((a - mean) ** 2 for a in flat) / len(flat))
        active = sum(a > 0 for a in flat) / len(flat)
        return UnitStats(site, unit, len(flat), mean, std, max(flat), active)

    def unit(self, site: str, unit: int) -> UnitRecord:
        stats = self.stats(site, unit)
        acts = self._acts(site, unit)
        examples = [
            (max(row), w, row.index(max(row)), row) for w, row in enumerate(acts)
        ]  # (max_act, window, max_pos, acts)
        ranked = sorted(examples, key=lambda e: -e[0])
        top = [
            Example("top", r, w, FAKE_WINDOWS[w], row, m, p)
            for r, (m, w, p, row) in enumerate(ranked[:2])
        ]
        m, w, p, row = examples[2]
        random = [Example("random", 0, w, FAKE_WINDOWS[w], row, m, p)]
        flat = [a for r in acts for a in r]
        lo, hi = min(flat), max(flat)
        edges = [lo + (hi - lo) * i / 8 for i in range(9)]
        counts = [
            sum(edges[i] <= a < edges[i + 1] or (i == 7 and a == hi) for a in flat)
            for i in range(8)
        ]
        return UnitRecord(stats, edges, counts, top, random)

    def search_token(self, text: str, limit: int = 50) -> list[TokenHit]:
        hits = []
        for site in self.sites:
            for unit in range(FAKE_UNITS):
                peak = self.stats(site, unit).max
                found = [
                    a
                    for w, row in enumerate(self._acts(site, unit))
                    for p, a in enumerate(row)
                    if FAKE_WINDOWS[w][p] == text and a >= 0.5 * peak
                ]
                if found:
                    hits.append(TokenHit(site, unit, text, len(found), max(found)))
        hits.sort(key=lambda h: (-h.count, -h.max_act))
        return hits[:limit]

    def find_units(self, query: str) -> list[tuple[str, int]]:
        q = query.strip()
        if ":" in q:
            site, _, num = q.rpartition(":")
            ok = site in self.sites and num.isdigit() and int(num) < FAKE_UNITS
            return [(site, int(num))] if ok else []
        m = re.fullmatch(r"(?:L\s*(\d+)\s*N\s*(\d+)|(\d+)\s*/\s*(\d+))", q, re.IGNORECASE)
        if m is None:
            raise InputError(f"cannot read {query!r} as a unit; try L3 N12, 3/12 or site:12")
        layer, unit = (int(g) for g in (m.group(1, 2) if m.group(1) else m.group(3, 4)))
        site = f"blocks.{layer}.mlp.post"
        return [(site, unit)] if site in self.sites and unit < FAKE_UNITS else []

    def top_units(self, site: str, by: str = "max", limit: int = 100) -> list[UnitStats]:
        stats = [self.stats(site, u) for u in range(self.n_units(site))]
        return sorted(stats, key=lambda s: -getattr(s, by))[:limit]


def make_run(
    folder: Path, kind: str, config: dict[str, Any], record: dict[str, Any] | None = None
) -> Path:
    """A finished run folder (config.json, run.json) at `folder`."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"kind": kind, **config}, indent=2))
    (folder / "run.json").write_text(json.dumps({"kind": kind, **(record or {})}, indent=2))
    return folder


def png_bytes(size: tuple[int, int] = (40, 30)) -> bytes:
    """A small PNG with a gradient (so it is not blank)."""
    import io

    from PIL import Image

    img = Image.new("RGB", size)
    img.putdata([(x * 6 % 256, y * 8 % 256, 128) for y in range(size[1]) for x in range(size[0])])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


PLOTLY_LIKE = """<!doctype html><html><head><meta charset="utf-8">
<script src="fake-plotly.js"></script></head>
<body><div id="plot">interactive figure</div><script>drawPlot();</script></body></html>
"""


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of runs: an ioi-like run with figures, a nested run of an unknown kind, a fake harvest.

    Beside it, ``secret.txt``, which no URL may reach.
    """
    base = tmp_path_factory.mktemp("viewer")
    (base / "secret.txt").write_text("TOP SECRET")
    root = base / "runs"
    ioi = make_run(
        root / "ioi-demo",
        "ioi",
        {"model": {"name": "tiny-llama", "dtype": "float32"}, "n_prompts": 8},
        {"finished": "2025-01-02T03:04:05+00:00", "hf_max_logit_difference": 0.0},
    )
    figures = ioi / "figures"
    figures.mkdir()
    (figures / "patch.png").write_bytes(png_bytes())
    (figures / "patch.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        '<rect width="10" height="10" fill="red"/></svg>'
    )
    (figures / "patch.html").write_text(PLOTLY_LIKE)
    (figures / "fake-plotly.js").write_text(
        "function drawPlot() { document.getElementById('plot').textContent = 'drawn by js'; }"
    )
    (ioi / "results.json").write_text('{"logit_diff": 3.2}')
    mystery = make_run(
        root / "group" / "mystery",
        "mystery",
        {"model": "some-model", "note": XSS + " & more"},
        {"finished": "2025-01-01T00:00:00+00:00"},
    )
    (mystery / "figures").mkdir()
    (mystery / "figures" / "only.html").write_text("<p>only html here</p>")
    fake = make_run(
        root / "harvest-fake",
        "harvest",
        {
            "model": {"name": "fake-model"},
            "corpus": {"spec": "<b>hostile</b> & corpus"},
            "k": 2,
            "window": 8,
        },
        {"finished": "2025-01-03T00:00:00+00:00"},
    )
    (fake / FAKE_MARKER).write_text("{}")
    (root / ".partial-run.partial").mkdir()  # hidden: skipped
    return root


@pytest.fixture(scope="session")
def fake_harvests() -> Iterator[None]:
    """Read harvest runs that hold `FAKE_MARKER` with `FakeHarvestStore`, others for real."""
    from mechscope.viewer.pages import harvest as harvest_pages

    real = harvest_pages.open_store

    def open_store(path: Path) -> Any:
        return FakeHarvestStore(path) if (path / FAKE_MARKER).exists() else real(path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(harvest_pages, "open_store", open_store)
        yield


@pytest.fixture(scope="session")
def viewer(runs_root: Path, fake_harvests: None) -> Iterator[Any]:
    """A real server on 127.0.0.1, a free port, serving `runs_root` (stopped at the end)."""
    from mechscope.viewer import serve

    with serve([runs_root]) as v:
        yield v


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def fetch(base: str, path: str, method: str = "GET") -> Reply:
    """One request sent as is (no normalisation of ``..``), not following redirects."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


@pytest.fixture(scope="session")
def http(viewer: Any) -> Any:
    """``http(path, method="GET") -> Reply`` against the session's viewer."""

    def request(path: str, method: str = "GET") -> Reply:
        return fetch(viewer.url, path, method)

    return request


@pytest.fixture(scope="session")
def fake_store(runs_root: Path) -> FakeHarvestStore:
    """The fake harvest the viewer shows as run ``harvest-fake``."""
    return FakeHarvestStore(runs_root / "harvest-fake")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (skipped where either is missing)."""
    if CHROMIUM is None:
        pytest.skip("no chromium executable on PATH (Debian package `chromium`)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh Chromium page that records dialogs (``page.dialogs``) and script errors (``page.errors``)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.dialogs = []
    pg.errors = []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    yield pg
    context.close()


def copy_run(root: Path, name: str, to: str) -> Path:
    """A copy of run folder ``root/name`` at ``root/to`` (to break it without touching the original)."""
    return Path(shutil.copytree(root / name, root / to))


def edit_json(path: Path, change: Callable[[Any], None]) -> None:
    """Apply `change` to the JSON document in `path`, in place."""
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def get_ok(base: str, path: str) -> str:
    """The page at `path`, which must be served with 200."""
    reply = fetch(base, path)
    assert reply.status == 200, (path, reply.text)
    return reply.text


def text_of(fragment: str) -> str:
    """An HTML fragment as text: list items and cells apart, inline tags dropped."""
    spaced = re.sub(r"</?(?:li|td|th|tr|ul|dd|dt|p)\b[^>]*>", " ", fragment)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", spaced)).split())


def assert_error_pages(base: str, cases: dict[str, tuple[int, str]]) -> None:
    """Each path answers with its status and a page holding its message, never a traceback."""
    for path, (status, message) in cases.items():
        reply = fetch(base, path)
        assert reply.status == status, (path, reply.text)
        assert message in html.unescape(reply.text), path
        assert "Traceback" not in reply.text, path

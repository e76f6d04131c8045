"""The viewer in real headless Chromium: neuron pages of a real harvest, figures, keys, escaping.

One browser and one server for the module. The real harvest is a tiny random
Llama over a small text file; the fake harvest (conftest) supplies a whole
``<script>`` token, which a byte-level tokenizer would split into harmless
single characters.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "no chromium executable on PATH (Debian package `chromium`)", allow_module_level=True
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = sync_api.expect

XSS = "<script>alert(1)</script>"
CORPUS = f"""The capital of France is Paris. Fish & chips {XSS} in London.

Paris is lovely in spring; "quotes" & <b>tags</b> stay text.
\tTabs and new
lines too. The cat sat on the mat, and the dog sat on the log.
"""


@pytest.fixture(scope="module")
def real_harvest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real harvest run folder: the tiny Llama's MLP neurons over 12 windows of 16 tokens."""
    from mechscope.harvest import harvest
    from mechscope.testing import tiny_model

    base = tmp_path_factory.mktemp("real")
    corpus = base / "corpus.txt"
    corpus.write_text(CORPUS)
    out = base / "runs" / "harvest-real"
    harvest(
        tiny_model("llama"),
        str(corpus),
        out=out,
        sites="blocks.*.mlp.post",
        tokens=12 * 16,
        window=16,
        k=4,
        n_random=2,
        batch_size=4,
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def store(real_harvest: Path) -> Any:
    from mechscope.harvest import open_harvest

    return open_harvest(real_harvest)


@pytest.fixture(scope="module")
def base(runs_root: Path, real_harvest: Path, fake_harvests: None) -> Iterator[str]:
    """The root URL of a viewer serving the fixture runs and the real harvest."""
    from mechscope.viewer import serve

    with serve([runs_root, real_harvest.parent]) as viewer:
        yield viewer.url


def _unit_with_word_peak(store: Any) -> tuple[str, int, str]:
    """A unit among the top ones whose strongest token is a letter or word (typeable)."""
    site = store.sites[0]
    for stats in store.top_units(site, limit=50):
        top = store.unit(site, stats.unit).top[0]
        token = top.tokens[top.max_pos]
        if token.strip().isalnum():
            return site, stats.unit, token
    raise AssertionError("no unit peaks on a word")


def test_index_lists_runs(page: Any, base: str) -> None:
    page.goto(base)
    expect(page.locator("table.runs tbody tr")).to_have_count(4)
    expect(page.locator("table.runs")).to_contain_text("harvest-real")
    assert page.errors == []


def test_generic_run_page_shows_its_figures(page: Any, base: str) -> None:
    page.goto(base + "run/ioi-demo")
    width = page.locator("img.figure").evaluate("img => img.complete && img.naturalWidth")
    assert width == 40
    page.locator("details summary").click()
    frame = page.frame_locator("iframe.figure")
    expect(frame.locator("#plot")).to_have_text("drawn by js")  # its script, served beside it
    assert page.errors == []


def test_neuron_page_colours_tokens_and_shows_values_on_hover(
    page: Any, base: str, store: Any
) -> None:
    site, unit, _ = _unit_with_word_peak(store)
    page.goto(f"{base}run/harvest-real/unit/{site}/{unit}")
    tokens = page.locator("#top-examples .tok")
    record = store.unit(site, unit)
    assert tokens.count() == sum(len(e.tokens) for e in record.top)
    colours = tokens.evaluate_all("ts => ts.map(t => getComputedStyle(t).backgroundColor)")
    assert len(set(colours)) >= 5  # shaded by activation, not one colour
    peak = page.locator("#top-examples .tok.max").first
    expected = f"{record.top[0].acts[record.top[0].max_pos]:.6g}"
    assert peak.get_attribute("data-act") == expected
    assert "255, 110, 0" in peak.evaluate("t => getComputedStyle(t).backgroundColor")
    peak.hover()
    tip = page.locator("#tip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text(expected)
    expect(page.locator("svg.hist rect")).to_have_count(len(record.hist_counts))
    assert page.errors == []


def test_keys_move_between_units_and_focus_the_search(page: Any, base: str, store: Any) -> None:
    site = store.sites[0]
    page.goto(f"{base}run/harvest-real/unit/{site}/0")
    page.keyboard.press("j")
    page.wait_for_url(f"**/unit/{site}/1")
    page.keyboard.press("ArrowRight")
    page.wait_for_url(f"**/unit/{site}/2")
    page.keyboard.press("k")
    page.wait_for_url(f"**/unit/{site}/1")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.hasAttribute('data-search')")
    page.keyboard.type("j")  # typing in the box does not navigate
    assert page.url.endswith(f"/unit/{site}/1")
    assert page.evaluate("document.activeElement.value") == "j"


def test_token_search_finds_units(page: Any, base: str, store: Any) -> None:
    site, unit, token = _unit_with_word_peak(store)
    page.goto(base + "run/harvest-real")
    page.locator("input[data-search]").fill(token)
    page.locator("input[data-search]").press("Enter")
    page.wait_for_url("**/search/token?q=*")
    rows = page.locator("table.hits tbody tr")
    expect(rows).to_have_count(len(store.search_token(token)))
    rows.first.locator("a").click()
    page.wait_for_url("**/unit/**")
    expect(page.locator("#top-examples .tok").first).to_be_visible()


def test_hostile_corpus_text_is_shown_not_run(page: Any, base: str) -> None:
    page.goto(base + "run/harvest-fake/unit/blocks.1.mlp.post/1")
    expect(page.locator("#top-examples .tok.max").first).to_have_text(XSS)
    page.goto(base + "run/harvest-fake/search/token?q=" + XSS)
    expect(page.locator("input[data-search]")).to_have_value(XSS)
    page.goto(base + "run/mystery")
    expect(page.locator("pre.json").first).to_contain_text(XSS + " & more")
    page.goto(base + "run/harvest-real/search/token?q=%3Cb%3E")
    assert page.evaluate("document.querySelectorAll('main script, main b').length") == 0
    assert page.dialogs == []


def test_a_neuron_page_renders_to_pixels(page: Any, base: str, store: Any) -> None:
    import numpy as np
    from PIL import Image

    def rgb(png: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3).astype(int)

    site, unit, _ = _unit_with_word_peak(store)
    page.goto(f"{base}run/harvest-real/unit/{site}/{unit}")
    whole = rgb(page.screenshot(full_page=True))
    assert (whole != 255).any(axis=1).mean() > 0.05  # not a blank page
    examples = rgb(page.locator("#top-examples").screenshot())
    colours = np.unique(examples, axis=0)
    assert len(colours) > 20
    r, g, b = colours.T
    assert ((r > 200) & (g > 60) & (g < 200) & (b < 120)).any()  # orange shades


def test_unknown_unit_is_a_friendly_404(page: Any, base: str, store: Any) -> None:
    response = page.goto(f"{base}run/harvest-real/unit/{store.sites[0]}/99999")
    assert response is not None and response.status == 404
    expect(page.locator("h1")).to_have_text("Not found")
    expect(page.locator("main")).to_contain_text("there is no unit 99999")
    page.locator("main a[href='/']").click()
    expect(page.locator("table.runs")).to_be_visible()


@pytest.mark.model
def test_smollm2_neuron_page_and_token_search_in_chromium(page: Any, smollm2_harvest: Any) -> None:
    """The default model's harvest: a neuron page renders and a token search returns units."""
    from urllib.parse import quote

    from mechscope.viewer import serve

    store = smollm2_harvest
    site = "blocks.12.mlp.post"
    best = store.top_units(site, limit=1)[0]
    with serve([store.path]) as viewer:
        run = viewer.url + "run/" + store.path.name
        page.goto(f"{run}/unit/{site}/{best.unit}")
        tokens = page.locator("#top-examples .tok")
        expect(tokens.first).to_be_visible()
        assert tokens.count() == 20 * 64  # top-20 windows of 64 tokens
        expect(page.locator("main")).to_contain_text(f"{best.max:.4g}"[:4])
        page.keyboard.press("j")
        page.wait_for_url(f"**/unit/{site}/{best.unit + 1}")
        token = store.unit(site, best.unit).top[0]
        word = token.tokens[token.max_pos]
        page.goto(f"{run}/search/token?q={quote(word)}")
        expect(page.locator("table.hits tbody tr").first).to_be_visible()
        assert page.locator("table.hits tbody tr").count() == len(store.search_token(word))
    assert page.errors == []


def test_unit_card_png_is_served(page: Any, base: str, store: Any) -> None:
    site = store.sites[0]
    page.goto(f"{base}run/harvest-real/unit/{site}/2")
    href = page.locator("#card-link").get_attribute("href")
    response = page.request.get(base.rstrip("/") + href)
    assert response.status == 200 and response.headers["content-type"] == "image/png"
    assert response.body()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = page.request.get(f"{base}run/harvest-real/card/{site}/99999")
    assert missing.status == 404

"""SAE runs in the viewer: the SAE's home (metrics, figures, top latents), its nav pages, errors.

One real tiny SAE run for the module (the tiny Llama's ``blocks.1.resid_post``,
64 latents, with a harvest of its latents), and copies of it with a file
broken, removed or made hostile, all served by one real server.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import torch

from mechscope.sae.results import SAEEval, TrainingHistory
from mechscope.testing import edit_result
from mechscope.viewer import serve

SITE = "blocks.1.resid_post"
LATENTS = f"{SITE}.sae.latents"
WIDTH = 64
XSS = "<script>alert(1)</script>"
METRIC_KEYS = (
    "l0",
    "explained_variance",
    "fvu",
    "ce_clean",
    "ce_sae",
    "ce_zero",
    "ce_recovered",
    "kl_sae",
    "dead_fraction",
    "dense_fraction",
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``sae-tiny`` (a real SAE run with its latent harvest) and damaged copies of it."""
    from mechscope.sae.fit import sae_run
    from mechscope.sae.train import TrainConfig
    from mechscope.testing import tiny_model

    root = tmp_path_factory.mktemp("sae") / "runs"
    sae = root / "sae-tiny"
    sae_run(
        tiny_model("llama"),
        SITE,
        TrainConfig(width=WIDTH, k=4, tokens=512 * 8, batch_size=512, eval_every=4),
        out=sae,
        eval_tokens=512,
        window=32,
        buffer_tokens=2048,
        harvest_tokens=1024,
        progress=False,
    )

    def copy(name: str) -> Path:
        return Path(shutil.copytree(sae, root / name, ignore=shutil.ignore_patterns("harvest")))

    (copy("sae-bad-eval") / "eval.safetensors").write_text("{ not safetensors")
    no_eval = copy("sae-no-eval")
    (no_eval / "eval.safetensors").unlink()
    record = json.loads((no_eval / "run.json").read_text())
    del record["eval"]
    (no_eval / "run.json").write_text(json.dumps(record))
    edit_result(
        copy("sae-bad-frequencies") / "eval.safetensors",
        lambda r, t: t.update(frequencies=torch.zeros(2, 3)),
    )
    copy("sae-no-harvest")
    hostile = copy("sae-hostile")
    config = json.loads((hostile / "config.json").read_text())
    config["model"]["name"] = XSS
    config["site_doc"] = XSS + " & more"
    (hostile / "config.json").write_text(json.dumps(config))
    return root


@pytest.fixture(scope="module")
def base(runs: Path) -> Iterator[str]:
    with serve([runs]) as viewer:
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


class Page(HTMLParser):
    """A page's tables (cell texts and links, by the table's class) and the metrics' rows."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.links: dict[str, list[list[str]]] = {}
        self.metrics: dict[str, dict[str, str]] = {}
        self.images: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._metric: str | None = None
        self._value: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._table = a.get("class", "")
            self.tables.setdefault(self._table, [])
            self.links.setdefault(self._table, [])
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
            self.links[self._table].append([])
            self._metric = a.get("data-metric")
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
            if "data-value" in a:
                self._value = a["data-value"]
        elif tag == "a" and self._table is not None and self._cell is not None:
            self.links[self._table][-1].append(a["href"])
        elif tag == "img":
            self.images.append(a["src"])

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._table is not None and self._cell is not None:
            text = " ".join("".join(self._cell).split())
            self.tables[self._table][-1].append(text)
            if self._metric is not None and self._value is not None:
                self.metrics[self._metric] = {"value": self._value, "text": text}
            self._cell = self._value = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def rows(page: Page, cls: str) -> list[list[str]]:
    return [r for r in page.tables[cls] if r and r[0] != "latent" and r[0] != "metric"]


def frequencies(run: Path) -> list[float]:
    return SAEEval.load(run / "eval.safetensors").frequencies.tolist()


def test_sae_home_says_what_was_trained_on_what_and_for_how_long(base: str, runs: Path) -> None:
    reply = get(base, "/run/sae-tiny")
    assert reply.status == 200
    record = json.loads((runs / "sae-tiny" / "run.json").read_text())
    facts = dict(re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", reply.text))
    assert facts["model"] == "tiny-llama"
    assert f"<code>{SITE}</code>" in facts["site"]
    assert facts["SAE"] == "topk, d_in 32 → width 64, k 4"
    assert facts["training tokens"] == "4,096 in 8 steps of 512"
    assert facts["training time"] == f"{record['train_seconds']:.1f} s"
    assert re.fullmatch(r"[\d,]+", facts["tokens / s"])
    # the nav pages of SAE runs are in the header
    assert '<a href="/run/sae-tiny/latents">latents</a>' in reply.text
    assert '<a href="/run/sae-tiny/training">training</a>' in reply.text


def test_metrics_table_shows_the_eval_with_a_line_on_each(base: str, runs: Path) -> None:
    ev = SAEEval.load(runs / "sae-tiny" / "eval.safetensors").metrics()
    page = Page(get(base, "/run/sae-tiny").text)
    for key in METRIC_KEYS:
        shown = page.metrics[key]
        assert float(shown["value"]) == ev[key], key
        assert shown["text"] == f"{ev[key]:.4g}", key
    explained = {r[0]: r[2] for r in rows(page, "grid metrics")}
    assert len(explained) >= len(METRIC_KEYS)
    assert all(len(doc) > 20 for doc in explained.values())
    dead = round(ev["dead_fraction"] * WIDTH)
    assert explained["dead latents"].endswith(f"({dead} of {WIDTH})")


def test_training_curves_and_latent_density_are_embedded(base: str) -> None:
    reply = get(base, "/run/sae-tiny")
    images = Page(reply.text).images
    stems = [Path(unquote(src)).stem for src in images]
    assert stems == ["fvu", "l0", "dead", "latent_density"]
    for src in images:
        served = get(base, src)
        assert served.status == 200 and served.headers["content-type"] == "image/png"
    html = get(base, "/run/sae-tiny/files/figures/latent_density.html")
    assert html.status == 200 and "text/html" in html.headers["content-type"]
    assert '<a href="/run/sae-tiny/files/figures/latent_density.html">html</a>' in reply.text


def test_top_latents_by_max_link_to_their_harvest_pages(base: str, runs: Path) -> None:
    from mechscope.harvest import open_harvest

    page = Page(get(base, "/run/sae-tiny").text)
    shown = rows(page, "grid latents")
    links = [r for r in page.links["grid latents"] if r]
    top = open_harvest(runs / "sae-tiny" / "harvest").top_units(LATENTS, by="max", limit=50)
    freqs = frequencies(runs / "sae-tiny")
    assert [r[0] for r in shown] == [f"latent {s.unit}" for s in top]
    assert len(shown) == 50
    assert [r[3] for r in shown] == [f"{freqs[s.unit]:.3%}" for s in top]
    assert [r[1] for r in shown] == [f"{s.max:.4g}" for s in top]
    for (href,), stats in zip(links, top, strict=True):
        assert href == f"/run/sae-tiny-harvest/unit/{LATENTS}/{stats.unit}"
        unit_page = get(base, href)
        assert unit_page.status == 200, href
        assert f"{LATENTS} unit {stats.unit}" in unit_page.text
    home = get(base, "/run/sae-tiny")
    for href in ("/run/sae-tiny-harvest", "/run/sae-tiny-harvest/search"):
        assert f'href="{href}"' in home.text
        assert get(base, href).status == 200


def test_a_latent_has_a_stable_address_and_the_harvest_is_listed(base: str) -> None:
    reply = get(base, "/run/sae-tiny/latent/7")
    assert reply.status == 303
    assert reply.headers["location"] == f"/run/sae-tiny-harvest/unit/{LATENTS}/7"
    assert get(base, reply.headers["location"]).status == 200
    index = get(base, "/")
    assert '<a href="/run/sae-tiny-harvest">sae-tiny-harvest</a>' in index.text
    assert get(base, f"/run/sae-tiny-harvest/unit/{LATENTS}/{WIDTH}").status == 404


def test_latents_page_sorts_every_latent(base: str, runs: Path) -> None:
    freqs = frequencies(runs / "sae-tiny")
    by_freq = rows(Page(get(base, "/run/sae-tiny/latents?by=frequency").text), "grid latents")
    assert len(by_freq) == WIDTH
    shown = [freqs[int(r[0].split()[1])] for r in by_freq]
    assert shown == sorted(freqs, reverse=True)
    by_number = rows(Page(get(base, "/run/sae-tiny/latents?by=latent").text), "grid latents")
    assert [r[0] for r in by_number] == [f"latent {u}" for u in range(WIDTH)]
    bad = get(base, "/run/sae-tiny/latents?by=colour")
    assert bad.status == 400 and "cannot sort latents by &#39;colour&#39;" in bad.text


def test_training_page_shows_hyper_parameters_and_history(base: str, runs: Path) -> None:
    history = TrainingHistory.load(runs / "sae-tiny" / "history.safetensors").rows
    reply = get(base, "/run/sae-tiny/training")
    assert reply.status == 200
    assert "<dt>lr_used</dt>" in reply.text
    table = Page(reply.text).tables["grid history"]
    assert table[0][:3] == ["step", "tokens", "lr"]
    assert len(table) == 1 + len(history)


def test_missing_or_corrupt_files_give_clear_error_pages(base: str) -> None:
    bad = get(base, "/run/sae-bad-eval")
    assert bad.status == 400
    assert "sae run sae-bad-eval: eval.safetensors is not a readable result file" in bad.text
    missing = get(base, "/run/sae-no-eval")
    assert missing.status == 404
    assert "SAE run sae-no-eval has no eval.safetensors" in missing.text
    assert 'href="/run/sae-no-eval/record"' in missing.text
    frequencies = get(base, "/run/sae-bad-frequencies")
    assert frequencies.status == 400
    said = "eval.safetensors: frequencies should be [width], got shape [2, 3]"
    assert said in frequencies.text
    for reply in (bad, missing, frequencies):
        assert "Traceback" not in reply.text


def test_a_run_without_a_latent_harvest_still_shows_everything_else(base: str) -> None:
    reply = get(base, "/run/sae-no-harvest")
    assert reply.status == 200
    assert "No harvest of the latents" in reply.text
    assert len(Page(reply.text).metrics) >= len(METRIC_KEYS)
    assert get(base, "/run/sae-no-harvest/latent/3").status == 404
    latents = get(base, "/run/sae-no-harvest/latents")
    assert latents.status == 200
    assert len(rows(Page(latents.text), "grid latents")) == WIDTH
    assert get(base, "/run/sae-no-harvest/latents?by=max").status == 400


def test_text_from_the_run_files_is_escaped(base: str) -> None:
    reply = get(base, "/run/sae-hostile")
    assert reply.status == 200
    assert XSS not in reply.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in reply.text


# ---------------------------------------------------------------------------- Chromium


def test_sae_home_in_chromium_shows_metrics_and_leads_to_a_latent(
    page: Any, base: str, runs: Path
) -> None:
    from playwright.sync_api import expect

    ev = SAEEval.load(runs / "sae-tiny" / "eval.safetensors").metrics()
    errors = page.errors
    page.goto(f"{base}/run/sae-tiny")
    metrics = page.locator("table#metrics")
    expect(metrics).to_be_visible()
    expect(metrics.locator('tr[data-metric="ce_recovered"] td.value')).to_have_text(
        f"{ev['ce_recovered']:.4g}"
    )
    widths = page.locator("img.figure").evaluate_all(
        "imgs => imgs.map(i => i.complete && i.naturalWidth)"
    )
    assert len(widths) == 4 and all(w > 0 for w in widths)
    first = page.locator("table.latents tbody tr a").first
    unit = int(first.inner_text().split()[1])
    first.click()
    page.wait_for_url(f"**/run/sae-tiny-harvest/unit/{LATENTS}/{unit}")
    expect(page.locator("h1")).to_have_text(f"{LATENTS} unit {unit}")
    expect(page.locator("#top-examples .tok").first).to_be_visible()
    assert errors == []

"""The viewer's routes over plain HTTP, against a real server on 127.0.0.1."""

from __future__ import annotations

import html
import re
import urllib.request
from pathlib import Path

import pytest

from mechscope.errors import InputError
from mechscope.viewer import serve

XSS = "<script>alert(1)</script>"


def test_index_lists_every_run_with_kind_model_and_time(http) -> None:
    r = http("/")
    assert r.status == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    for run_id, kind in [("ioi-demo", "ioi"), ("mystery", "mystery"), ("harvest-fake", "harvest")]:
        assert f'href="/run/{run_id}"' in r.text
        assert f"<td>{kind}</td>" in r.text
    assert "tiny-llama" in r.text and "2025-01-02 03:04:05+00:00" in r.text
    assert "partial" not in r.text  # hidden folders are not runs


def test_pages_load_css_and_js_from_the_package_only(http) -> None:
    page = http("/")
    srcs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert all(s.startswith("/") for s in srcs), srcs  # nothing from another host
    assert "script-src 'self'" in page.headers["content-security-policy"]
    css, js = http("/static/viewer.css"), http("/static/viewer.js")
    assert css.status == js.status == 200
    assert css.headers["content-type"].startswith("text/css")
    assert js.headers["content-type"].startswith("text/javascript")


def test_generic_run_page_shows_config_record_and_figures(http) -> None:
    r = http("/run/ioi-demo")
    assert r.status == 200
    assert '<img class="figure" src="/run/ioi-demo/files/figures/patch.png"' in r.text
    assert (
        '<iframe class="figure" loading="lazy" src="/run/ioi-demo/files/figures/patch.html"'
        in r.text
    )
    assert "&#34;n_prompts&#34;: 8" in r.text  # config.json, pretty-printed
    assert "hf_max_logit_difference" in r.text  # run.json
    assert 'href="/run/ioi-demo/files/results.json"' in r.text
    only_html = http("/run/mystery")  # no PNG: the HTML figure is embedded directly
    assert '<iframe class="figure" loading="lazy" src="/run/mystery/files/figures/only.html"' in (
        only_html.text
    )


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("figures/patch.png", "image/png"),
        ("figures/patch.svg", "image/svg+xml"),
        ("figures/patch.html", "text/html; charset=utf-8"),
        ("figures/fake-plotly.js", "text/javascript; charset=utf-8"),
        ("results.json", "application/json"),
    ],
)
def test_run_files_are_served_with_their_content_type(http, runs_root, name, content_type) -> None:
    r = http(f"/run/ioi-demo/files/{name}")
    assert r.status == 200
    assert r.headers["content-type"] == content_type
    assert r.body == (runs_root / "ioi-demo" / name).read_bytes()
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "path",
    [
        "/run/ioi-demo/files/../../secret.txt",
        "/run/ioi-demo/files/figures/../../../secret.txt",
        "/run/ioi-demo/files/%2e%2e/%2e%2e/secret.txt",
        "/run/ioi-demo/files/figures%2f..%2f..%2f..%2fsecret.txt",
        "/run/ioi-demo/files/..%5c..%5csecret.txt",
        "/run/ioi-demo/files/%2fetc%2fpasswd",
        "/run/ioi-demo/files/figures",
        "/static/../../../secret.txt",
        "/static/..%2f..%2fapp.py",
    ],
)
def test_path_traversal_is_refused(http, path) -> None:
    r = http(path)
    assert r.status == 404
    assert b"SECRET" not in r.body and b"root:" not in r.body


def test_unknown_run_unit_and_page_give_friendly_404s(http) -> None:
    run = http("/run/no-such-run")
    assert run.status == 404
    assert "no run named" in run.text and 'href="/run/ioi-demo"' in run.text
    unit = http("/run/harvest-fake/unit/blocks.0.mlp.post/999")
    assert unit.status == 404 and "there is no unit 999" in unit.text
    site = http("/run/harvest-fake/unit/blocks.9.mlp.post/0")
    assert site.status == 404 and "no site" in site.text
    wrong_kind = http("/run/ioi-demo/unit/blocks.0.mlp.post/0")
    assert wrong_kind.status == 404 and "ioi-demo is a ioi run" in wrong_kind.text
    nothing = http("/no/such/page")
    assert nothing.status == 404 and "Not found" in nothing.text and 'href="/"' in nothing.text


def test_head_has_headers_but_no_body(http) -> None:
    r = http("/run/ioi-demo", method="HEAD")
    assert r.status == 200 and r.body == b"" and int(r.headers["content-length"]) > 0


def test_harvest_home_lists_model_corpus_sites_and_top_units(http, fake_store) -> None:
    r = http("/run/harvest-fake")
    assert r.status == 200
    assert "fake-model" in r.text
    assert "&lt;b&gt;hostile&lt;/b&gt; &amp; corpus" in r.text
    for site in fake_store.sites:
        assert site in r.text
    best = fake_store.top_units("blocks.0.mlp.post", limit=1)[0]
    assert f'href="/run/harvest-fake/unit/blocks.0.mlp.post/{best.unit}"' in r.text
    assert 'action="/run/harvest-fake/search/token"' in r.text
    assert 'href="/run/harvest-fake/search"' in r.text  # nav link registered by the page


def test_unit_page_shows_stats_histogram_examples_and_neighbours(http, fake_store) -> None:
    r = http("/run/harvest-fake/unit/blocks.0.mlp.post/1")
    assert r.status == 200
    record = fake_store.unit("blocks.0.mlp.post", 1)
    assert f"<dd>{record.stats.max:.4g}</dd>" in r.text
    assert r.text.count("<rect ") == len(record.hist_counts)
    acts = [float(a) for a in re.findall(r'data-act="([^"]+)"', r.text)]
    shown = [a for e in record.top + record.random for a in e.acts]
    assert acts == pytest.approx(shown, rel=1e-5)
    assert 'rel="prev"' in r.text and 'href="/run/harvest-fake/unit/blocks.0.mlp.post/0"' in r.text
    assert 'rel="next"' in r.text and 'href="/run/harvest-fake/unit/blocks.0.mlp.post/2"' in r.text
    assert 'href="/run/harvest-fake/unit/blocks.1.mlp.post/1"' in r.text  # layer above
    assert "↵" in r.text and "⇥" in r.text and "\\x00" in r.text  # whitespace made visible
    first = http("/run/harvest-fake/unit/blocks.0.mlp.post/0")
    assert 'rel="prev"' not in first.text


def test_corpus_text_is_escaped(http) -> None:
    r = http("/run/harvest-fake/unit/blocks.1.mlp.post/1")
    assert XSS not in r.text
    assert html.escape(XSS) in r.text
    assert " &amp;amp;" in r.text  # the token " &amp;" is shown as typed
    config = http("/run/mystery")
    assert XSS not in config.text and "&lt;script&gt;" in config.text


def test_token_search_lists_units_that_fire_on_the_token(http, fake_store) -> None:
    hits = fake_store.search_token(" Paris")
    assert hits
    r = http("/run/harvest-fake/search/token?q=%20Paris")
    assert r.status == 200
    for h in hits:
        assert f'href="/run/harvest-fake/unit/{h.site}/{h.unit}"' in r.text
    none = http("/run/harvest-fake/search/token?q=zebra")
    assert "No unit fires on tokens matching" in none.text
    hostile = http("/run/harvest-fake/search/token?q=%3Cscript%3Ealert(1)%3C/script%3E")
    assert XSS not in hostile.text and "/run/harvest-fake/unit/blocks.1.mlp.post/1" in hostile.text


def test_unit_search_redirects_to_the_unit_or_says_there_is_none(http, viewer) -> None:
    r = http("/run/harvest-fake/search/unit?q=L1+N3")
    assert r.status == 303 and r.headers["location"] == "/run/harvest-fake/unit/blocks.1.mlp.post/3"
    with urllib.request.urlopen(viewer.url + "run/harvest-fake/search/unit?q=0/2") as resp:
        assert resp.url.endswith("/run/harvest-fake/unit/blocks.0.mlp.post/2")
    missing = http("/run/harvest-fake/search/unit?q=L7+N3")
    assert missing.status == 404 and "No such unit" in missing.text
    unreadable = http("/run/harvest-fake/search/unit?q=%3Cb%3Ewhat")
    assert unreadable.status == 404 and "cannot read" in unreadable.text
    assert "<b>what" not in unreadable.text


def test_units_page_sorts_and_rejects_bad_arguments(http, fake_store) -> None:
    r = http("/run/harvest-fake/units?site=blocks.1.mlp.post&by=mean&limit=3")
    order = re.findall(r"/unit/blocks\.1\.mlp\.post/(\d+)", r.text)
    expected = [s.unit for s in fake_store.top_units("blocks.1.mlp.post", by="mean", limit=3)]
    assert [int(u) for u in order] == expected
    assert http("/run/harvest-fake/units?by=magic").status == 400


def test_missing_paths_and_empty_folders_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such folder"):
        serve([tmp_path / "nope"])
    with pytest.raises(InputError, match="holds no mechscope runs"):
        serve([tmp_path])


def test_a_busy_port_is_an_input_error(viewer, runs_root) -> None:
    with pytest.raises(InputError, match="cannot listen"):
        serve([runs_root], port=viewer.port)


def test_same_folder_names_get_distinct_ids(tmp_path: Path) -> None:
    for group in ("a", "b"):
        run = tmp_path / group / "ioi"
        run.mkdir(parents=True)
        (run / "run.json").write_text('{"kind": "ioi"}')
    v = serve([tmp_path, tmp_path / "a" / "ioi"])  # the same run twice is served once
    try:
        assert sorted(v.app.runs) == ["b-ioi", "ioi"]
    finally:
        v.stop()


def test_new_runs_appear_on_the_index_and_stop_frees_the_port(tmp_path: Path) -> None:
    first = tmp_path / "one"
    first.mkdir()
    (first / "run.json").write_text('{"kind": "x"}')
    with serve([tmp_path]) as v:
        second = tmp_path / "two"
        second.mkdir()
        (second / "run.json").write_text('{"kind": "y"}')
        with urllib.request.urlopen(v.url) as resp:
            assert b'href="/run/two"' in resp.read()
        port = v.port
    serve([tmp_path], port=port).stop()  # the port is free again

"""The viewer's pieces without a server: escaping, routes, registering pages for a new run kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from mechscope.viewer import App, Document, NotFound, Request
from mechscope.viewer.html import Markup, join, link, render, url
from mechscope.viewer.pages.harvest import histogram_svg, neighbour_sites
from mechscope.viewer.registry import REGISTRY, Registry, Route
from mechscope.viewer.tokens import show_token, token_background


def test_render_escapes_data_but_not_markup() -> None:
    out = render("<p title='{t}'>{x} {n:.2f}</p>{m}", t="a'b", x="<b>&", n=1.234, m=Markup("<i/>"))
    assert out == "<p title='a&#39;b'>&lt;b&gt;&amp; 1.23</p><i/>"
    assert join(["<", Markup("<br>")], sep=", ") == "&lt;, <br>"
    assert Markup("<a>") + "<b>" == "<a>&lt;b&gt;"
    assert (
        link("/x?a=1&b=2", "<t>", rel="next") == '<a href="/x?a=1&amp;b=2" rel="next">&lt;t&gt;</a>'
    )


def test_url_quotes_each_segment() -> None:
    assert (
        url("run", "a b", "unit", "blocks.0.mlp.post", 3) == "/run/a%20b/unit/blocks.0.mlp.post/3"
    )
    assert url("run", "../x/y") == "/run/..%2Fx%2Fy"
    assert url("s", q=" Paris", skip=None) == "/s?q=+Paris"


def test_route_patterns_match_segments_ints_and_paths() -> None:
    unit = Route("/run/{run}/unit/{site}/{unit:int}", lambda r: Document("", Markup("")))
    assert unit.match("/run/h/unit/blocks.0.mlp.post/7") == {
        "run": "h",
        "site": "blocks.0.mlp.post",
        "unit": 7,
    }
    assert unit.match("/run/h/unit/blocks.0.mlp.post/x") is None
    assert unit.match("/run/h/unit/blocks.0.mlp.post") is None
    files = Route("/run/{run}/files/{path:path}", lambda r: Document("", Markup("")))
    assert files.match("/run/h/files/figures/a.png")["path"] == "figures/a.png"
    assert files.match("/run/h/files") is None


def test_more_literal_segments_win_then_kind_specific_pages() -> None:
    reg = Registry()
    reg.page("/run/{run}/{thing}")(lambda r: Document("generic", Markup("")))
    reg.page("/run/{run}/search")(lambda r: Document("any kind", Markup("")))
    reg.page("/run/{run}/search", kinds=("harvest",))(lambda r: Document("harvest", Markup("")))
    found = reg.candidates("GET", "/run/h/search")
    assert [r.kinds for r, _ in found] == [("harvest",), None, None]
    assert found[-1][0].pattern == "/run/{run}/{thing}"
    with pytest.raises(ValueError, match="bad pattern"):
        reg.page("/run/{run:float}")
    with pytest.raises(ValueError, match="nav page"):
        reg.page("/run/{run}/unit/{unit}", nav="unit")


def test_a_new_technique_registers_a_home_a_page_and_a_nav_link(runs_root: Path) -> None:
    reg = REGISTRY.copy()

    @reg.home("mystery")
    def mystery_home(req: Request) -> Document:
        return Document("Mystery", render("<p>kind {k}</p>", k=req.the_run.kind))

    @reg.page("/run/{run}/clues/{n:int}", kinds=("mystery",), title="Clue")
    def clue(req: Request) -> Document:
        if req.params["n"] > 3:
            raise NotFound("only 3 clues")
        return Document(f"Clue {req.params['n']}", Markup("<p>a clue</p>"))

    @reg.page("/run/{run}/clues", kinds=("mystery",), title="All clues", nav="clues")
    def clues(req: Request) -> Markup:
        return Markup("<p>every clue</p>")  # a bare body, titled by the route

    app = App([runs_root], registry=reg)
    home = app.handle("GET", "/run/mystery").body.decode()
    assert "<p>kind mystery</p>" in home
    assert 'href="/run/mystery/clues"' in home and 'href="/run/mystery/record"' in home
    assert "Clue 2" in app.handle("GET", "/run/mystery/clues/2").body.decode()
    listing = app.handle("GET", "/run/mystery/clues").body.decode()
    assert "<h1>All clues</h1>" in listing and "<p>every clue</p>" in listing
    assert app.handle("GET", "/run/mystery/clues/9").status == 404
    assert app.handle("GET", "/run/ioi-demo/clues/2").status == 404  # not for other kinds
    assert "clues" not in app.handle("GET", "/run/ioi-demo").body.decode()
    assert (
        'href="/run/mystery/clues"'
        not in App([runs_root]).handle("GET", "/run/mystery").body.decode()
    )


def test_a_failing_page_is_a_500_page_and_the_app_goes_on(runs_root: Path, capsys) -> None:
    reg = REGISTRY.copy()
    reg.page("/boom")(lambda r: 1 / 0)
    app = App([runs_root], registry=reg)
    boom = app.handle("GET", "/boom")
    assert boom.status == 500 and b"ZeroDivisionError" in boom.body
    assert "ZeroDivisionError" in capsys.readouterr().err
    assert app.handle("GET", "/").status == 200


def test_tokens_show_whitespace_and_activation_colours() -> None:
    assert show_token("a\nb") == 'a<span class="ws">↵</span>b'
    assert show_token("\t<") == '<span class="ws">⇥</span>&lt;'
    assert show_token("\x07") == '<span class="ws">\\x07</span>'
    assert show_token("") == '<span class="ws">∅</span>'
    assert show_token(" Paris") == " Paris"
    assert token_background(2.0, 4.0) == "background:rgba(255,110,0,0.500)"
    assert token_background(-8.0, 4.0) == "background:rgba(30,110,255,1.000)"
    assert token_background(0.0, 4.0) == "" and token_background(1.0, 0.0) == ""


def test_histogram_has_one_bar_per_bin_and_a_zero_line() -> None:
    svg = histogram_svg([-1.0, 0.0, 1.0, 2.0], [3, 5, 0])
    assert svg.count("<rect ") == 3 and 'class="zero"' in svg
    assert "(0, 1]: 5" in svg
    assert "No histogram" in histogram_svg([], [])


def test_neighbouring_layers_are_found_by_site_name() -> None:
    sites = ["blocks.0.mlp.post", "blocks.1.mlp.post", "blocks.1.attn.z", "blocks.2.mlp.post"]
    assert neighbour_sites(sites, "blocks.1.mlp.post") == [
        ("layer below", "blocks.0.mlp.post"),
        ("layer above", "blocks.2.mlp.post"),
    ]
    assert neighbour_sites(sites, "blocks.1.attn.z") == []
    assert neighbour_sites(sites, "embed") == []

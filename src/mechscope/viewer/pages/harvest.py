"""Neuron pages for harvest runs (Neuroscope / Neuronpedia style).

A harvest run's home lists its model, corpus and sites and the units with the
largest activations; each unit has a page with its statistics, activation
histogram and top and random dataset examples, every token shaded by its
activation (orange positive, blue negative, relative to the unit's max; hover
for the value). Keys on a unit page: ``j``/``→`` next unit, ``k``/``←``
previous, ``/`` search. The harvest is read through `open_store`, which tests
point at a fake.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ...errors import InputError
from ..html import Markup, definition_list, join, link, render, table, url
from ..registry import Document, NotFound, Request, Response, home, page, redirect
from ..runs import RunInfo
from ..tokens import show_token, token_spans, unit_url
from .explain import unit_explanations

KINDS = ("harvest",)
TOP_ON_HOME = 50
SORT_KEYS = ("max", "mean", "std", "frac_active")


def open_store(path: Path) -> Any:
    """The harvest in run folder `path` (``mechscope.harvest.open_harvest``; tests swap it)."""
    from ...harvest import open_harvest

    return open_harvest(path)


@contextmanager
def harvest_of(req: Request) -> Iterator[Any]:
    """The run's harvest store, opened once per viewer and used by one request at a time."""
    run = req.the_run
    key = ("harvest", run.path)
    with req.app.lock(key):
        yield req.app.resource(key, lambda: open_store(run.path))


def num(x: float) -> str:
    return f"{x:.4g}"


# ---------------------------------------------------------------------------- pieces


def search_forms(run: RunInfo, token: str = "", unit: str = "") -> Markup:
    """The two search boxes: units by token, and a unit by name."""
    return render(
        """<div class="searches">
<form class="search" action="{token_action}" method="get" role="search">
<label>Token <input name="q" value="{token}" data-search placeholder=" Paris" autocomplete="off"></label>
<button>units firing on it</button></form>
<form class="search" action="{unit_action}" method="get">
<label>Unit <input name="q" value="{unit}" placeholder="L3 N12 · 3/12 · blocks.3.mlp.post:12" autocomplete="off"></label>
<button>go</button></form>
</div>""",
        token_action=url("run", run.id, "search", "token"),
        unit_action=url("run", run.id, "search", "unit"),
        token=token,
        unit=unit,
    )


def units_table(run: RunInfo, stats: Sequence[Any]) -> Markup:
    """Units with their statistics, each linking to its page."""
    rows = [
        (
            link(unit_url(run, s.site, s.unit), f"{s.site}:{s.unit}"),
            num(s.max),
            num(s.mean),
            num(s.std),
            f"{s.frac_active:.2%}",
            s.count,
        )
        for s in stats
    ]
    return table(("unit", "max", "mean", "std", "active", "count"), rows, cls="grid units")


def example_html(example: Any, scale: float) -> Markup:
    """One dataset example: a row of tokens shaded by activation; hover shows the value."""
    spans = token_spans(example.tokens, example.acts, scale, example.max_pos)
    return render(
        '<div class="example {kind}"><div class="meta">#{rank} · max {max} · window {window}</div>'
        '<div class="tokens">{spans}</div></div>',
        kind=example.kind,
        rank=example.rank + 1,
        max=num(example.max_act),
        window=example.window,
        spans=spans,
    )


def histogram_svg(edges: Sequence[float], counts: Sequence[int], width: int = 560) -> Markup:
    """The activation histogram as inline SVG: one equal-width bar per bin, its range on hover.

    Bins are drawn as stored (a harvest's are logarithmic on each side of 0),
    so every scale of activation is visible; counts are linear.
    """
    height, pad, axis = 150, 8, 18
    if not counts or len(edges) != len(counts) + 1:
        return Markup('<p class="muted">No histogram.</p>')
    top = max(max(counts), 1)
    inner_w, inner_h = width - 2 * pad, height - pad - axis
    bar_w = inner_w / len(counts)
    bars = []
    for i, (left, right, count) in enumerate(zip(edges[:-1], edges[1:], counts, strict=False)):
        h = count / top * inner_h
        bars.append(
            render(
                '<rect class="{cls}" x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" height="{h:.2f}">'
                "<title>({a}, {b}]: {n}</title></rect>",
                cls="neg" if right <= 0 else "pos",
                x=pad + i * bar_w,
                y=pad + inner_h - h,
                w=max(bar_w - 1, 0.5),
                h=h,
                a=num(left),
                b=num(right),
                n=count,
            )
        )
    zero = Markup("")
    if edges[0] < 0 < edges[-1] or 0 in edges[1:-1]:
        i = next(j for j, e in enumerate(edges) if e >= 0)
        x0 = pad + i * bar_w
        zero = render(
            '<line class="zero" x1="{x:.2f}" x2="{x:.2f}" y1="{y0}" y2="{y1}"/>'
            '<text x="{x:.2f}" y="{ty}" text-anchor="middle">0</text>',
            x=x0,
            y0=pad,
            y1=pad + inner_h,
            ty=height - 4,
        )
    return render(
        '<svg class="hist" role="img" viewBox="0 0 {w} {h}" width="{w}" height="{h}">'
        "<title>activation histogram</title>{bars}{zero}"
        '<text x="{pad}" y="{ty}">{lo}</text>'
        '<text x="{rx}" y="{ty}" text-anchor="end">{hi}</text>'
        '<text x="{rx}" y="{cy}" text-anchor="end" class="muted">max count {top}</text></svg>',
        w=width,
        h=height,
        bars=join(bars),
        zero=zero,
        pad=pad,
        rx=width - pad,
        ty=height - 4,
        cy=pad + 10,
        lo=num(edges[0]),
        hi=num(edges[-1]),
        top=top,
    )


_LAYER = re.compile(r"^(.*?)(\d+)(.*)$")


def neighbour_sites(sites: Sequence[str], site: str) -> list[tuple[str, str]]:
    """The same site in the layers below and above, as (label, site), where harvested."""
    m = _LAYER.match(site)
    if m is None:
        return []
    head, layer, tail = m.group(1), int(m.group(2)), m.group(3)
    found = []
    for label, other in (("layer below", layer - 1), ("layer above", layer + 1)):
        name = f"{head}{other}{tail}"
        if other >= 0 and name in sites:
            found.append((label, name))
    return found


# ---------------------------------------------------------------------------- pages


@home(*KINDS)
def harvest_home(req: Request) -> Document:
    """Model, corpus, sites, and the units with the largest activations in the first site."""
    run = req.the_run
    with harvest_of(req) as store:
        config = store.config
        sites = list(store.sites)
        counts = [(s, store.n_units(s)) for s in sites]
        top = store.top_units(sites[0], by="max", limit=TOP_ON_HOME) if sites else []
    model = config.get("model")
    corpus = config.get("corpus")
    facts = definition_list(
        {
            "model": model.get("name", "—") if isinstance(model, dict) else (model or "—"),
            "corpus": corpus.get("spec", "—") if isinstance(corpus, dict) else (corpus or "—"),
            "examples per unit (k)": config.get("k", "—"),
            "window (tokens)": config.get("window", "—"),
            "finished": run.finished or "—",
        }
    )
    site_rows = [
        (link(url("run", run.id, "units", site=s), s), n, link(unit_url(run, s, 0), "unit 0"))
        for s, n in counts
    ]
    body = render(
        "{facts}{search}<h2>Sites</h2>{sites}<h2>Top units of {first} by max activation</h2>{top}",
        facts=facts,
        search=search_forms(run),
        sites=table(("site", "units", ""), site_rows),
        first=sites[0] if sites else "—",
        top=units_table(run, top),
    )
    return Document(f"Harvest {run.id}", body)


@page("/run/{run}/units", kinds=KINDS, title="Units", nav="units")
def units_page(req: Request) -> Document:
    """The top units of one site, sorted by max, mean or fraction active."""
    run = req.the_run
    by = req.arg("by", "max")
    if by not in SORT_KEYS:
        raise InputError(f"cannot sort units by {by!r}; valid: {', '.join(SORT_KEYS)}")
    try:
        limit = max(1, min(int(req.arg("limit", "100")), 10_000))
    except ValueError as err:
        raise InputError(f"limit must be a whole number, got {req.arg('limit')!r}") from err
    with harvest_of(req) as store:
        sites = list(store.sites)
        site = req.arg("site") or (sites[0] if sites else "")
        if site not in sites:
            raise NotFound(f"no site {site!r} in this harvest; sites: {', '.join(sites)}")
        stats = store.top_units(site, by=by, limit=limit)
    options = join(
        render("<option{sel}>{s}</option>", sel=Markup(" selected") if s == site else "", s=s)
        for s in sites
    )
    by_options = join(
        render("<option{sel}>{b}</option>", sel=Markup(" selected") if b == by else "", b=b)
        for b in SORT_KEYS
    )
    body = render(
        '<form class="inline" method="get"><label>site <select name="site">{options}</select>'
        '</label> <label>by <select name="by">{by_options}</select></label> '
        '<label>show <input name="limit" value="{limit}" size="5"></label> <button>show</button>'
        "</form>{table}",
        options=options,
        by_options=by_options,
        limit=limit,
        table=units_table(run, stats),
    )
    return Document(f"Top units of {site} by {by}", body)


@page("/run/{run}/unit/{site}/{unit:int}", kinds=KINDS, title="Unit")
def unit_page(req: Request) -> Document:
    """One unit: statistics, histogram, top and random examples, links to its neighbours."""
    run = req.the_run
    site, unit = req.params["site"], req.params["unit"]
    with harvest_of(req) as store:
        sites = list(store.sites)
        if site not in sites:
            raise NotFound(f"no site {site!r} in this harvest; sites: {', '.join(sites)}")
        n_units = store.n_units(site)
        if not 0 <= unit < n_units:
            raise NotFound(f"{site} has units 0 to {n_units - 1}; there is no unit {unit}")
        try:
            record = store.unit(site, unit)
        except InputError as err:
            raise NotFound(str(err)) from err
        layers = [(lab, s) for lab, s in neighbour_sites(sites, site) if unit < store.n_units(s)]
    explained = unit_explanations(req, site, unit)
    stats = record.stats
    examples = [*record.top, *record.random]
    scale = (
        stats.max if stats.max > 0 else max((abs(a) for e in examples for a in e.acts), default=0)
    )
    moves = []
    if unit > 0:
        moves.append(
            link(unit_url(run, site, unit - 1), f"← unit {unit - 1}", rel="prev", id="prev-unit")
        )
    if unit + 1 < n_units:
        moves.append(
            link(unit_url(run, site, unit + 1), f"unit {unit + 1} →", rel="next", id="next-unit")
        )
    moves += [link(unit_url(run, s, unit), f"{label}: {s}") for label, s in layers]
    facts = definition_list(
        {
            "max": num(stats.max),
            "mean": num(stats.mean),
            "std": num(stats.std),
            "active": f"{stats.frac_active:.2%}",
            "count": stats.count,
        }
    )
    body = render(
        '<nav class="moves">{moves}<span class="keys">keys: j/→ next · k/← previous · / search'
        "</span></nav>{search}"
        '<div class="unit-head">{facts}<figure>{hist}<figcaption>activations of {site}:{unit}'
        ' · <a href="{card}" id="card-link">card (PNG)</a></figcaption></figure></div>'
        '{explained}<h2>Top examples</h2><div class="examples" id="top-examples">{top}</div>'
        '<h2>Random examples</h2><div class="examples" id="random-examples">{random}</div>',
        moves=join(moves, " · "),
        search=search_forms(run),
        facts=facts,
        hist=histogram_svg(record.hist_edges, record.hist_counts),
        site=site,
        unit=unit,
        card=url("run", run.id, "card", site, unit),
        explained=explained,
        top=join(example_html(e, scale) for e in record.top) or Markup("<p>None.</p>"),
        random=join(example_html(e, scale) for e in record.random) or Markup("<p>None.</p>"),
    )
    return Document(f"{site} unit {unit}", body)


@page("/run/{run}/card/{site}/{unit:int}", kinds=KINDS, title="Unit card")
def unit_card_png(req: Request) -> Response:
    """The unit's card (histogram and top examples as a token heatmap) as a PNG image."""
    import tempfile

    site, unit = req.params["site"], req.params["unit"]
    with harvest_of(req) as store:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                paths = store.figure(site, unit, Path(tmp) / "card")
                png = paths["png"].read_bytes()
        except InputError as err:
            raise NotFound(str(err)) from err
    return Response(png, content_type="image/png")


@page("/run/{run}/search", kinds=KINDS, title="Search", nav="search")
def search_page(req: Request) -> Document:
    """The search boxes, with the query syntax."""
    body = render(
        "{forms}<p>A token search lists the units that fire most on tokens matching the text "
        "(mind the leading space: <code> Paris</code>). A unit is named as "
        "<code>L3 N12</code>, <code>3/12</code> or <code>blocks.3.mlp.post:12</code>.</p>",
        forms=search_forms(req.the_run),
    )
    return Document("Search", body)


@page("/run/{run}/search/token", kinds=KINDS, title="Token search")
def token_search(req: Request) -> Document:
    """Units that fire most on tokens matching ``q`` (taken verbatim: spaces matter)."""
    run = req.the_run
    text = req.query.get("q", "")
    if text == "":
        return search_page(req)
    with harvest_of(req) as store:
        hits = store.search_token(text, limit=50)
    rows = [
        (
            render('<code class="token">{t}</code>', t=show_token(h.token)),
            link(unit_url(run, h.site, h.unit), f"{h.site}:{h.unit}"),
            h.count,
            num(h.max_act),
        )
        for h in hits
    ]
    results = (
        table(("token", "unit", "count", "max act"), rows, cls="grid hits")
        if rows
        else render('<p class="error">No unit fires on tokens matching {t}.</p>', t=repr(text))
    )
    body = render("{forms}{results}", forms=search_forms(run, token=text), results=results)
    return Document(f"Units firing on {text!r}", body)


@page("/run/{run}/search/unit", kinds=KINDS, title="Unit search")
def unit_search(req: Request) -> Document | Response:
    """Go to the unit named by ``q``; a friendly page when there is no such unit."""
    run = req.the_run
    query = req.arg("q")
    if not query:
        return redirect(url("run", run.id, "search"))
    error = ""
    with harvest_of(req) as store:
        try:
            found = store.find_units(query)
        except InputError as err:
            found, error = [], str(err)
        sites = list(store.sites)
        found = [(s, u) for s, u in found if s in sites and 0 <= u < store.n_units(s)]
    if len(found) == 1:
        return redirect(unit_url(run, *found[0]))
    forms = search_forms(run, unit=query)
    if not found:
        body = render(
            '<p class="error">No such unit: {q}. {error}</p>{forms}',
            q=query,
            error=error,
            forms=forms,
        )
        return Document("No such unit", body, status=404)
    links = join(render("<li>{a}</li>", a=link(unit_url(run, s, u), f"{s}:{u}")) for s, u in found)
    return Document(
        f"Units matching {query!r}", render("{f}<ul>{links}</ul>", f=forms, links=links)
    )

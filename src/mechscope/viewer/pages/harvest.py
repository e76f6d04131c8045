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
from ..html import Markup, join, link, render, table, template, url
from ..registry import Document, NotFound, Request, Response, home, page, redirect
from ..runs import RunInfo
from ..tokens import show_token, token_spans, unit_url
from .explain import unit_explanations

KINDS = ("harvest",)
TOP_ON_HOME = 50
SORT_KEYS = ("max", "mean", "std", "frac_active")
MAX_LIMIT = 10_000  # units listed on one page


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
    return template(
        "harvest/search_forms.html",
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


def example_view(example: Any, scale: float) -> dict[str, Any]:
    """What the unit page shows of one dataset example: tokens shaded by activation."""
    return {
        "kind": example.kind,
        "rank": example.rank + 1,
        "max": num(example.max_act),
        "window": example.window,
        "spans": token_spans(example.tokens, example.acts, scale, example.max_pos),
    }


def histogram_svg(edges: Sequence[float], counts: Sequence[int], width: int = 560) -> Markup:
    """The activation histogram as inline SVG: one equal-width bar per bin, its range on hover.

    Bins are drawn as stored (a harvest's are logarithmic on each side of 0),
    so every scale of activation is visible; counts are linear.
    """
    height, pad, axis = 150, 8, 18
    if not counts or len(edges) != len(counts) + 1:
        return template("harvest/histogram.html", bars=[])
    top = max(max(counts), 1)
    inner_w, inner_h = width - 2 * pad, height - pad - axis
    bar_w = inner_w / len(counts)
    bars = []
    for i, (left, right, count) in enumerate(zip(edges[:-1], edges[1:], counts, strict=False)):
        h = count / top * inner_h
        bars.append(
            {
                "cls": "neg" if right <= 0 else "pos",
                "x": f"{pad + i * bar_w:.2f}",
                "y": f"{pad + inner_h - h:.2f}",
                "w": f"{max(bar_w - 1, 0.5):.2f}",
                "h": f"{h:.2f}",
                "left": num(left),
                "right": num(right),
                "count": count,
            }
        )
    zero = None
    if edges[0] < 0 < edges[-1] or 0 in edges[1:-1]:
        i = next(j for j, e in enumerate(edges) if e >= 0)
        zero = {"x": f"{pad + i * bar_w:.2f}", "y0": pad, "y1": pad + inner_h}
    return template(
        "harvest/histogram.html",
        bars=bars,
        zero=zero,
        width=width,
        height=height,
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
    facts = {
        "model": model.get("name", "—") if isinstance(model, dict) else (model or "—"),
        "corpus": corpus.get("spec", "—") if isinstance(corpus, dict) else (corpus or "—"),
        "examples per unit (k)": config.get("k", "—"),
        "window (tokens)": config.get("window", "—"),
        "finished": run.finished or "—",
    }
    site_rows = [
        (link(url("run", run.id, "units", site=s), s), n, link(unit_url(run, s, 0), "unit 0"))
        for s, n in counts
    ]
    body = template(
        "harvest/home.html",
        facts=facts,
        search=search_forms(run),
        sites=site_rows,
        first=sites[0] if sites else "—",
        units=units_table(run, top),
    )
    return Document(f"Harvest {run.id}", body)


@page("/run/{run}/units", kinds=KINDS, title="Units", nav="units")
def units_page(req: Request) -> Document:
    """The top units of one site, sorted by max, mean or fraction active."""
    run = req.the_run
    by = req.arg("by", "max")
    if by not in SORT_KEYS:
        raise InputError(f"cannot sort units by {by!r}; valid: {', '.join(SORT_KEYS)}")
    raw = req.arg("limit", "100")
    limit = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 6 else 0
    if not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {raw[:40]!r}")
    with harvest_of(req) as store:
        sites = list(store.sites)
        site = req.arg("site") or (sites[0] if sites else "")
        if site not in sites:
            raise NotFound(f"no site {site!r} in this harvest; sites: {', '.join(sites)}")
        stats = store.top_units(site, by=by, limit=limit)
    body = template(
        "harvest/units.html",
        sites=sites,
        site=site,
        sort_keys=SORT_KEYS,
        by=by,
        limit=limit,
        units=units_table(run, stats),
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
    facts = {
        "max": num(stats.max),
        "mean": num(stats.mean),
        "std": num(stats.std),
        "active": f"{stats.frac_active:.2%}",
        "count": stats.count,
    }
    body = template(
        "harvest/unit.html",
        moves=join(moves, " · "),
        search=search_forms(run),
        facts=facts,
        hist=histogram_svg(record.hist_edges, record.hist_counts),
        site=site,
        unit=unit,
        card=url("run", run.id, "card", site, unit),
        explained=explained,
        top=[example_view(e, scale) for e in record.top],
        random=[example_view(e, scale) for e in record.random],
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
                png = paths["card"]["png"].read_bytes()
        except InputError as err:
            raise NotFound(str(err)) from err
    return Response(png, content_type="image/png")


@page("/run/{run}/search", kinds=KINDS, title="Search", nav="search")
def search_page(req: Request) -> Document:
    """The search boxes, with the query syntax."""
    body = template("harvest/search.html", forms=search_forms(req.the_run))
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
    body = template(
        "harvest/token_search.html",
        forms=search_forms(run, token=text),
        hits=rows,
        query=repr(text),
    )
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
    body = template(
        "harvest/unit_search.html",
        forms=search_forms(run, unit=query),
        query=query,
        error=error,
        found=[(unit_url(run, s, u), f"{s}:{u}") for s, u in found],
    )
    if not found:
        return Document("No such unit", body, status=404)
    return Document(f"Units matching {query!r}", body)

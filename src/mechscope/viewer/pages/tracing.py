"""Pages for causal-tracing runs (``mechscope.tracing.runs.trace_run``): traces and averages.

A ``trace`` run's home shows one fact's trace (``trace.safetensors``): the
fact, P(object) clean and corrupted, the heatmap figures, and per kind
(hidden state, MLP, attention) a plain HTML table of the indirect effect per
token × layer, so the trace reads without plotly. A trace of many facts
(``average.safetensors``) shows the mean indirect effect by token kind, its
peaks and figures; its "facts" page lists every fact, each with a page of
its own trace (``facts/NNNN.safetensors``). Edit runs are in ``editing.py``.

The results are opened with numpy arrays (`App.result`: the viewer never
imports torch); the HTML is in ``templates/tracing/``, the heat tables'
layout in ``static/viewer.css``. Every value read from the run's files is
escaped; a damaged file gives an error page naming it.

Example: ``GET /run/t-one`` → the trace's facts, figures and heat tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...errors import MechscopeError
from ...tracing.results import KIND_NAMES, TOKEN_KINDS, AverageTrace, CausalTrace
from ..html import Markup, link, render, template, url
from ..registry import Document, NotFound, Request, home, page
from ..runs import RunInfo
from ..tokens import show_token
from .common import figure_html, num, summary_html

if TYPE_CHECKING:
    from ..app import App

TRACE_KINDS = ("trace",)
STATES = KIND_NAMES  # what each kind of restored state is called
# the figures' colour per kind (matplotlib's Purples, Greens, Reds); negative effects in grey
HEAT_RGB = {"hidden": (84, 39, 143), "mlp": (0, 109, 44), "attn": (165, 15, 21)}
NEGATIVE_RGB = (90, 100, 120)


# ---------------------------------------------------------------------------- data


def read_trace(app: App, run: RunInfo, relative: str) -> CausalTrace | None:
    """The causal trace in `relative` (inside the run folder), None if the file is missing.

    Example: ``read_trace(req.app, run, "facts/0000.safetensors")`` → a `CausalTrace`.
    """
    return app.result(run, relative, CausalTrace)


def read_average(app: App, run: RunInfo) -> AverageTrace | None:
    """The averaged trace of a many-fact trace run, None if it has none.

    Example: ``read_average(req.app, run).n_facts`` → ``3``.
    """
    return app.result(run, "average.safetensors", AverageTrace)


def fact_files(run: RunInfo) -> dict[int, str]:
    """The per-fact traces of a many-fact run: fact number → ``facts/NNNN.safetensors``.

    Example: ``fact_files(run)`` → ``{0: "facts/0000.safetensors", 1: …}``.
    """
    folder = run.path / "facts"
    if not folder.is_dir():
        return {}
    found = {
        int(p.stem): f"facts/{p.name}"
        for p in folder.glob("*.safetensors")
        if p.stem.isascii() and p.stem.isdigit()
    }
    return dict(sorted(found.items()))


def _missing_trace(run: RunInfo) -> NotFound:
    return NotFound(
        f"trace run {run.id} has neither trace.safetensors nor average.safetensors: "
        "it did not finish",
        render("<p>{a}</p>", a=link(url("run", run.id, "record"), "its record and files")),
    )


# ---------------------------------------------------------------------------- heat tables


@dataclass(frozen=True)
class HeatCell:
    """One cell of a heat table: its shading, its tooltip and its exact value (``repr``).

    Example: ``HeatCell("background:rgba(0,109,44,1.000)", "' Rome', layer 3: …", "0.25")``.
    """

    style: str
    tip: str
    value: str


@dataclass(frozen=True)
class HeatRow:
    """A row of a heat table: its label (a token, shown), whether it is a subject token, cells.

    Example: ``HeatRow(show_token(" Rome"), True, [HeatCell("", "…", "0.0")])``.
    """

    label: Markup
    subject: bool
    cells: list[HeatCell]


@dataclass(frozen=True)
class HeatTable:
    """A heat table as ``tracing/macros.html`` shows it: `rows` × `layers` columns.

    Example: ``heat_table("mlp", ["a", "b"], grid, "indirect effect").layers`` → ``grid.shape[1]``.
    """

    kind: str
    caption: str
    layers: int
    rows: list[HeatRow]
    title: str = ""


def heat_background(value: float, scale: float, kind: str) -> str:
    """CSS background: the kind's colour for a positive effect, grey for negative, alpha |v|/scale.

    Example: ``heat_background(0.5, 1.0, "mlp")`` → ``"background:rgba(0,109,44,0.500)"``.
    """
    if scale <= 0 or math.isnan(value):
        return ""
    alpha = min(abs(value) / scale, 1.0)
    if alpha < 0.005:
        return ""
    r, g, b = HEAT_RGB.get(kind, HEAT_RGB["hidden"]) if value > 0 else NEGATIVE_RGB
    return f"background:rgba({r},{g},{b},{alpha:.3f})"


def _row_label(label: str) -> Markup:
    """A row's label as shown: a token of spaces only as ␣ (else it would be blank)."""
    if label and not label.strip(" "):
        return render('<span class="ws">{s}</span>', s="␣" * len(label))
    return show_token(label)


def heat_table(
    kind: str,
    labels: Sequence[str],
    grid: np.ndarray,
    caption: str,
    marked: Sequence[bool] = (),
    values: np.ndarray | None = None,
    tokens: bool = False,
    title: str = "",
) -> HeatTable:
    """Rows `labels` × layer columns, each cell shaded by `grid` [row, layer]; exact value on hover.

    `marked` rows (subject tokens) are bold with a ``*``; `values` (P(object)) join the
    tooltip; with `tokens`, labels are quoted there (a token may be blank).

    Example: ``heat_table("mlp", trace.tokens, trace.indirect_effect("mlp").T, "effect")``.
    """
    finite = np.abs(grid[np.isfinite(grid)])
    scale = float(finite.max()) if finite.size else 0.0
    rows = []
    for i, label in enumerate(labels):
        name = repr(label) if tokens else label
        cells = []
        for layer, x in enumerate(grid[i].tolist()):
            tip = f"{name}, layer {layer}: indirect effect {num(x)}"
            if values is not None:
                tip += f", P(object) {num(float(values[i, layer]))}"
            cells.append(HeatCell(heat_background(x, scale, kind), tip, repr(x)))
        rows.append(HeatRow(_row_label(label), i < len(marked) and marked[i], cells))
    return HeatTable(kind, caption, grid.shape[1], rows, title)


def trace_heat_tables(trace: CausalTrace) -> list[HeatTable]:
    """Per kind, the indirect effect per token (rows, subject marked) × layer (columns).

    Example: ``[t.kind for t in trace_heat_tables(trace)]`` → ``["hidden", "mlp", "attn"]``.
    """
    start, end = trace.subject
    marked = [start <= i < end for i in range(len(trace.tokens))]
    tables = []
    for kind in trace.scores:
        span = "" if kind == "hidden" else f", window of {trace.window} layers"
        ie = trace.indirect_effect(kind)
        caption = f"indirect effect; * subject token; darker = larger (max {num(np.nanmax(ie))})"
        tables.append(
            heat_table(
                kind,
                trace.tokens,
                ie.T,
                caption,
                marked,
                np.asarray(trace.scores[kind]).T,
                tokens=True,
                title=f"{STATES.get(kind, kind)}{span}",
            )
        )
    return tables


def _trace_facts(run: RunInfo, trace: CausalTrace) -> dict[str, object]:
    start, end = trace.subject
    return {
        "model": run.model or "—",
        "prompt": trace.fact.prompt,
        "subject": render(
            "{s} <span class=muted>(tokens {a}–{b})</span>",
            s=trace.fact.subject,
            a=start,
            b=end - 1,
        ),
        "object": trace.fact.object,
        "P(object), clean": num(trace.clean),
        "P(object), corrupted": num(trace.corrupted),
        "noise": f"{num(trace.noise)} (std of the noise on the subject's embeddings)",
        "samples": trace.samples,
        "window": f"{trace.window} layers (MLP and attention restorations)",
        "finished": run.finished or "—",
    }


def _max_effects(trace: CausalTrace) -> list[str]:
    return [num(float(np.nanmax(trace.indirect_effect(k)))) for k in trace.scores]


# ---------------------------------------------------------------------------- trace pages


@home(*TRACE_KINDS)
def trace_home(req: Request) -> Document:
    """One fact's trace, or the average over many facts.

    Example: ``GET /run/t-one`` (one fact) or ``GET /run/t-many`` (the average).
    """
    run = req.the_run
    trace = read_trace(req.app, run, "trace.safetensors")
    if trace is not None:
        figures = [
            figure_html(run, f"trace_{k}", f"P(object) restoring the {STATES.get(k, k)}")
            for k in trace.scores
        ]
        body = template(
            "tracing/trace.html",
            facts=_trace_facts(run, trace),
            figures=figures,
            tables=trace_heat_tables(trace),
        )
        return Document(f"Trace {run.id}", body)
    average = read_average(req.app, run)
    if average is None:
        raise _missing_trace(run)
    return Document(f"Average trace {run.id}", _average_body(run, average))


@dataclass(frozen=True)
class AverageSection:
    """One kind of state on an average trace's home: its peaks per token kind, heat, figure.

    Example: ``AverageSection("mlp", "MLP output", [("subject last", 3, "0.2", 1)], heat, fig)``.
    """

    kind: str
    name: str
    rows: list[tuple[object, ...]]
    heat: HeatTable
    figure: Markup


def _average_body(run: RunInfo, avg: AverageTrace) -> Markup:
    facts = {
        "model": run.model or "—",
        "facts": render(
            "{n} ({a})", n=avg.n_facts, a=link(url("run", run.id, "facts"), "list them")
        ),
        "P(object), clean (mean)": num(avg.clean),
        "P(object), corrupted (mean)": num(avg.corrupted),
        "noise": num(avg.noise),
        "samples": avg.samples,
        "window": f"{avg.window} layers",
        "finished": run.finished or "—",
    }
    peaks = []
    for kind in avg.effects:
        tk, layer, value = avg.peak(kind)
        if not math.isfinite(value):  # every cell unknown: no fact has any token kind
            tk, layer, value = "—", "—", math.nan
        peaks.append((STATES.get(kind, kind), tk, layer, num(value)))
    sections = []
    labels = [f"{t} ({c})" for t, c in zip(TOKEN_KINDS, avg.counts, strict=True)]
    for kind, effect in avg.effects.items():
        grid = np.asarray(effect, dtype=np.float64)
        rows: list[tuple[object, ...]] = []
        for g, name in enumerate(TOKEN_KINDS):
            row = grid[g]
            if np.isnan(row).all():
                rows.append((name, avg.counts[g], "—", "—"))
            else:
                best = int(np.nanargmax(row))
                rows.append((name, avg.counts[g], num(float(row[best])), best))
        sections.append(
            AverageSection(
                kind,
                STATES.get(kind, kind),
                rows,
                heat_table(kind, labels, grid, "mean indirect effect (facts with the kind)"),
                figure_html(run, f"average_{kind}", f"average indirect effect: {kind}"),
            )
        )
    return template(
        "tracing/average.html",
        facts=facts,
        peaks=peaks,
        summary=summary_html(run),
        sections=sections,
    )


def _fact_trace(req: Request, n: int) -> tuple[CausalTrace, str]:
    """Fact `n`'s trace and its file; a one-fact run's fact 0 is its trace."""
    run = req.the_run
    relative = fact_files(run).get(n)
    if relative is None and n == 0 and (run.path / "trace.safetensors").is_file():
        relative = "trace.safetensors"
    trace = read_trace(req.app, run, relative) if relative is not None else None
    if relative is None or trace is None:
        raise NotFound(
            f"trace run {run.id} has no fact {n}",
            render("<p>{a}</p>", a=link(url("run", run.id, "facts"), "its facts")),
        )
    return trace, relative


@page("/run/{run}/facts", kinds=TRACE_KINDS, title="Facts", nav="facts")
def facts_page(req: Request) -> Document:
    """Every traced fact with P(object) clean and corrupted and its largest indirect effects.

    Example: ``GET /run/t-many/facts`` → a table of the three facts, each linked to its page.
    """
    run = req.the_run
    files = fact_files(run)
    if not files and (run.path / "trace.safetensors").is_file():
        files = {0: "trace.safetensors"}
    if not files:
        raise _missing_trace(run)
    rows: list[tuple[object, ...]] = []
    kinds: list[str] = []
    for n, relative in files.items():
        try:
            trace = read_trace(req.app, run, relative)
        except MechscopeError as err:
            rows.append((n, render('<span class="error">{e}</span>', e=err), "", "", ""))
            continue
        assert trace is not None  # listed, so present
        kinds = kinds or list(trace.scores)
        rows.append(
            (
                n,
                link(url("run", run.id, "fact", n), trace.fact.prompt),
                trace.fact.object,
                num(trace.clean),
                num(trace.corrupted),
                *_max_effects(trace),
            )
        )
    header = ("#", "prompt", "object", "clean", "corrupted")
    header += tuple(f"max IE, {STATES.get(k, k)}" for k in kinds)
    body = template("tracing/facts.html", header=header, rows=rows)
    return Document(f"Facts of {run.id}", body)


@page("/run/{run}/fact/{n:int}", kinds=TRACE_KINDS, title="Fact")
def fact_page(req: Request) -> Document:
    """One fact's trace: what was traced and its heat tables, with links to the next and previous.

    Example: ``GET /run/t-many/fact/1`` → fact 1's trace, linked to facts 0 and 2.
    """
    run = req.the_run
    n = req.params["n"]
    trace, relative = _fact_trace(req, n)
    numbers = list(fact_files(run))
    body = template(
        "tracing/fact.html",
        prev_url=url("run", run.id, "fact", n - 1) if n - 1 in numbers else None,
        next_url=url("run", run.id, "fact", n + 1) if n + 1 in numbers else None,
        facts=_trace_facts(run, trace),
        file=relative,
        tables=trace_heat_tables(trace),
    )
    return Document(f"Fact {n}: {trace.fact.prompt}", body)

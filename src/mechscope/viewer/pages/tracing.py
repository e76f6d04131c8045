"""Pages for causal-tracing and ROME runs (``mechscope.tracing.runs``): traces, averages, edits.

A ``trace`` run's home shows one fact's trace (``trace.safetensors``): the
fact, P(object) clean and corrupted, the heatmap figures, and per kind
(hidden state, MLP, attention) a plain HTML table of the indirect effect per
token × layer, so the trace reads without plotly. A trace of many facts
(``average.safetensors``) shows the mean indirect effect by token kind, its
peaks and figures; its "facts" page lists every fact, each with a page of
its own trace (``facts/NNNN.safetensors``). An ``edit`` run's home shows the
ROME update (``edit.safetensors``), the held-out scores of ``report.safetensors``
with what each means, every prompt's probabilities before and after, the
generations side by side and the value search's loss (``editing``).

The results are opened with numpy arrays (`App.result`: the viewer never
imports torch). Every value read from the run's files is escaped; a damaged
file gives an error page naming it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ...errors import MechscopeError
from ...tracing.results import KIND_NAMES, TOKEN_KINDS, AverageTrace, CausalTrace
from ..html import Markup, definition_list, join, link, render, table, url
from ..registry import Document, NotFound, Request, home, page
from ..runs import RunInfo
from ..tokens import show_token
from .common import figure_html, num

if TYPE_CHECKING:
    from ..app import App

TRACE_KINDS = ("trace",)
STATES = KIND_NAMES  # what each kind of restored state is called
# the figures' colour per kind (matplotlib's Purples, Greens, Reds); negative effects in grey
HEAT_RGB = {"hidden": (84, 39, 143), "mlp": (0, 109, 44), "attn": (165, 15, 21)}
NEGATIVE_RGB = (90, 100, 120)
IE_MEANING = Markup(
    "<p>The <strong>indirect effect</strong> of a state is P(object) when the subject's "
    "embeddings are corrupted and that one state is restored from the clean run, minus "
    "P(object) corrupted: how much of the fact that state alone brings back.</p>"
)
# the heat tables' layout, kept beside them (the page policy allows inline style)
HEAT_STYLE = Markup(
    "<style>table.heat{border-collapse:collapse;font-size:12px;margin:.4rem 0 1.2rem}"
    "table.heat td{min-width:1.7em;height:1.35em;border:1px solid #e6e8eb;padding:0}"
    "table.heat th{font-weight:400;padding:0 .45em;white-space:pre;text-align:left}"
    "table.heat thead th{text-align:center;color:var(--muted)}"
    "table.heat tr.subject th{font-weight:700}"
    "div.heat-row{display:flex;flex-wrap:wrap;gap:.5rem 2rem;align-items:flex-start}"
    "div.heat p{margin:.2rem 0;font-size:13px;max-width:24rem}</style>"
)


# ---------------------------------------------------------------------------- data


def read_trace(app: App, run: RunInfo, relative: str) -> CausalTrace | None:
    """The causal trace in `relative` (inside the run folder), None if the file is missing."""
    return app.result(run, relative, CausalTrace)


def read_average(app: App, run: RunInfo) -> AverageTrace | None:
    """The averaged trace of a many-fact trace run, None if it has none."""
    return app.result(run, "average.safetensors", AverageTrace)


def fact_files(run: RunInfo) -> dict[int, str]:
    """The per-fact traces of a many-fact run: fact number → ``facts/NNNN.safetensors``."""
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


# ---------------------------------------------------------------------------- pieces


def heat_background(value: float, scale: float, kind: str) -> str:
    """CSS background: the kind's colour for a positive effect, grey for negative, alpha |v|/scale."""
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
) -> Markup:
    """Rows `labels` × layer columns, each cell shaded by `grid` [row, layer]; exact value on hover.

    `marked` rows (subject tokens) are bold with a ``*``; `values` (P(object)) join the
    tooltip; with `tokens`, labels are quoted there (a token may be blank).
    """
    finite = np.abs(grid[np.isfinite(grid)])
    scale = float(finite.max()) if finite.size else 0.0
    head = join(render("<th>{layer}</th>", layer=layer) for layer in range(grid.shape[1]))
    rows = []
    for i, label in enumerate(labels):
        mark = i < len(marked) and marked[i]
        name = repr(label) if tokens else label
        cells = []
        for layer, x in enumerate(grid[i].tolist()):
            tip = f"{name}, layer {layer}: indirect effect {num(x)}"
            if values is not None:
                tip += f", P(object) {num(float(values[i, layer]))}"
            cells.append(
                render(
                    '<td style="{style}" title="{tip}" data-value="{v!r}"></td>',
                    style=heat_background(x, scale, kind),
                    tip=tip,
                    v=x,
                )
            )
        rows.append(
            render(
                '<tr{cls}><th scope="row">{label}{mark}</th>{cells}</tr>',
                cls=Markup(' class="subject"') if mark else "",
                label=_row_label(label),
                mark="*" if mark else "",
                cells=join(cells),
            )
        )
    return render(
        '<div class="heat"><p class="muted">{caption}</p>'
        '<table class="heat" id="heat-{kind}" data-kind="{kind}">'
        "<thead><tr><th>layer</th>{head}</tr></thead><tbody>{rows}</tbody></table></div>",
        kind=kind,
        caption=caption,
        head=head,
        rows=join(rows),
    )


def trace_heat_tables(trace: CausalTrace) -> Markup:
    """Per kind, the indirect effect per token (rows, subject marked) × layer (columns)."""
    start, end = trace.subject
    marked = [start <= i < end for i in range(len(trace.tokens))]
    parts = []
    for kind in trace.scores:
        span = "" if kind == "hidden" else f", window of {trace.window} layers"
        ie = trace.indirect_effect(kind)
        caption = f"indirect effect; * subject token; darker = larger (max {num(np.nanmax(ie))})"
        parts.append(
            render(
                "<div><h3>{name}{span}</h3>{table}</div>",
                name=STATES.get(kind, kind),
                span=span,
                table=heat_table(
                    kind,
                    trace.tokens,
                    ie.T,
                    caption,
                    marked,
                    np.asarray(trace.scores[kind]).T,
                    tokens=True,
                ),
            )
        )
    return render(
        '{style}{meaning}<div class="heat-row">{parts}</div>',
        style=HEAT_STYLE,
        meaning=IE_MEANING,
        parts=join(parts),
    )


def _trace_facts(run: RunInfo, trace: CausalTrace) -> Markup:
    start, end = trace.subject
    return definition_list(
        {
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
    )


def _max_effects(trace: CausalTrace) -> list[str]:
    return [num(float(np.nanmax(trace.indirect_effect(k)))) for k in trace.scores]


# ---------------------------------------------------------------------------- trace pages


@home(*TRACE_KINDS)
def trace_home(req: Request) -> Document:
    """One fact's trace, or the average over many facts."""
    run = req.the_run
    trace = read_trace(req.app, run, "trace.safetensors")
    if trace is not None:
        figures = join(
            figure_html(run, f"trace_{k}", f"P(object) restoring the {STATES.get(k, k)}")
            for k in trace.scores
        )
        body = render(
            '{facts}<h2>Figures</h2><div class="figure-row">{figures}</div>'
            "<h2>Indirect effect per token and layer</h2>{tables}",
            facts=_trace_facts(run, trace),
            figures=figures,
            tables=trace_heat_tables(trace),
        )
        return Document(f"Trace {run.id}", body)
    average = read_average(req.app, run)
    if average is None:
        raise _missing_trace(run)
    return Document(f"Average trace {run.id}", _average_body(run, average))


def _average_body(run: RunInfo, avg: AverageTrace) -> Markup:
    facts = definition_list(
        {
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
    )
    peaks = []
    for kind in avg.effects:
        tk, layer, value = avg.peak(kind)
        if not math.isfinite(value):  # every cell unknown: no fact has any token kind
            tk, layer, value = "—", "—", math.nan
        peaks.append((STATES.get(kind, kind), tk, layer, num(value)))
    summary = run.record.get("summary")
    if isinstance(summary, list):
        summary = "\n".join(str(line) for line in summary)
    sections = []
    labels = [f"{t} ({c})" for t, c in zip(TOKEN_KINDS, avg.counts, strict=True)]
    for kind, effect in avg.effects.items():
        grid = np.asarray(effect, dtype=np.float64)
        rows = []
        for g, name in enumerate(TOKEN_KINDS):
            row = grid[g]
            if np.isnan(row).all():
                rows.append((name, avg.counts[g], "—", "—"))
            else:
                best = int(np.nanargmax(row))
                rows.append((name, avg.counts[g], num(float(row[best])), best))
        sections.append(
            render(
                '<h3 id="kind-{kind}">{name}</h3><div class="figure-row"><div>{table}{heat}'
                "</div>{figure}</div>",
                kind=kind,
                name=STATES.get(kind, kind),
                table=table(
                    ("token kind", "facts", "max AIE", "at layer"), rows, cls=f"grid aie {kind}"
                ),
                heat=heat_table(kind, labels, grid, "mean indirect effect (facts with the kind)"),
                figure=figure_html(run, f"average_{kind}", f"average indirect effect: {kind}"),
            )
        )
    return render(
        "{facts}{meaning}<h2>Peaks</h2>{peaks}{summary}<h2>By kind of token</h2>{style}{sections}",
        facts=facts,
        meaning=IE_MEANING,
        peaks=table(("state", "token kind", "layer", "mean indirect effect"), peaks, "grid peaks"),
        summary=render('<pre class="summary">{s}</pre>', s=summary) if summary else "",
        style=HEAT_STYLE,
        sections=join(sections),
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
    """Every traced fact with P(object) clean and corrupted and its largest indirect effects."""
    run = req.the_run
    files = fact_files(run)
    if not files and (run.path / "trace.safetensors").is_file():
        files = {0: "trace.safetensors"}
    if not files:
        raise _missing_trace(run)
    rows, kinds = [], []
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
    body = render(
        "<p>{n} facts; P(object) clean and with the subject corrupted, and the largest indirect "
        "effect of each kind of state.</p>{table}",
        n=len(rows),
        table=table(header, rows, cls="grid facts"),
    )
    return Document(f"Facts of {run.id}", body)


@page("/run/{run}/fact/{n:int}", kinds=TRACE_KINDS, title="Fact")
def fact_page(req: Request) -> Document:
    """One fact's trace: what was traced and its heat tables, with links to the next and previous."""
    run = req.the_run
    n = req.params["n"]
    trace, relative = _fact_trace(req, n)
    numbers = list(fact_files(run))
    moves = []
    if n - 1 in numbers:
        moves.append(link(url("run", run.id, "fact", n - 1), "← previous", rel="prev"))
    if n + 1 in numbers:
        moves.append(link(url("run", run.id, "fact", n + 1), "next →", rel="next"))
    body = render(
        '<nav class="moves">{moves}</nav>{facts}<p class="muted">From {file}.</p>{tables}',
        moves=join(moves, " "),
        facts=_trace_facts(run, trace),
        file=relative,
        tables=trace_heat_tables(trace),
    )
    return Document(f"Fact {n}: {trace.fact.prompt}", body)


# ---------------------------------------------------------------------------- edit pages

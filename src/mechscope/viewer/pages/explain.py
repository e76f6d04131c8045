"""Pages for explain runs (``mechscope.autointerp.explain_run``): explanations, scores, simulations.

An explain run's home shows what explained and judged (explainer, simulator,
judge), the harvest it explains (linked when this viewer serves it), the
summary of scores (method × scorer, mean with 95% bootstrap interval) and a
table of units with their LLM explanation and its scores. Each explained unit
has a page with every method's explanation (failed ones with their error and
raw answer), its scores, and for every held-out window the actual activations
above the simulated ones, token by token (actual shaded as on the harvest's
neuron pages, relative to the unit's largest |activation|; simulated relative
to the largest simulated value; hover for the value). Keys: ``j``/``→`` next
explained unit, ``k``/``←`` previous. A harvest neuron page lists the served
explain runs of its unit with `unit_explanations`.

The run is read through `mechscope.autointerp.results` (`ExplainRun`, and the
`ExplainSummary` result); everything shown from it is model output or corpus
text and is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...autointerp.results import (
    ExplainRun,
    ExplainSummary,
    ExplanationRow,
    ScoreRow,
    SimulationRow,
    Unit,
    linked_harvest,
)
from ...errors import MechscopeError
from ..html import Markup, join, link, render, template, url
from ..registry import Document, NotFound, Request, home, page
from ..runs import RunInfo
from ..tokens import token_spans, unit_url
from .common import missing_file
from .common import num as show_num

if TYPE_CHECKING:
    from ..app import App

KINDS = ("explain",)
WINDOW_KIND = {"top": "held-out top window", "random": "random window"}


# ---------------------------------------------------------------------------- data


def explain_data(app: App, run: RunInfo) -> ExplainRun:
    """The explain run, read once per viewer."""
    return app.resource(("explain", run.path), lambda: ExplainRun.open(run.path, run.config))


def simulations_of(app: App, run: RunInfo) -> dict[Unit, dict[str, list[SimulationRow]]]:
    """The run's simulations by unit and method, read once per viewer."""
    data = explain_data(app, run)
    return app.resource(("explain-simulations", run.path), data.simulations)


def served_harvest(app: App, data: ExplainRun) -> RunInfo | None:
    """The harvest run this viewer serves that the explain run explains, if any."""
    harvest = data.harvest
    if harvest is None:
        return None
    return next(
        (r for r in app.runs.values() if r.kind == "harvest" and r.path.resolve() == harvest),
        None,
    )


def explained_url(run: RunInfo, site: str, unit: int) -> str:
    return url("run", run.id, "explained", site, unit)


# ---------------------------------------------------------------------------- pieces


def num(x: float | None, digits: int = 3) -> str:
    """A score as shown: `digits` decimals, "—" when missing or NaN."""
    return show_num(x, f".{digits}f")


def score_cell(rec: ScoreRow | None) -> Markup:
    """A score, with its note (e.g. no explanation) or count of failed answers in grey."""
    if rec is None:
        return Markup('<span class="muted">—</span>')
    extra = rec.note or (f"{rec.failed} failed" if rec.failed else "")
    note = render(' <span class="muted">({e})</span>', e=extra) if extra else ""
    return render("{score}{note}", score=num(rec.score), note=note)


def explanation_cell(rec: ExplanationRow | None, raw: bool = False) -> Markup:
    """An explanation's text, or "failed: <error>" (with the raw answer when `raw`)."""
    return template("explain/explanation.html", rec=rec, raw=raw)


def window_view(sim: SimulationRow, true_scale: float, sim_scale: float) -> dict[str, Any]:
    """What the template shows of one held-out window: actual and simulated token rows."""
    true, simulated = sim.true, sim.simulated
    peak = max(range(len(true)), key=lambda i: true[i]) if true else -1
    return {
        "kind": sim.kind,
        "window": sim.window,
        "what": WINDOW_KIND.get(sim.kind, sim.kind),
        "peak": f"{max(true, default=0):.4g}",
        "r": "—" if simulated is None else num(sim.correlation(), 2),
        "actual": token_spans(sim.tokens, true, true_scale, peak, label="actual"),
        "simulated": None
        if simulated is None
        else token_spans(sim.tokens, simulated, sim_scale, label="simulated"),
        "error": sim.error or "unknown error",
        "raw": sim.raw or "(empty answer)",
    }


def simulations_view(
    method: str, sims: Sequence[SimulationRow], true_scale: float
) -> dict[str, Any]:
    """A method's held-out windows, simulated on 0…(its largest simulated value)."""
    sim_scale = max((v for s in sims for v in s.simulated or ()), default=0.0)
    return {
        "method": method,
        "windows": [window_view(s, true_scale, sim_scale) for s in sims],
        "true_scale": f"{true_scale:.4g}",
        "sim_scale": f"{sim_scale:.4g}",
        "n_failed": sum(s.simulated is None for s in sims),
    }


def unit_explanations(req: Request, site: str, unit: int) -> Markup:
    """The "Explanations" section of a harvest neuron page: served explain runs of this unit."""
    app = req.app
    runs = sorted((r for r in app.runs.values() if r.kind == "explain"), key=lambda r: r.id)
    if not runs:
        return Markup("")

    def index() -> dict[Path, list[str]]:  # harvest folder → ids of the explain runs of it
        out: dict[Path, list[str]] = {}
        for r in runs:
            harvest = linked_harvest(r.path, r.config.get("harvest"))
            if harvest is not None:
                out.setdefault(harvest, []).append(r.id)
        return out

    key = ("explain-runs-by-harvest", tuple(r.path for r in runs))
    ids = app.resource(key, index).get(req.the_run.path.resolve(), [])
    rows: list[tuple[object, object, object]] = []
    for run_id in ids:
        run = app.runs.get(run_id)
        if run is None:
            continue
        try:
            data = explain_data(app, run)
        except MechscopeError as err:
            rows.append((run.id, render('<span class="error">{e}</span>', e=err), ""))
            continue
        if (site, unit) not in data.units:
            continue
        scores = join(
            (
                render("{s} {v}", s=s, v=score_cell(data.score((site, unit), "llm", s)))
                for s in data.scorers
            ),
            Markup(" · "),
        )
        llm = explanation_cell(data.explanation((site, unit), "llm"))
        rows.append((link(explained_url(run, site, unit), run.id), llm, scores))
    return template("explain/section.html", rows=rows) if rows else Markup("")


# ---------------------------------------------------------------------------- pages


@home(*KINDS)
def explain_home(req: Request) -> Document:
    """What explained and judged, the summary of scores, and every unit's LLM explanation."""
    run = req.the_run
    summary = req.app.result(run, "summary.safetensors", ExplainSummary)
    if summary is None:
        raise missing_file(run, "summary.safetensors")
    data = explain_data(req.app, run)
    config = data.config
    harvest_run = served_harvest(req.app, data)
    model = config.get("model")
    facts = {
        "model": model.get("name", "—") if isinstance(model, dict) else (model or "—"),
        "harvest": link(url("run", harvest_run.id), harvest_run.id)
        if harvest_run
        else config.get("harvest", "—"),
        "explainer": config.get("explainer", "—"),
        "simulator": config.get("simulator", "—"),
        "judge": config.get("judge", "—"),
        "units": len(data.units),
        "windows shown / held out": f"{config.get('n_show', '—')} / {config.get('n_test', '—')}",
        "failed LLM explanations": summary.failed_explanations,
        "seed": config.get("seed", "—"),
        "finished": run.finished or "—",
    }
    summary_rows = [
        (r.method, r.scorer, num(r.mean), f"[{num(r.lo)}, {num(r.hi)}]", r.n) for r in summary.rows
    ]
    units = [
        (
            site,
            link(explained_url(run, site, unit), unit),
            explanation_cell(data.explanation((site, unit), "llm")),
            *(score_cell(data.score((site, unit), "llm", s)) for s in data.scorers),
        )
        for site, unit in data.units
    ]
    body = template(
        "explain/home.html",
        facts=facts,
        summary=summary_rows,
        scorers=data.scorers,
        units=units,
    )
    return Document(f"Explanations {run.id}", body)


@page("/run/{run}/explained/{site}/{unit:int}", kinds=KINDS, title="Explained unit")
def explained_unit(req: Request) -> Document:
    """One unit: its explanations, scores, and simulated against actual activations per window."""
    run = req.the_run
    site, unit = req.params["site"], req.params["unit"]
    data = explain_data(req.app, run)
    key = (site, unit)
    if key not in data.units:
        sites = sorted({s for s, _ in data.units})
        raise NotFound(
            f"{run.id} did not explain {site}:{unit}; it explains {len(data.units)} units "
            f"of {', '.join(sites) or 'no site'}"
        )
    sims = simulations_of(req.app, run).get(key, {})
    at = data.units.index(key)
    moves = []
    if at > 0:
        moves.append(
            link(explained_url(run, *data.units[at - 1]), "← previous", rel="prev", id="prev-unit")
        )
    if at + 1 < len(data.units):
        moves.append(
            link(explained_url(run, *data.units[at + 1]), "next →", rel="next", id="next-unit")
        )
    harvest_run = served_harvest(req.app, data)
    if harvest_run is not None:
        moves.append(
            link(unit_url(harvest_run, site, unit), "neuron page in the harvest", id="harvest-unit")
        )
    true_scale = max((abs(v) for runs in sims.values() for s in runs for v in s.true), default=0.0)
    body = template(
        "explain/unit.html",
        moves=join(moves, " · "),
        n=at + 1,
        total=len(data.units),
        explanations=[
            (m, explanation_cell(data.explanation(key, m), raw=True)) for m in data.methods
        ],
        scorers=data.scorers,
        scores=[
            (m, *(score_cell(data.score(key, m, s)) for s in data.scorers)) for m in data.methods
        ],
        sections=[simulations_view(m, sims.get(m, []), true_scale) for m in data.methods],
    )
    return Document(f"{site} unit {unit}: explanations", body)

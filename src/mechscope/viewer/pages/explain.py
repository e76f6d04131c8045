"""Pages for explain runs (``mechscope.autointerp.explain_units``): explanations, scores, simulations.

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

Everything shown from a run is model output or corpus text and is escaped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import InputError, MechscopeError
from ..html import Markup, definition_list, join, link, render, table, url
from ..registry import Document, NotFound, Request, home, page
from ..runs import RunInfo
from ..tokens import token_spans, unit_url

if TYPE_CHECKING:
    from ..app import App

KINDS = ("explain",)
Unit = tuple[str, int]
WINDOW_KIND = {"top": "held-out top window", "random": "random window"}


# ---------------------------------------------------------------------------- data


def _read_records(folder: Path, name: str) -> list[dict[str, Any]]:
    """Rows of ``name.jsonl`` (a last line cut short is ignored), else of ``name.parquet``."""
    jsonl = folder / f"{name}.jsonl"
    try:
        if jsonl.exists():
            from ...autointerp.pipeline import read_jsonl

            return read_jsonl(jsonl)
        parquet = folder / f"{name}.parquet"
        if parquet.exists():
            import pyarrow.parquet as pq

            return pq.read_table(parquet).to_pylist()
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"cannot read {name} of {folder}: {err}") from err
    return []


def resolve_harvest(run_path: Path, raw: object) -> Path | None:
    """The harvest run folder named by an explain run's config (relative: to the cwd or the run)."""
    if not isinstance(raw, str) or not raw:
        return None
    path = Path(raw).expanduser()
    candidates = [path] if path.is_absolute() else [path, run_path.parent / path, run_path / path]
    for candidate in candidates:
        if (candidate / "run.json").is_file():
            return candidate.resolve()
    return None


@dataclass(frozen=True)
class ExplainRun:
    """An explain run's explanations and scores by unit (its simulations load apart: bigger)."""

    path: Path
    config: dict[str, Any]
    units: list[Unit]
    methods: list[str]
    scorers: list[str]
    summary: list[dict[str, Any]]
    explanations: dict[tuple[str, int, str], dict[str, Any]]
    scores: dict[tuple[str, int, str, str], dict[str, Any]]
    donors: dict[Unit, Unit]
    harvest: Path | None

    def explanation(self, unit: Unit, method: str) -> dict[str, Any] | None:
        """The record of `method`'s explanation; ``random`` is the donor unit's LLM one."""
        rec = self.explanations.get((*unit, method))
        if method == "random" and rec is not None and rec.get("donor_site") is not None:
            return {**rec, "donor": (rec["donor_site"], int(rec["donor_unit"]))}
        return rec

    def score(self, unit: Unit, method: str, scorer: str) -> dict[str, Any] | None:
        return self.scores.get((*unit, method, scorer))


def load_explain_run(run: RunInfo) -> ExplainRun:
    """Read an explain run folder's explanations, scores and summary."""
    config = run.config
    units = [(str(s), int(u)) for s, u in config.get("units", [])]
    explanations = {
        (r["site"], int(r["unit"]), r["method"]): r for r in _read_records(run.path, "explanations")
    }
    scores = {
        (r["site"], int(r["unit"]), r["method"], r["scorer"]): r
        for r in _read_records(run.path, "scores")
    }
    summary_file = run.path / "summary.json"
    try:
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else []
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read {summary_file}: {err}") from err
    donors = {
        (r["site"], int(r["unit"])): (r["donor_site"], int(r["donor_unit"]))
        for r in explanations.values()
        if r["method"] == "random" and r.get("donor_site") is not None
    }
    return ExplainRun(
        path=run.path,
        config=config,
        units=units,
        methods=list(config.get("methods", [])),
        scorers=list(config.get("scorers", [])),
        summary=summary if isinstance(summary, list) else [],
        explanations=explanations,
        scores=scores,
        donors=donors,
        harvest=resolve_harvest(run.path, config.get("harvest")),
    )


def explain_data(app: App, run: RunInfo) -> ExplainRun:
    """The explain run, read once per viewer."""
    return app.resource(("explain", run.path), lambda: load_explain_run(run))


def simulations_of(app: App, run: RunInfo) -> dict[Unit, dict[str, list[dict[str, Any]]]]:
    """The run's simulations by unit and method, read once per viewer."""

    def load() -> dict[Unit, dict[str, list[dict[str, Any]]]]:
        out: dict[Unit, dict[str, list[dict[str, Any]]]] = {}
        for r in _read_records(run.path, "simulations"):
            out.setdefault((r["site"], int(r["unit"])), {}).setdefault(r["method"], []).append(r)
        return out

    return app.resource(("explain-simulations", run.path), load)


def served_harvest(app: App, data: ExplainRun) -> RunInfo | None:
    """The harvest run this viewer serves that the explain run explains, if any."""
    if data.harvest is None:
        return None
    return next(
        (r for r in app.runs.values() if r.kind == "harvest" and r.path.resolve() == data.harvest),
        None,
    )


def explained_url(run: RunInfo, site: str, unit: int) -> str:
    return url("run", run.id, "explained", site, unit)


# ---------------------------------------------------------------------------- pieces


def num(x: object, digits: int = 3) -> str:
    if not isinstance(x, int | float) or isinstance(x, bool) or math.isnan(x):
        return "—"
    return f"{x:.{digits}f}"


def score_cell(rec: dict[str, Any] | None) -> Markup:
    """A score, with its note (e.g. no explanation) or count of failed answers in grey."""
    if rec is None:
        return Markup('<span class="muted">—</span>')
    extra = rec.get("note") or (f"{rec['failed']} failed" if rec.get("failed") else "")
    return render(
        "{score}{extra}",
        score=num(rec.get("score")),
        extra=render(' <span class="muted">({e})</span>', e=extra) if extra else "",
    )


def explanation_cell(rec: dict[str, Any] | None, raw: bool = False) -> Markup:
    """An explanation's text, or "failed: <error>" (with the raw answer when `raw`)."""
    if rec is None:
        return Markup('<span class="muted">none</span>')
    donor = (
        render(
            ' <span class="muted">(the LLM explanation of {s}:{u})</span>',
            s=rec["donor"][0],
            u=rec["donor"][1],
        )
        if "donor" in rec
        else Markup("")
    )
    if rec.get("failed"):
        answer = (
            render('<pre class="raw">{r}</pre>', r=rec.get("raw") or "(empty answer)")
            if raw
            else Markup("")
        )
        return render(
            '<span class="error">failed: {e}</span>{donor}{answer}',
            e=rec.get("error"),
            donor=donor,
            answer=answer,
        )
    return render('<span class="explanation">{t}</span>{donor}', t=rec.get("text", ""), donor=donor)


def summary_table(data: ExplainRun) -> Markup:
    rows = [
        (
            r.get("method"),
            r.get("scorer"),
            num(r.get("mean")),
            f"[{num(r.get('lo'))}, {num(r.get('hi'))}]",
            r.get("n", 0),
        )
        for r in data.summary
    ]
    return table(("method", "scorer", "mean", "95% CI", "units"), rows, cls="grid summary")


def scores_table(data: ExplainRun, unit: Unit) -> Markup:
    rows = [(m, *(score_cell(data.score(unit, m, s)) for s in data.scorers)) for m in data.methods]
    return table(("method", *data.scorers), rows, cls="grid scores")


def _pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    n = len(xs)
    if n < 2:
        return math.nan
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def window_pair(sim: dict[str, Any], true_scale: float, sim_scale: float) -> Markup:
    """One held-out window twice: actual activations, and below them the simulated ones."""
    tokens, true, simulated = sim["tokens"], sim["true"], sim.get("simulated")
    peak = max(range(len(true)), key=lambda i: true[i]) if true else -1
    actual = token_spans(tokens, true, true_scale, peak, label="actual")
    if simulated is None:
        sim_row = render(
            '<div class="sim-failed"><span class="error">simulation failed: {e}</span>'
            '<pre class="raw">{raw}</pre></div>',
            e=sim.get("error") or "unknown error",
            raw=sim.get("raw") or "(empty answer)",
        )
        r = "—"
    else:
        sim_row = render(
            '<div class="tokens simulated">{spans}</div>',
            spans=token_spans(tokens, simulated, sim_scale, label="simulated"),
        )
        r = num(_pearson(simulated, true), 2)
    return render(
        '<div class="example sim-window {kind}" data-window="{window}">'
        '<div class="meta">window {window} · {what} · max actual {peak} · r {r}</div>'
        '<div class="sim-rows"><span class="row-label">actual</span>'
        '<div class="tokens actual">{actual}</div>'
        '<span class="row-label">simulated</span>{sim_row}</div></div>',
        kind=sim.get("kind", ""),
        window=sim.get("window", "?"),
        what=WINDOW_KIND.get(sim.get("kind", ""), sim.get("kind", "")),
        peak=f"{max(true, default=0):.4g}",
        r=r,
        actual=actual,
        sim_row=sim_row,
    )


def simulations_html(sims: Sequence[dict[str, Any]], true_scale: float) -> Markup:
    """A method's held-out windows, simulated on 0…(its largest simulated value)."""
    if not sims:
        return Markup('<p class="muted">Not simulated (no explanation).</p>')
    sim_scale = max((v for s in sims for v in s.get("simulated") or ()), default=0.0)
    failed = sum(s.get("simulated") is None for s in sims)
    note = render(
        '<p class="muted">Actual shaded relative to {t}, simulated relative to {s}{f}.</p>',
        t=f"{true_scale:.4g}",
        s=f"{sim_scale:.4g}",
        f=f"; {failed} of {len(sims)} simulations failed" if failed else "",
    )
    pairs = join(window_pair(s, true_scale, sim_scale) for s in sims)
    return render("{note}{pairs}", note=note, pairs=pairs)


def unit_explanations(req: Request, site: str, unit: int) -> Markup:
    """The "Explanations" section of a harvest neuron page: served explain runs of this unit."""
    app = req.app
    runs = sorted((r for r in app.runs.values() if r.kind == "explain"), key=lambda r: r.id)
    if not runs:
        return Markup("")

    def index() -> dict[Path, list[str]]:  # harvest folder → ids of the explain runs of it
        out: dict[Path, list[str]] = {}
        for r in runs:
            harvest = resolve_harvest(r.path, r.config.get("harvest"))
            if harvest is not None:
                out.setdefault(harvest, []).append(r.id)
        return out

    key = ("explain-runs-by-harvest", tuple(r.path for r in runs))
    ids = app.resource(key, index).get(req.the_run.path.resolve(), [])
    rows = []
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
        rows.append(
            (
                link(explained_url(run, site, unit), run.id),
                explanation_cell(data.explanation((site, unit), "llm")),
                scores,
            )
        )
    if not rows:
        return Markup("")
    return render(
        '<section id="explanations"><h2>Explanations</h2>{table}</section>',
        table=table(("explain run", "LLM explanation", "scores"), rows, cls="grid explanations"),
    )


# ---------------------------------------------------------------------------- pages


@home(*KINDS)
def explain_home(req: Request) -> Document:
    """What explained and judged, the summary of scores, and every unit's LLM explanation."""
    run = req.the_run
    data = explain_data(req.app, run)
    config = data.config
    harvest_run = served_harvest(req.app, data)
    raw_harvest = config.get("harvest", "—")
    model = config.get("model")
    facts = definition_list(
        {
            "model": model.get("name", "—") if isinstance(model, dict) else (model or "—"),
            "harvest": link(url("run", harvest_run.id), harvest_run.id)
            if harvest_run
            else raw_harvest,
            "explainer": config.get("explainer", "—"),
            "simulator": config.get("simulator", "—"),
            "judge": config.get("judge", "—"),
            "units": len(data.units),
            "windows shown / held out": f"{config.get('n_show', '—')} / {config.get('n_test', '—')}",
            "failed LLM explanations": run.record.get("failed_explanations", "—"),
            "seed": config.get("seed", "—"),
            "finished": run.finished or "—",
        }
    )
    rows = [
        (
            site,
            link(explained_url(run, site, unit), unit),
            explanation_cell(data.explanation((site, unit), "llm")),
            *(score_cell(data.score((site, unit), "llm", s)) for s in data.scorers),
        )
        for site, unit in data.units
    ]
    body = render(
        "{facts}<h2>Summary</h2>{summary}<h2>Units</h2>{units}",
        facts=facts,
        summary=summary_table(data),
        units=table(("site", "unit", "LLM explanation", *data.scorers), rows, cls="grid units"),
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
    explanations = table(
        ("method", "explanation"),
        [(m, explanation_cell(data.explanation(key, m), raw=True)) for m in data.methods],
        cls="grid explanations",
    )
    true_scale = max(
        (abs(v) for runs in sims.values() for s in runs for v in s.get("true") or ()), default=0.0
    )
    sections = []
    for method in data.methods:
        inner = simulations_html(sims.get(method, []), true_scale)
        if method == "llm":
            sections.append(
                render(
                    '<section class="sim" id="sim-llm"><h2>Simulated vs actual: llm</h2>'
                    "{inner}</section>",
                    inner=inner,
                )
            )
        else:
            sections.append(
                render(
                    '<details class="sim" id="sim-{m}"><summary>Simulated vs actual: {m} '
                    "(baseline)</summary>{inner}</details>",
                    m=method,
                    inner=inner,
                )
            )
    body = render(
        '<nav class="moves">{moves}<span class="keys">unit {n} of {total} · '
        "keys: j/→ next · k/← previous</span></nav>"
        "<h2>Explanations</h2>{explanations}<h2>Scores</h2>{scores}{sections}",
        moves=join(moves, " · "),
        n=at + 1,
        total=len(data.units),
        explanations=explanations,
        scores=scores_table(data, key),
        sections=join(sections),
    )
    return Document(f"{site} unit {unit}: explanations", body)

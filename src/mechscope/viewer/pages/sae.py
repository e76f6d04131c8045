"""Pages for SAE runs (``mechscope.sae.sae_run``): the SAE, its metrics, training and latents.

An SAE run's home shows what was trained (model, site, kind, width, k) and
for how long, the held-out metrics of ``eval.safetensors`` (the `SAEEval`;
else the copy of its metrics in ``run.json``) with a line on what each
means, the training curves and the latent-density figure; when the run holds
a harvest of its latents (``harvest/``, written with ``harvest_tokens``), the
top latents by max activation with their firing frequency, each linking to
its page in that harvest (the harvest run's neuron pages). Nav pages: the
training history (the `TrainingHistory`, ``history.safetensors``) and
hyper-parameters, and every latent. The HTML is in ``templates/sae/``.

Run discovery serves the nested harvest as the sub-run ``<sae run>-harvest``;
`latent_harvest` finds it. Every value read from the run's files is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..._arrays import as_numpy
from ...errors import InputError, MechscopeError
from ...sae.results import (
    DENSE_FREQUENCY,
    EVAL_FILE,
    HISTORY_FILE,
    SAEEval,
    TrainingHistory,
    read_sae_config,
)
from ..html import link, render, template, url
from ..registry import Document, NotFound, Request, Response, home, page, redirect
from ..runs import RunInfo
from . import harvest as harvest_pages
from .common import figure_html

if TYPE_CHECKING:
    from ..app import App

KINDS = ("sae",)
TOP_ON_HOME = 50
LATENT_SORTS = ("max", "frequency", "latent")

# (key of SAEEval.metrics, label, what it means)
METRICS: tuple[tuple[str, str, str], ...] = (
    ("l0", "L0", "active latents per token (a TopK SAE: exactly k)"),
    (
        "explained_variance",
        "explained variance",
        "1 − FVU: the share of the activations' variance that the reconstruction x̂ explains",
    ),
    (
        "fvu",
        "FVU",
        "fraction of variance unexplained, Σ‖x − x̂‖² / Σ‖x − x̄‖² (0 is perfect)",
    ),
    ("mse", "MSE", "squared reconstruction error per token, Σ‖x − x̂‖² / tokens"),
    (
        "cosine",
        "cosine",
        "mean cos(x, x̂) per token: unlike FVU, not dominated by a few huge-norm tokens",
    ),
    ("ce_clean", "CE loss, clean", "next-token cross-entropy (nats) of the unmodified model"),
    ("ce_sae", "CE loss with SAE", "the same with x̂ spliced into the forward in place of x"),
    ("ce_zero", "CE loss, zero-ablated", "the same with the site set to zero"),
    (
        "ce_recovered",
        "CE loss recovered",
        "(CE zero − CE SAE) / (CE zero − CE clean): 1 = the model loses nothing, "
        "0 = as bad as deleting the site",
    ),
    (
        "kl_sae",
        "KL divergence",
        "mean KL(clean ‖ with SAE) of the next-token distributions (nats)",
    ),
    ("dead_fraction", "dead latents", "share of latents that never fired on the held-out tokens"),
    (
        "dense_fraction",
        "dense latents",
        f"share of latents that fire on more than {DENSE_FREQUENCY:.0%} of tokens",
    ),
)
TRAINING_FIGURES = (
    ("fvu", "FVU (held-out)"),
    ("l0", "L0 (held-out)"),
    ("dead", "dead latents"),
)


# ---------------------------------------------------------------------------- data


def _number(x: object) -> float | None:
    """`x` as a float, or None if it is not a number (nor a bool)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x)


def metric_text(x: object) -> str:
    """A value as shown: 4 significant digits, "—" when missing, NaN or not a number."""
    value = _number(x)
    return "—" if value is None or math.isnan(value) else f"{value:.4g}"


def sae_eval(app: App, run: RunInfo) -> SAEEval | None:
    """The run's `SAEEval` (``eval.safetensors``), None if it has none."""
    return app.result(run, EVAL_FILE, SAEEval)


def sae_metrics(app: App, run: RunInfo) -> dict[str, Any]:
    """The held-out metrics: ``eval.safetensors``, else the copy in ``run.json``; a 404 if neither."""
    ev = sae_eval(app, run)
    metrics = ev.metrics() if ev is not None else run.record.get("eval")
    if not isinstance(metrics, dict):
        raise NotFound(
            f"SAE run {run.id} has no {EVAL_FILE}: it was not evaluated, or did not finish",
            render("<p>{a}</p>", a=link(url("run", run.id, "record"), "its record and files")),
        )
    return metrics


def sae_shape(run: RunInfo) -> dict[str, Any]:
    """kind, d_in, width, k: from the run's saved SAE, else from the training config."""
    try:
        shape = read_sae_config(run.path / "sae")
    except InputError as e:
        raise InputError(f"SAE run {run.id}: {str(e).replace(str(run.path) + '/', '')}") from None
    train = run.config.get("train")
    return shape if shape is not None else (train if isinstance(train, dict) else {})


def training_history(app: App, run: RunInfo) -> list[dict[str, Any]]:
    """The rows of the run's `TrainingHistory` (one per evaluation during training), [] if none."""
    history = app.result(run, HISTORY_FILE, TrainingHistory)
    return [] if history is None else history.rows


def latent_frequencies(app: App, run: RunInfo) -> list[float] | None:
    """Each latent's firing frequency on the held-out tokens, None if not saved."""
    ev = sae_eval(app, run)
    return None if ev is None else [float(f) for f in as_numpy(ev.frequencies).reshape(-1)]


def latent_harvest(app: App, run: RunInfo) -> RunInfo | None:
    """The harvest of the SAE's latents (``harvest/`` in the run folder), as served."""
    folder = run.path / "harvest"
    if not (folder / "run.json").is_file():
        return None
    folder = folder.resolve()
    return next((r for r in app.runs.values() if r.path.resolve() == folder), None)


def latent_site(run: RunInfo) -> str:
    """The harvest site of the SAE's latents."""
    return f"{run.config.get('site', '')}.sae.latents"


def harvest_stats(app: App, harvest: RunInfo, site: str) -> list[Any]:
    """Every latent's statistics in the harvest (UnitStats), largest max activation first."""
    key = ("harvest", harvest.path)
    with app.lock(key):
        try:
            store = app.resource(key, lambda: harvest_pages.open_store(harvest.path))
            if site not in store.sites:
                raise InputError(
                    f"the harvest holds {', '.join(store.sites) or 'no sites'}, not {site!r}"
                )
            return list(store.top_units(site, by="max", limit=store.n_units(site)))
        except MechscopeError:
            raise
        except Exception as err:  # a damaged harvest: say so, keep the SAE's page
            raise InputError(f"cannot open the latent harvest {harvest.id}: {err}") from err


# ---------------------------------------------------------------------------- pieces


def metric_rows(metrics: dict[str, Any], freqs: Sequence[float] | None = None) -> list[dict]:
    """The held-out metrics, one row each with its value (exact in ``data-value``) and meaning."""
    notes: dict[str, str] = {}
    if freqs:
        dead = sum(f == 0 for f in freqs)
        dense = sum(f > DENSE_FREQUENCY for f in freqs)
        notes = {
            "dead_fraction": f" ({dead} of {len(freqs)})",
            "dense_fraction": f" ({dense} of {len(freqs)})",
        }
    return [
        {"key": key, "label": label, "exact": metrics.get(key, ""),
         "value": metric_text(metrics.get(key)), "doc": doc + notes.get(key, "")}
        for key, label, doc in METRICS
    ]  # fmt: skip


def _frequency(freqs: Sequence[float] | None, unit: int) -> str:
    if freqs is None or not 0 <= unit < len(freqs):
        return "—"
    return f"{freqs[unit]:.3%}"


def latent_rows(
    harvest: RunInfo | None, site: str, stats: Sequence[Any], freqs: Sequence[float] | None
) -> list[tuple[object, ...]]:
    """Latents with max and mean activation in the harvest and held-out firing frequency."""
    return [
        (
            link(harvest_pages.unit_url(harvest, site, s.unit), f"latent {s.unit}")
            if harvest is not None
            else f"latent {s.unit}",
            metric_text(s.max),
            metric_text(s.mean),
            _frequency(freqs, s.unit),
        )
        for s in stats
    ]


def _facts(
    run: RunInfo, metrics: dict[str, Any], history: list[dict[str, Any]]
) -> dict[str, object]:
    config = run.config
    shape = sae_shape(run)
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    kind = shape.get("kind", "—")
    sae = f"{kind}, d_in {shape.get('d_in', '—')} → width {shape.get('width', '—')}"
    if kind == "topk":
        sae += f", k {shape.get('k', '—')}"
    tokens = _number(train.get("tokens"))
    seconds = _number(run.record.get("train_seconds"))
    timings = run.record.get("timings")
    if seconds is None and isinstance(timings, dict):
        seconds = _number(timings.get("train"))
    speed = next(
        (_number(r["tokens_per_s"]) for r in reversed(history) if "tokens_per_s" in r), None
    )
    if speed is None and tokens and seconds:
        speed = tokens / seconds
    corpus = config.get("corpus")
    site_doc = config.get("site_doc")
    return {
        "model": run.model or "—",
        "site": render(
            "<code>{s}</code>{doc}",
            s=config.get("site", "—"),
            doc=render(' <span class="muted">({d})</span>', d=site_doc) if site_doc else "",
        ),
        "SAE": sae,
        "corpus": corpus.get("spec", "—") if isinstance(corpus, dict) else (corpus or "—"),
        "training tokens": (
            f"{tokens:,.0f} in {train.get('steps', '—')} steps of {train.get('batch_size', '—')}"
            if tokens is not None
            else "—"
        ),
        "training time": f"{seconds:.1f} s" if seconds is not None else "—",
        "tokens / s": f"{speed:,.0f}" if speed is not None else "—",
        "held-out tokens": metrics.get("tokens", "—"),
        "finished": run.finished or "—",
    }


# ---------------------------------------------------------------------------- pages


@home(*KINDS)
def sae_home(req: Request) -> Document:
    """The SAE, its metrics, training curves, latent density and top latents."""
    run = req.the_run
    metrics = sae_metrics(req.app, run)
    history = training_history(req.app, run)
    freqs = latent_frequencies(req.app, run)
    harvest = latent_harvest(req.app, run)
    site = latent_site(run)
    latents: dict[str, Any] | None = None
    if harvest is not None:
        latents = {"n": TOP_ON_HOME, "error": None, "rows": []}
        try:
            top = harvest_stats(req.app, harvest, site)[:TOP_ON_HOME]
            latents["rows"] = latent_rows(harvest, site, top, freqs)
        except InputError as err:
            latents["error"] = str(err)
        latents["links"] = {
            "home": link(url("run", harvest.id), harvest.id, id="harvest-home"),
            "search": link(url("run", harvest.id, "search"), "search by token"),
            "units": link(url("run", run.id, "latents"), "all latents"),
        }
    body = template(
        "sae/home.html",
        facts=_facts(run, metrics, history),
        metrics=metric_rows(metrics, freqs),
        figures=[figure_html(run, stem, caption) for stem, caption in TRAINING_FIGURES],
        density=figure_html(run, "latent_density", "latent firing frequency (held-out)"),
        latents=latents,
    )
    return Document(f"SAE {run.id}", body)


class _NoStats:
    """A latent without harvest statistics (the run has no harvest)."""

    max = mean = float("nan")

    def __init__(self, unit: int) -> None:
        self.unit = unit


@page("/run/{run}/latents", kinds=KINDS, title="Latents", nav="latents")
def latents_page(req: Request) -> Document:
    """Every latent, sorted by max activation in the harvest, firing frequency or number."""
    run = req.the_run
    freqs = latent_frequencies(req.app, run)
    harvest = latent_harvest(req.app, run)
    site = latent_site(run)
    by = req.arg("by", "max" if harvest is not None else "frequency")
    if by not in LATENT_SORTS:
        raise InputError(f"cannot sort latents by {by!r}; valid: {', '.join(LATENT_SORTS)}")
    if by == "max" and harvest is None:
        raise InputError("this SAE run has no harvest of its latents; sort by frequency or latent")
    stats: list[Any]
    if harvest is not None:
        stats = harvest_stats(req.app, harvest, site)
    else:
        width = len(freqs) if freqs is not None else _number(sae_shape(run).get("width")) or 0
        stats = [_NoStats(u) for u in range(int(width))]
    if by == "frequency":
        stats.sort(key=lambda s: -(freqs[s.unit] if freqs and s.unit < len(freqs) else -1.0))
    elif by == "latent":
        stats.sort(key=lambda s: s.unit)
    choices = [
        link(url("run", run.id, "latents", by=b), b, cls="current" if b == by else None)
        for b in LATENT_SORTS
        if b != "max" or harvest is not None
    ]
    counts = ""
    if freqs is not None:
        dead = sum(f == 0 for f in freqs)
        dense = sum(f > DENSE_FREQUENCY for f in freqs)
        counts = f"{len(freqs)} latents: {dead} dead, {dense} dense. "
    body = template(
        "sae/latents.html",
        counts=counts,
        choices=choices,
        rows=latent_rows(harvest, site, stats, freqs),
    )
    return Document(f"Latents of {run.id} by {by}", body)


@page("/run/{run}/latent/{unit:int}", kinds=KINDS, title="Latent")
def latent_redirect(req: Request) -> Response:
    """A stable address for a latent: its page in the run's harvest."""
    run = req.the_run
    harvest = latent_harvest(req.app, run)
    if harvest is None:
        raise NotFound(f"SAE run {run.id} has no harvest of its latents, so no latent pages")
    return redirect(harvest_pages.unit_url(harvest, latent_site(run), req.params["unit"]))


def _cell(x: object) -> str:
    """A history value as shown: whole numbers without decimals, else 4 significant digits."""
    value = _number(x)
    if value is None:
        return "" if x is None else str(x)
    return f"{value:.0f}" if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"


@page("/run/{run}/training", kinds=KINDS, title="Training", nav="training")
def training_page(req: Request) -> Document:
    """The training hyper-parameters and history, with the training curves."""
    run = req.the_run
    history = training_history(req.app, run)
    train = run.config.get("train")
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    body = template(
        "sae/training.html",
        params={str(k): v for k, v in train.items()} if isinstance(train, dict) else None,
        figures=[figure_html(run, stem, caption) for stem, caption in TRAINING_FIGURES],
        columns=columns,
        rows=[[_cell(r.get(c)) for c in columns] for r in history],
        history_file=HISTORY_FILE,
    )
    return Document(f"Training of {run.id}", body)

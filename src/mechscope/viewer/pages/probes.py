"""Pages for probe runs (``mechscope.probes.runs.probe_run``): held-out accuracy per layer.

A ``probe`` run's home shows the run's summary, the accuracy figure
(interactive), a table of each method's held-out accuracy per layer with its
95% interval (best layer of each method marked) and the zero-shot baselines,
links to the saved directions (``directions/{method}_L{layer}.safetensors``)
and a sample of the contrast pairs (``pairs.safetensors``). The results are
opened as a `ProbeResults` and a `ProbePairs` with numpy arrays
(`App.result`: the viewer never imports torch); the page is
``templates/probes/home.html``, where every value is escaped, and a damaged
file gives an error page naming it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ...probes.results import ProbePairs, ProbeResults
from ..html import template
from ..registry import Document, Request, home
from ..runs import RunInfo
from .common import count, download, figure_html, missing_file, summary_html, tensor_links

if TYPE_CHECKING:
    from ..app import App

PROBE_KINDS = ("probe",)
# how the page names each method of `probes.results.METHODS`
METHODS = {"ccs": "CCS", "logistic": "logistic", "mean_diff": "mean diff"}
PAIRS_SHOWN = 5  # of each split


# ---------------------------------------------------------------------------- data


def read_probes(app: App, run: RunInfo) -> ProbeResults:
    """``probes.safetensors``; a 404 if it is missing.

    Example: ``read_probes(req.app, req.the_run).best("logistic")`` → (layer, accuracy).
    """
    probes = app.result(run, "probes.safetensors", ProbeResults)
    if probes is None:
        raise missing_file(run, "probes.safetensors")
    return probes


def best_index(probes: ProbeResults, method: str) -> int:
    """The index in ``probes.layers`` of the layer where `method` is most accurate.

    Example: ``best_index(probes, "ccs")`` → ``0`` when CCS is best at the first layer swept.
    """
    return probes.layers.index(probes.best(method)[0])


# ---------------------------------------------------------------------------- pieces


def accuracy_rows(probes: ProbeResults) -> list[dict[str, object]]:
    """One row per layer for the accuracy table: each method's cell, the CCS loss.

    Example: ``accuracy_rows(probes)[0]["cells"][0]["acc"]`` → ``"0.877 [0.841, 0.906]"``.
    """
    best = {m: best_index(probes, m) for m in probes.accuracy}
    rows = []
    for i, layer in enumerate(probes.layers):
        cells = []
        for m, accs in probes.accuracy.items():
            acc, is_best = accs[i], best[m] == i
            cells.append(
                {
                    "cls": "best" if is_best else "",
                    "method": m,
                    "value": repr(acc.value),
                    "tip": f"{METHODS.get(m, m)}, layer {layer}: {acc.interval()} on {acc.n} "
                    "held-out pairs" + (" (best layer)" if is_best else ""),
                    "acc": acc.interval(),
                    "star": " ★" if is_best else "",
                }
            )
        loss = f"{probes.ccs_loss[i]:.4g}" if probes.ccs_loss else None
        rows.append({"layer": layer, "cells": cells, "loss": loss})
    return rows


def baseline_rows(probes: ProbeResults) -> list[dict[str, object]]:
    """The zero-shot rows under the accuracy table (calibrated too, when the run has it).

    Example: ``baseline_rows(probes)[0]["label"]`` → ``"zero-shot"``.
    """
    found = [("zero_shot", "zero-shot", probes.zero_shot)]
    if probes.zero_shot_calibrated is not None:
        found.append(("zero_shot_calibrated", "zero-shot, calibrated", probes.zero_shot_calibrated))
    return [
        {"key": key, "label": label, "value": repr(acc.value), "acc": acc.interval()}
        for key, label, acc in found
    ]


def direction_rows(run: RunInfo) -> list[tuple[str, int, object]]:
    """(method, layer, download link) of each saved direction (``LinearDirection.load``).

    Example: ``direction_rows(run)`` → ``[("logistic", 16, <a download …>), …]``.
    """
    found = tensor_links(run, "directions", re.compile(r"(?P<method>.+)_L(?P<layer>\d+)"))
    return [
        (METHODS.get(m["method"], m["method"]), int(m["layer"]), download(run, rel))
        for m, rel in found
    ]


def pairs_sample(app: App, run: RunInfo, n_train: int) -> dict[str, object] | None:
    """The first few training and held-out pairs (statement and label), None without pairs.

    Example: ``pairs_sample(req.app, run, 16)["rows"][0]`` → ``(0, "train", "…", "true")``.
    """
    found = app.result(run, "pairs.safetensors", ProbePairs)
    if found is None:
        return None
    pairs = found.pairs
    shown = [
        *range(min(PAIRS_SHOWN, n_train)),
        *range(n_train, min(n_train + PAIRS_SHOWN, len(pairs))),
    ]
    rows = [
        (
            i,
            "train" if i < n_train else "held out",
            pairs[i].statement,
            "true" if pairs[i].label else "false",
        )
        for i in shown
    ]
    return {"rows": rows, "n": len(pairs), "file": download(run, "pairs.safetensors")}


# ---------------------------------------------------------------------------- page


@home(*PROBE_KINDS)
def probe_home(req: Request) -> Document:
    """Held-out accuracy per layer of each probe, the baselines, directions and pairs.

    Example: ``GET /run/probe-sentiment`` → the page of that probe run.
    """
    run = req.the_run
    probes = read_probes(req.app, run)
    best = {m: best_index(probes, m) for m in probes.accuracy}
    facts = {
        "model": run.model or "—",
        "dataset": run.config.get("dataset") or "—",
        "pairs": f"{count(probes.n_train, 'pair')} to fit, {count(probes.n_test, 'pair')} held out",
        **{
            f"best {METHODS.get(m, m)}": (
                f"{probes.accuracy[m][i].interval()} at layer {probes.layers[i]}"
            )
            for m, i in best.items()
        },
        "zero-shot": probes.zero_shot.interval(),
        "zero-shot, calibrated": (
            probes.zero_shot_calibrated.interval() if probes.zero_shot_calibrated else "—"
        ),
        "finished": run.finished or "—",
    }
    body = template(
        "probes/home.html",
        facts=facts,
        summary=summary_html(run),
        figure=figure_html(run, "accuracy", "held-out accuracy per layer", interactive=True),
        methods=[METHODS.get(m, m) for m in probes.accuracy],
        ccs_loss=bool(probes.ccs_loss),
        width=len(probes.accuracy) + (1 if probes.ccs_loss else 0),
        rows=accuracy_rows(probes),
        baselines=baseline_rows(probes),
        calibrated=probes.zero_shot_calibrated is not None,
        directions=direction_rows(run),
        pairs=pairs_sample(req.app, run, probes.n_train),
    )
    return Document(f"Probes {run.id}", body)

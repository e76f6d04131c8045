"""Pages for steering runs (``mechscope.steering.runs.steer_run``): examples, sweep and costs.

A ``steer`` run's home leads with greedy continuations of the prompts
unsteered and steered at the best cell, side by side
(``examples.safetensors``), then the best cell, the summary, the layer ×
coefficient table of ``sweep.safetensors`` (effect, perplexity rise, KL;
cells over the sweep's own perplexity bound, `SteeringSweep.max_rise`,
marked, the best cell highlighted), the figures, the sampled generations
kept per cell (collapsed) and links to the vectors
(``vectors/L{layer}.safetensors``). Results are opened with numpy arrays
(`App.result`: the viewer never imports torch); the page is
``templates/steering/home.html``, where every value is escaped, and a
damaged file gives an error page naming it.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from ...errors import InputError
from ...steering.results import SteeringExamples, SteeringSweep, cell_key
from ..html import Markup, render, template
from ..registry import Document, Request, home
from ..runs import RunInfo
from ..tokens import show_token
from .common import download, figure_html, missing_file, num, summary_html, tensor_links

if TYPE_CHECKING:
    from ..app import App

STEER_KINDS = ("steer",)


def read_sweep(app: App, run: RunInfo) -> SteeringSweep:
    """``sweep.safetensors``; a 404 if it is missing.

    Example: ``read_sweep(req.app, req.the_run).best()`` → (layer, coef, P(target), rise).
    """
    sweep = app.result(run, "sweep.safetensors", SteeringSweep)
    if sweep is None:
        raise missing_file(run, "sweep.safetensors")
    return sweep


def best_cell(run: RunInfo, sweep: SteeringSweep) -> tuple[int, int] | None:
    """(layer index, coef index) of run.json's ``best``, None if there is none.

    Example: ``best_cell(run, sweep)`` → ``(1, 2)`` for the second layer's third coefficient.
    """
    best = run.record.get("best")
    if not isinstance(best, dict):
        return None
    try:
        i = sweep.layers.index(int(best["layer"]))
        j = next(j for j, c in enumerate(sweep.coefs) if math.isclose(c, float(best["coef"])))
    except (KeyError, TypeError, ValueError, StopIteration) as err:
        raise InputError(f"run.json of steer run {run.id}: best {best!r} is not a cell") from err
    return i, j


# ---------------------------------------------------------------------------- pieces


def text_html(text: str) -> Markup:
    """A generation as token text (newlines and tabs made visible).

    Example: ``text_html("a\\nb")`` → ``<div class="tokens">a<span class="ws">↵</span>b</div>``.
    """
    return render('<div class="tokens">{t}</div>', t=show_token(text))


def example_rows(examples: SteeringExamples) -> list[tuple[str, Markup, Markup]]:
    """(prompt, unsteered, steered) per prompt, the continuations as token text.

    Example: ``example_rows(examples)[0][0]`` → the first prompt.
    """
    return [(p, text_html(a), text_html(b)) for p, a, b in examples.rows]


def no_examples_reason(run: RunInfo, bound: float) -> str:
    """Why a steer run has no examples.

    Example: ``no_examples_reason(run, 0.1)`` → ``"no cell kept the perplexity rise within 10%"``.
    """
    if run.record.get("best") is None:
        return f"no cell kept the perplexity rise within {bound:.0%}"
    return "the run did not write examples.safetensors"


def sweep_rows(sweep: SteeringSweep, best: tuple[int, int] | None) -> list[dict[str, object]]:
    """One row per layer of the sweep table: each coefficient's cell, as shown and as data.

    Example: ``sweep_rows(sweep, (0, 1))[0]["cells"][1]["cls"]`` → ``"best"``.
    """
    bound = sweep.max_rise
    rises, factors = sweep.perplexity_rise, sweep.factor()
    rows = []
    for i, layer in enumerate(sweep.layers):
        cells = []
        for j, coef in enumerate(sweep.coefs):
            rise, factor = float(rises[i, j]), float(factors[i, j])
            effect, kl = float(sweep.effect[i, j]), float(sweep.kl[i, j])
            over, is_best = rise > bound, best == (i, j)
            cells.append(
                {
                    "cls": " ".join(c for c, on in (("over", over), ("best", is_best)) if on),
                    "coef": repr(coef),
                    "factor": repr(factor),
                    "effect": repr(effect),
                    "rise": repr(rise),
                    "kl": repr(kl),
                    "factor_text": num(factor, ".1f"),
                    "effect_text": num(effect, ".3f"),
                    "star": " ★ best" if is_best else "",
                    "rise_text": f"{rise:+.1%}",
                    "kl_text": num(kl, ".3g"),
                    "over": over,
                }
            )
        rows.append({"layer": layer, "cells": cells})
    return rows


def sample_cells(sweep: SteeringSweep) -> list[dict[str, object]]:
    """The generations kept per cell (unsteered first): key, label and texts.

    Example: ``sample_cells(sweep)[0]["label"]`` → ``"unsteered"``.
    """
    cells = [("unsteered", "unsteered")]
    cells += [
        (cell_key(layer, coef), f"layer {layer} × {coef:g}")
        for layer in sweep.layers
        for coef in sweep.coefs
    ]
    return [
        {"key": key, "label": label, "texts": [text_html(t) for t in sweep.samples[key]]}
        for key, label in cells
        if key in sweep.samples
    ]


def vector_rows(run: RunInfo) -> list[tuple[int, str, str, Markup]]:
    """(layer, method, how it was made, download link) of each saved vector.

    Example: ``vector_rows(run)[0]`` → ``(6, "actadd", "plus=…, minus=…", <a download …>)``.
    """
    pattern = re.compile(r"L(?P<layer>\d+)")
    found = [(int(m["layer"]), rel) for m, rel in tensor_links(run, "vectors", pattern)]
    made = {
        v.get("layer"): v for v in run.config.get("vectors") or [] if isinstance(v, dict)
    }  # how each vector was made, from config.json
    return [
        (
            layer,
            made.get(layer, {}).get("method", "—"),
            ", ".join(
                f"{k}={v}" for k, v in made.get(layer, {}).items() if k not in ("layer", "method")
            )
            or "—",
            download(run, rel),
        )
        for layer, rel in sorted(found)
    ]


def best_text(sweep: SteeringSweep, best: tuple[int, int] | None) -> str:
    """The best cell in words, or why there is none.

    Example: ``best_text(sweep, None)`` → ``"none: every cell raises perplexity more than 10%"``.
    """
    if best is None:
        return f"none: every cell raises perplexity more than {sweep.max_rise:.0%}"
    i, j = best
    return (
        f"layer {sweep.layers[i]} × {sweep.coefs[j]:g}: target words "
        f"×{num(float(sweep.factor()[i, j]), '.1f')} as likely next; {sweep.target} "
        f"{float(sweep.effect[i, j]):.3f} (unsteered {sweep.baseline_effect:.3f}); "
        f"perplexity {float(sweep.perplexity_rise[i, j]):+.1%}"
    )


# ---------------------------------------------------------------------------- page


@home(*STEER_KINDS)
def steer_home(req: Request) -> Document:
    """Examples steered at the best cell, the sweep with its costs, figures and samples.

    Example: ``GET /run/steer-weddings`` → the page of that steer run.
    """
    run = req.the_run
    sweep = read_sweep(req.app, run)
    examples = req.app.result(run, "examples.safetensors", SteeringExamples)
    best = best_cell(run, sweep)
    facts = {
        "model": run.model or "—",
        "vectors": f"{sweep.method or '—'}, layers {', '.join(map(str, sweep.layers))}",
        "target": sweep.target,
        "best cell": best_text(sweep, best),
        "generations per cell": sweep.n_generations,
        "finished": run.finished or "—",
    }
    body = template(
        "steering/home.html",
        facts=facts,
        examples=examples,
        example_rows=example_rows(examples) if examples is not None else [],
        no_examples=no_examples_reason(run, sweep.max_rise),
        summary=summary_html(run),
        sweep=sweep,
        bound=f"{sweep.max_rise:.0%}",
        rows=sweep_rows(sweep, best),
        words=", ".join(sweep.words) or "—",
        pbase=f"{sweep.baseline_probability:.3g}",
        base=f"{sweep.baseline_effect:.3f}",
        ppl=f"{sweep.baseline_perplexity:.4g}",
        figures=[
            figure_html(
                run,
                "sweep_probability",
                "target probability, steered / unsteered",
                interactive=True,
            ),
            figure_html(run, "sweep_effect", f"{sweep.target} per coefficient", interactive=True),
            figure_html(
                run, "sweep_perplexity", "perplexity rise per coefficient", interactive=True
            ),
        ],  # fmt: skip
        samples=sample_cells(sweep),
        vectors=vector_rows(run),
    )
    return Document(f"Steering {run.id}", body)

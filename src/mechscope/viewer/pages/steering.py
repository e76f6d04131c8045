"""Pages for steering runs (``mechscope.steering.runs.steer_run``): examples, sweep and costs.

A ``steer`` run's home leads with greedy continuations of the prompts
unsteered and steered at the best cell, side by side (``examples.json``),
then the best cell, the summary, the layer × coefficient table of
``sweep.safetensors`` (effect, perplexity rise, KL; cells over the sweep's
own perplexity bound, `SteeringSweep.max_rise`, marked, the best cell
highlighted), the figures, the sampled generations kept per cell
(collapsed) and links to the vectors (``vectors/L{layer}.safetensors``).
The sweep is opened with numpy arrays (`App.result`: the viewer never
imports torch); every value read from the run's files is escaped, and a
damaged file gives an error page naming it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...errors import InputError
from ...steering.results import SteeringSweep, cell_key
from ..html import Markup, definition_list, join, render, table
from ..registry import Document, Request, home
from ..runs import RunInfo
from ..tokens import show_token
from .common import (
    download,
    figure_html,
    missing_file,
    num,
    read_run_json,
    summary_html,
    tensor_links,
)

if TYPE_CHECKING:
    from ..app import App

STEER_KINDS = ("steer",)
SWEEP_STYLE = Markup(
    "<style>table.sweep td{vertical-align:top;white-space:nowrap}"
    "table.sweep td .effect{font-weight:600}table.sweep td .cost{color:var(--muted);font-size:13px}"
    "table.sweep td.over{background:#fde4e1}table.sweep td.over .flag{color:#b3261e;"
    "font-weight:600}table.sweep td.best{background:#dcefd9;outline:2px solid #2e7d32}"
    "table.examples td{vertical-align:top;min-width:14rem}"
    "details.samples{margin:.2rem 0}details.samples summary{cursor:pointer}"
    "details.samples ol{margin:.2rem 0 .6rem}</style>"
)


def read_sweep(app: App, run: RunInfo) -> SteeringSweep:
    """``sweep.safetensors``; a 404 if it is missing."""
    sweep = app.result(run, "sweep.safetensors", SteeringSweep)
    if sweep is None:
        raise missing_file(run, "sweep.safetensors")
    return sweep


@dataclass(frozen=True)
class Examples:
    """``examples.json``: greedy continuations unsteered and steered at one cell."""

    layer: int
    coef: float
    rows: list[tuple[str, str, str]]  # prompt, unsteered, steered


def read_examples(run: RunInfo) -> Examples | None:
    """``examples.json``, None if the run has none (no cell kept perplexity in bounds)."""
    data = read_run_json(run, "examples.json")
    if data is None:
        return None
    try:
        rows = [
            (str(e["prompt"]), str(e["unsteered"]), str(e["steered"])) for e in data["examples"]
        ]
        return Examples(int(data["layer"]), float(data["coef"]), rows)
    except (KeyError, TypeError, ValueError) as err:
        what = f"no {err}" if isinstance(err, KeyError) else str(err)
        raise InputError(
            f"examples.json of steer run {run.id} is not steering examples: {what}"
        ) from err


def best_cell(run: RunInfo, sweep: SteeringSweep) -> tuple[int, int] | None:
    """(layer index, coef index) of run.json's ``best``, None if there is none."""
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


def _text(text: str) -> Markup:
    return render('<div class="tokens">{t}</div>', t=show_token(text))


def examples_html(run: RunInfo, examples: Examples | None, bound: float) -> Markup:
    """The prompts' continuations unsteered and steered, side by side."""
    if examples is None:
        why = (
            f"no cell kept the perplexity rise within {bound:.0%}"
            if run.record.get("best") is None
            else "the run did not write examples.json"
        )
        return render('<p class="muted">No examples: {why}.</p>', why=why)
    rows = [(prompt, _text(plain), _text(steered)) for prompt, plain, steered in examples.rows]
    return render(
        "<p>Greedy continuations of each prompt, without steering and with {coef:g} × the "
        "layer {layer} vector added.</p>{t}",
        coef=examples.coef,
        layer=examples.layer,
        t=table(("prompt", "unsteered", "steered"), rows, cls="grid examples"),
    )


def sweep_table(sweep: SteeringSweep, best: tuple[int, int] | None) -> Markup:
    """Layers × coefficients: effect, perplexity rise and KL; cells over the sweep's bound and
    the best cell marked."""
    bound = sweep.max_rise
    rises, factors = sweep.perplexity_rise, sweep.factor()
    rows = []
    for i, layer in enumerate(sweep.layers):
        cells = []
        for j, coef in enumerate(sweep.coefs):
            rise, factor = float(rises[i, j]), float(factors[i, j])
            effect, kl = float(sweep.effect[i, j]), float(sweep.kl[i, j])
            over, is_best = rise > bound, best == (i, j)
            classes = " ".join(c for c, on in (("over", over), ("best", is_best)) if on)
            cells.append(
                render(
                    '<td class="{cls}" data-layer="{layer}" data-coef="{coef!r}" '
                    'data-factor="{factor!r}" data-effect="{effect!r}" data-rise="{rise!r}" '
                    'data-kl="{kl!r}"><span class="effect">×{factor_text}</span> · '
                    "{effect_text}{star}<br>"
                    '<span class="cost">perplexity {rise_text} · KL {kl_text}</span>{flag}</td>',
                    cls=classes,
                    layer=layer,
                    coef=coef,
                    factor=factor,
                    effect=effect,
                    rise=rise,
                    kl=kl,
                    factor_text=num(factor, ".1f"),
                    effect_text=num(effect, ".3f"),
                    star=" ★ best" if is_best else "",
                    rise_text=f"{rise:+.1%}",
                    kl_text=num(kl, ".3g"),
                    flag=render('<br><span class="flag">⚠ over {b:.0%}</span>', b=bound)
                    if over
                    else "",
                )
            )
        rows.append(
            render(
                '<tr data-layer="{layer}"><th scope="row">layer {layer}</th>{cells}</tr>',
                layer=layer,
                cells=join(cells),
            )
        )
    head = join(render("<th>× {c:g}</th>", c=c) for c in sweep.coefs)
    return render(
        '<table class="grid sweep" id="sweep"><thead><tr><th>layer \\ coefficient</th>{head}'
        "</tr></thead><tbody>{rows}</tbody></table>"
        '<p class="muted">Each cell: the next-token probability of the target words ({words}) '
        "over the unsteered model's ({pbase:.3g}), then {target} of sampled generations; "
        "below, the rise of corpus perplexity over the unsteered model and the KL of "
        "next-token distributions on neutral prompts (nats per token). Unsteered: {target} "
        "{base:.3f}, perplexity {ppl:.4g}. Cells whose perplexity rises more than {b:.0%} are "
        "marked ⚠; the best cell (largest target probability within that bound) ★.</p>",
        head=head,
        rows=join(rows),
        words=", ".join(sweep.words) or "—",
        pbase=sweep.baseline_probability,
        target=sweep.target,
        base=sweep.baseline_effect,
        ppl=sweep.baseline_perplexity,
        b=bound,
    )


def samples_html(sweep: SteeringSweep) -> Markup:
    """The generations kept per cell, each cell collapsed; unsteered first."""
    cells = [("unsteered", "unsteered")]
    cells += [
        (cell_key(layer, coef), f"layer {layer} × {coef:g}")
        for layer in sweep.layers
        for coef in sweep.coefs
    ]
    shown = [
        render(
            '<details class="samples" data-cell="{key}"><summary>{label} '
            "<span class=muted>({n})</span></summary><ol>{items}</ol></details>",
            key=key,
            label=label,
            n=len(sweep.samples[key]),
            items=join(render("<li>{t}</li>", t=_text(t)) for t in sweep.samples[key]),
        )
        for key, label in cells
        if key in sweep.samples
    ]
    if not shown:
        return Markup('<p class="muted">No generations kept in sweep.safetensors.</p>')
    return render(
        "<p>Sampled generations kept per cell ({n} sampled per cell, seeds shared across "
        "cells).</p>{shown}",
        n=sweep.n_generations,
        shown=join(shown),
    )


def vectors_list(run: RunInfo) -> Markup:
    """Links to download each layer's vector (``SteeringVector.load`` reopens them)."""
    pattern = re.compile(r"L(?P<layer>\d+)")
    found = [(int(m["layer"]), rel) for m, rel in tensor_links(run, "vectors", pattern)]
    if not found:
        return Markup('<p class="muted">No vectors saved in this run.</p>')
    made = {
        v.get("layer"): v for v in run.config.get("vectors") or [] if isinstance(v, dict)
    }  # how each vector was made, from config.json
    rows = [
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
    return table(("layer", "method", "made with", "file"), rows, cls="grid vectors")


# ---------------------------------------------------------------------------- page


@home(*STEER_KINDS)
def steer_home(req: Request) -> Document:
    """Examples steered at the best cell, the sweep with its costs, figures and samples."""
    run = req.the_run
    sweep = read_sweep(req.app, run)
    examples = read_examples(run)
    best = best_cell(run, sweep)
    bound = sweep.max_rise
    if best is None:
        best_text: object = f"none: every cell raises perplexity more than {bound:.0%}"
    else:
        i, j = best
        rise = float(sweep.perplexity_rise[i, j])
        best_text = render(
            "layer {layer} × {coef:g}: target words ×{factor} as likely next; {target} "
            "{effect:.3f} (unsteered {base:.3f}); perplexity {rise:+.1%}",
            layer=sweep.layers[i],
            coef=sweep.coefs[j],
            factor=num(float(sweep.factor()[i, j]), ".1f"),
            target=sweep.target,
            effect=float(sweep.effect[i, j]),
            base=sweep.baseline_effect,
            rise=rise,
        )
    facts = definition_list(
        {
            "model": run.model or "—",
            "vectors": f"{sweep.method or '—'}, layers {', '.join(map(str, sweep.layers))}",
            "target": sweep.target,
            "best cell": best_text,
            "generations per cell": sweep.n_generations,
            "finished": run.finished or "—",
        }
    )
    body = render(
        "{style}{facts}<h2>Steered examples</h2>{examples}{summary}<h2>Sweep</h2>{table}"
        '<div class="figure-row">{probability}{effect}{perplexity}</div>'
        "<h2>Sampled generations</h2>{samples}<h2>Vectors</h2>{vectors}",
        style=SWEEP_STYLE,
        facts=facts,
        examples=examples_html(run, examples, bound),
        summary=summary_html(run),
        table=sweep_table(sweep, best),
        probability=figure_html(
            run, "sweep_probability", "target probability, steered / unsteered", interactive=True
        ),
        effect=figure_html(
            run, "sweep_effect", f"{sweep.target} per coefficient", interactive=True
        ),
        perplexity=figure_html(
            run, "sweep_perplexity", "perplexity rise per coefficient", interactive=True
        ),
        samples=samples_html(sweep),
        vectors=vectors_list(run),
    )
    return Document(f"Steering {run.id}", body)

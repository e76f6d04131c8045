"""Pages for probe runs (``mechscope.probes.runs.probe_run``): held-out accuracy per layer.

A ``probe`` run's home shows the run's summary, the accuracy figure
(interactive), a table of each method's held-out accuracy per layer with its
95% interval (best layer of each method marked) and the zero-shot baselines,
links to the saved directions (``directions/{method}_L{layer}.safetensors``)
and a sample of the contrast pairs (``pairs.json``). ``probes.safetensors``
is opened as a `ProbeResults` with numpy arrays (`App.result`: the viewer
never imports torch); every value read from the run's files is escaped, and
a damaged file gives an error page naming it. The helpers for summaries,
figures, JSON files and saved tensors are shared with ``pages/steering.py``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ...errors import InputError
from ...probes.results import ProbeResults
from ..html import Markup, definition_list, join, link, render, table
from ..registry import Document, Request, home
from ..runs import RunInfo
from .common import (
    count,
    download,
    figure_html,
    file_url,
    missing_file,
    read_run_json,
    summary_html,
    tensor_links,
)

if TYPE_CHECKING:
    from ..app import App

PROBE_KINDS = ("probe",)
# how the page names each method of `probes.results.METHODS`
METHODS = {"ccs": "CCS", "logistic": "logistic", "mean_diff": "mean diff"}
PAIRS_SHOWN = 5  # of each split
ACCURACY_STYLE = Markup(
    "<style>table.accuracy td.best{background:#dcefd9;font-weight:700}"
    "table.accuracy tr.baseline th,table.accuracy tr.baseline td{background:#f6f7f9}"
    "table.accuracy td.loss{color:var(--muted)}</style>"
)
SIGN_FREE = Markup(
    "<p>CCS learns no sign (it is trained without labels), so its accuracy is "
    "<strong>sign-free</strong>: max(acc, 1 − acc). Logistic regression and difference of "
    "means are fitted on the labels of the training pairs. Intervals are 95% Wilson "
    "intervals over the held-out pairs.</p>"
)


# ---------------------------------------------------------------------------- shared pieces


# ---------------------------------------------------------------------------- data


def read_probes(app: App, run: RunInfo) -> ProbeResults:
    """``probes.safetensors``; a 404 if it is missing."""
    probes = app.result(run, "probes.safetensors", ProbeResults)
    if probes is None:
        raise missing_file(run, "probes.safetensors")
    return probes


def best_index(probes: ProbeResults, method: str) -> int:
    """The index in ``probes.layers`` of the layer where `method` is most accurate."""
    return probes.layers.index(probes.best(method)[0])


def read_pairs(run: RunInfo) -> list[tuple[str, bool]] | None:
    """(statement, label) of each pair in ``pairs.json``, None if the file is missing."""
    data = read_run_json(run, "pairs.json")
    if data is None:
        return None
    try:
        if not isinstance(data, list):
            raise TypeError(f"expected a JSON list, got {type(data).__name__}")
        return [(str(p["statement"]), bool(p["label"])) for p in data]
    except (KeyError, TypeError) as err:
        what = f"a pair has no {err}" if isinstance(err, KeyError) else str(err)
        raise InputError(f"pairs.json of probe run {run.id} is not contrast pairs: {what}") from err


# ---------------------------------------------------------------------------- pieces


def accuracy_table(probes: ProbeResults) -> Markup:
    """Layers × methods: held-out accuracy [95% interval], each method's best layer marked."""
    methods = list(probes.accuracy)
    best = {m: best_index(probes, m) for m in methods}
    rows = []
    for i, layer in enumerate(probes.layers):
        cells = [
            render(
                '<td class="{cls}" data-method="{m}" data-value="{v!r}" title="{tip}">{acc}'
                "{star}</td>",
                cls="best" if best[m] == i else "",
                m=m,
                v=probes.accuracy[m][i].value,
                tip=f"{METHODS.get(m, m)}, layer {layer}: {probes.accuracy[m][i].interval()}"
                f" on {probes.accuracy[m][i].n} held-out pairs"
                + (" (best layer)" if best[m] == i else ""),
                acc=probes.accuracy[m][i].interval(),
                star=" ★" if best[m] == i else "",
            )
            for m in methods
        ]
        if probes.ccs_loss:
            cells.append(render('<td class="loss">{x:.4g}</td>', x=probes.ccs_loss[i]))
        rows.append(
            render(
                '<tr data-layer="{layer}"><th scope="row">{layer}</th>{cells}</tr>',
                layer=layer,
                cells=join(cells),
            )
        )
    baselines = [("zero_shot", "zero-shot", probes.zero_shot)]
    if probes.zero_shot_calibrated is not None:
        baselines.append(
            ("zero_shot_calibrated", "zero-shot, calibrated", probes.zero_shot_calibrated)
        )
    width = len(methods) + (1 if probes.ccs_loss else 0)
    for key, label, acc in baselines:
        rows.append(
            render(
                '<tr class="baseline" data-baseline="{key}"><th scope="row">{label}</th>'
                '<td colspan="{width}" data-value="{v!r}">{acc}</td></tr>',
                key=key,
                label=label,
                width=width,
                v=acc.value,
                acc=acc.interval(),
            )
        )
    head = join(render("<th>{m}</th>", m=METHODS.get(m, m)) for m in methods)
    if probes.ccs_loss:
        head += Markup("<th>CCS loss</th>")
    return render(
        '{style}<table class="grid accuracy" id="accuracy"><thead><tr><th>layer</th>{head}'
        "</tr></thead><tbody>{rows}</tbody></table>",
        style=ACCURACY_STYLE,
        head=head,
        rows=join(rows),
    )


def baselines_note(probes: ProbeResults) -> Markup:
    """What the zero-shot rows mean."""
    note = (
        "<p><strong>zero-shot</strong>: the model's own answer to the held-out questions, "
        "log P(positive) − log P(negative) of the first answer token above 0"
    )
    if probes.zero_shot_calibrated is not None:
        note += (
            "; <strong>calibrated</strong>: its log-odds thresholded at their median, "
            "which removes a bias towards one answer"
        )
    return Markup(note + ".</p>")


def directions_list(run: RunInfo) -> Markup:
    """Links to download each saved direction (``LinearDirection.load`` reopens them)."""
    found = tensor_links(run, "directions", re.compile(r"(?P<method>.+)_L(?P<layer>\d+)"))
    if not found:
        return Markup('<p class="muted">No directions saved in this run.</p>')
    rows = [
        (METHODS.get(m["method"], m["method"]), int(m["layer"]), download(run, rel))
        for m, rel in found
    ]
    return render(
        "<p>Each method's direction at its best layer, with the normaliser fitted on the "
        "training pairs (<code>LinearDirection.load</code>).</p>{t}",
        t=table(("method", "layer", "file"), rows, cls="grid directions"),
    )


def pairs_sample(run: RunInfo, n_train: int) -> Markup:
    """The first few training and held-out pairs: statement and label."""
    pairs = read_pairs(run)
    if pairs is None:
        return Markup('<p class="muted">No pairs.json in this run.</p>')
    shown = [
        *range(min(PAIRS_SHOWN, n_train)),
        *range(n_train, min(n_train + PAIRS_SHOWN, len(pairs))),
    ]
    rows = [
        (i, "train" if i < n_train else "held out", pairs[i][0], "true" if pairs[i][1] else "false")
        for i in shown
    ]
    return render(
        "<p>{shown} of the {n} pairs; each statement is asked as a yes/no question and answered "
        "both ways. {all}</p>{t}",
        shown=len(rows),
        n=len(pairs),
        all=link(file_url(run, "pairs.json"), "All pairs (pairs.json)"),
        t=table(("#", "split", "statement", "label"), rows, cls="grid pairs"),
    )


# ---------------------------------------------------------------------------- page


@home(*PROBE_KINDS)
def probe_home(req: Request) -> Document:
    """Held-out accuracy per layer of each probe, the baselines, directions and pairs."""
    run = req.the_run
    probes = read_probes(req.app, run)
    best = {m: best_index(probes, m) for m in probes.accuracy}
    facts = definition_list(
        {
            "model": run.model or "—",
            "dataset": run.config.get("dataset") or "—",
            "pairs": render(
                "{train} to fit, {test} held out",
                train=count(probes.n_train, "pair"),
                test=count(probes.n_test, "pair"),
            ),
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
    )
    body = render(
        "{facts}{summary}<h2>Accuracy per layer</h2>{figure}{table}{sign_free}{baselines}"
        "<h2>Directions</h2>{directions}<h2>Pairs</h2>{pairs}",
        facts=facts,
        summary=summary_html(run),
        figure=figure_html(run, "accuracy", "held-out accuracy per layer", interactive=True),
        table=accuracy_table(probes),
        sign_free=SIGN_FREE,
        baselines=baselines_note(probes),
        directions=directions_list(run),
        pairs=pairs_sample(run, probes.n_train),
    )
    return Document(f"Probes {run.id}", body)

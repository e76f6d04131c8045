"""Pages for ROME edit runs (``mechscope.tracing.runs.edit_run``): the update and its evaluation.

An ``edit`` run's home shows the ROME update (``edit.safetensors``, an
`Edit`), the held-out scores of ``report.safetensors`` (an `EditReport`)
with what each means, every prompt's probabilities before and after, the
generations side by side and the value search's loss. The results are
opened with numpy arrays (`App.result`, no torch); every value read from
them is escaped, and a damaged file gives an error page naming it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...tracing.edits import Edit, EditReport
from ..html import Markup, definition_list, join, link, render, table, url
from ..registry import Document, NotFound, Request, home
from ..runs import RunInfo
from ..tokens import show_token
from .common import count, figure_html, num, share

if TYPE_CHECKING:
    from ..app import App

EDIT_KINDS = ("edit",)
GROUPS = ("edited", "paraphrase", "paraphrase_bare", "neighbourhood")
# (key in EditReport.scores(), label, what it means); each is a share
SCORES: tuple[tuple[str, str, str], ...] = (
    ("efficacy", "efficacy", "share of edited prompts where P(new) > P(true) after the edit"),
    (
        "paraphrase",
        "paraphrase",
        "the same on held-out paraphrases, each after an unrelated sentence (as in CounterFact)",
    ),
    ("paraphrase_bare", "paraphrase, bare", "the same on the paraphrase templates alone"),
    (
        "neighbourhood",
        "neighbourhood",
        "share of other subjects' prompts where their own object still beats the new one",
    ),
    (
        "neighbourhood_kept",
        "neighbourhood kept",
        "share of other subjects' prompts whose predicted next token is unchanged",
    ),
    (
        "mentions_new",
        "mentions new",
        "share of generations after the edit that mention the new object",
    ),
)


@dataclass(frozen=True)
class PromptRow:
    """One held-out prompt: mean log-probabilities [true, new] before and after, top tokens."""

    group: str
    prompt: str
    true_object: str
    before: Sequence[float]
    after: Sequence[float]
    top_before: str
    top_after: str


def read_report(app: App, run: RunInfo) -> EditReport:
    """``report.safetensors``; a 404 if it is missing."""
    report = app.result(run, "report.safetensors", EditReport)
    if report is None:
        raise NotFound(
            f"edit run {run.id} has no report.safetensors: it did not finish",
            render("<p>{a}</p>", a=link(url("run", run.id, "record"), "its record and files")),
        )
    return report


def prompt_rows(report: EditReport) -> list[PromptRow]:
    """Every scored prompt of the report, group by group."""
    rows = []
    for group in [g for g in GROUPS if g in report.prompts]:
        for i, prompt in enumerate(report.prompts[group]):
            true = (
                report.neighbour_objects[i] if group == "neighbourhood" else report.fact["object"]
            )
            rows.append(
                PromptRow(
                    group,
                    prompt,
                    true,
                    report.before[group][i],
                    report.after[group][i],
                    report.top_before[group][i],
                    report.top_after[group][i],
                )
            )
    return rows


def _score_rows(report: EditReport, rows: list[PromptRow]) -> Markup:
    scores = report.scores()
    groups = {
        "efficacy": "edited",
        "paraphrase": "paraphrase",
        "paraphrase_bare": "paraphrase_bare",
        "neighbourhood": "neighbourhood",
        "neighbourhood_kept": "neighbourhood",
    }
    sizes = {k: count(sum(r.group == g for r in rows), "prompt") for k, g in groups.items()}
    sizes["mentions_new"] = count(len(report.generations_after), "generation")
    shown = [
        render(
            '<tr data-score="{key}"><th scope="row">{label}</th>'
            '<td class="value" data-value="{exact}">{value}</td><td class="muted">{doc} '
            "({n})</td></tr>",
            key=key,
            label=label,
            exact=scores.get(key, ""),
            value=share(scores.get(key)),
            doc=doc,
            n=sizes.get(key, ""),
        )
        for key, label, doc in SCORES
    ]
    shown.append(
        render(
            '<tr data-score="fluency"><th scope="row">fluency</th>'
            '<td class="value" data-value="{b} {a}">{tb} → {ta}</td><td class="muted">'
            "n-gram entropy of the generations (bits), before → after: a drop means "
            "repetitive text</td></tr>",
            b=scores.get("fluency_before", ""),
            a=scores.get("fluency_after", ""),
            tb=num(scores.get("fluency_before"), ".3f"),
            ta=num(scores.get("fluency_after"), ".3f"),
        )
    )
    return render(
        '<table class="grid metrics" id="scores"><thead><tr><th>score</th><th>value</th>'
        "<th>what it measures</th></tr></thead><tbody>{rows}</tbody></table>",
        rows=join(shown),
    )


def _token(text: str) -> Markup:
    return render('<code class="token">{t}</code>', t=show_token(text))


def _prompt_table(rows: list[PromptRow]) -> Markup:
    def p(logp: float) -> str:
        return num(math.exp(logp))

    cells = [
        (
            r.group,
            r.prompt,
            r.true_object,
            p(r.before[0]),
            p(r.before[1]),
            p(r.after[0]),
            p(r.after[1]),
            render("{a} → {b}", a=_token(r.top_before), b=_token(r.top_after)),
        )
        for r in rows
    ]
    header = (
        "group",
        "prompt",
        "true object",
        "P(true) before",
        "P(new) before",
        "P(true) after",
        "P(new) after",
        "top token before → after",
    )
    return table(header, cells, cls="grid prompts")


def _edit_update(app: App, run: RunInfo) -> tuple[Markup, Markup]:
    """‖δ‖ against ‖v‖, and the value search's loss history, from ``edit.safetensors``."""
    found = app.result(run, "edit.safetensors", Edit)
    if found is None:
        missing = Markup('<p class="muted">No edit.safetensors in this run.</p>')
        return Markup("—"), missing
    delta = float(np.linalg.norm(np.asarray(found.value, dtype=np.float64)))
    v_norm = float(found.value_norm)
    history = [(int(h["step"]), num(h["nll"]), num(h["kl"]), num(h["loss"])) for h in found.history]
    ratio = f" ({delta / v_norm:.3g} × ‖v‖)" if v_norm > 0 else ""
    norms = render(
        '<span id="norms" data-delta="{d!r}" data-v="{v!r}">‖δ‖ {dt} vs ‖v‖ {vt}{ratio}</span>',
        d=delta,
        v=v_norm,
        dt=num(delta),
        vt=num(v_norm),
        ratio=ratio,
    )
    shown = (
        table(("step", "NLL of the new object", "KL", "loss"), history, cls="grid history")
        if history
        else Markup('<p class="muted">No loss history.</p>')
    )
    return norms, shown


@home(*EDIT_KINDS)
def edit_home(req: Request) -> Document:
    """The ROME edit, its held-out scores, every prompt before and after, and the generations."""
    run = req.the_run
    report = read_report(req.app, run)
    rows = prompt_rows(report)
    norms, history = _edit_update(req.app, run)
    fact, seconds = report.fact, report.seconds
    rome = run.config.get("rome")
    facts = definition_list(
        {
            "model": run.model or "—",
            "prompt": fact["template"].replace("{}", fact["subject"]),
            "subject": fact["subject"],
            "object": render(
                "{old} → <strong>{new}</strong>", old=fact["object"], new=report.new_object
            ),
            "layer": f"MLP output projection of block {report.layer}",
            "update": norms,
            "edit time": f"{seconds:.1f} s (covariance, key, value search)"
            if seconds is not None
            else "—",
            "finished": run.finished or "—",
        }
    )
    generations = table(
        ("prompt", "before", "after"),
        [
            (
                p,
                render('<div class="tokens">{t}</div>', t=show_token(b)),
                render('<div class="tokens">{t}</div>', t=show_token(a)),
            )
            for p, b, a in zip(
                report.prompts["generation"],
                report.generations_before,
                report.generations_after,
                strict=True,
            )
        ],
        cls="grid generations",
    )
    body = render(
        "{facts}<h2>Scores</h2>{scores}<h2>Prompts</h2><p>P is the mean per-token probability "
        "of the object, exp(mean log-prob); for neighbours the true object is their own.</p>"
        "{prompts}<h2>Figure</h2>{figure}<h2>Generations</h2>{generations}"
        "<h2>Value search</h2>{history}{rome}",
        facts=facts,
        scores=_score_rows(report, rows),
        prompts=_prompt_table(rows),
        figure=figure_html(run, "edit", "P(true object) and P(new object), before and after"),
        generations=generations,
        history=history,
        rome=render(
            "<details><summary>hyper-parameters</summary>{d}</details>",
            d=definition_list({str(k): v for k, v in rome.items()}),
        )
        if isinstance(rome, dict)
        else "",
    )
    return Document(f"Edit {run.id}", body)

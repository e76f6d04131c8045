"""Pages for ROME edit runs (``mechscope.tracing.runs.edit_run``): the update and its evaluation.

An ``edit`` run's home shows the ROME update (``edit.safetensors``, an
`Edit`), the held-out scores of ``report.safetensors`` (an `EditReport`)
with what each means, every prompt's probabilities before and after, the
generations side by side and the value search's loss. The results are
opened with numpy arrays (`App.result`, no torch); the HTML is in
``templates/editing/``. Every value read from them is escaped, and a damaged
file gives an error page naming it.

Example: ``GET /run/e-one`` → the edit, its scores, prompts and generations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...tracing.edits import Edit, EditReport
from ..html import Markup, render, template
from ..registry import Document, Request, home
from ..runs import RunInfo
from ..tokens import show_token
from .common import count, figure_html, missing_file, num, share

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
    """One held-out prompt: mean log-probabilities [true, new] before and after, top tokens.

    Example: ``PromptRow("edited", "The capital of Rome is", "Italy", [-2.1, -5.0], …)``.
    """

    group: str
    prompt: str
    true_object: str
    before: Sequence[float]
    after: Sequence[float]
    top_before: str
    top_after: str


def read_report(app: App, run: RunInfo) -> EditReport:
    """``report.safetensors``; a 404 if it is missing.

    Example: ``read_report(req.app, run).new_object`` → ``"France"``.
    """
    report = app.result(run, "report.safetensors", EditReport)
    if report is None:
        raise missing_file(run, "report.safetensors")
    return report


def prompt_rows(report: EditReport) -> list[PromptRow]:
    """Every scored prompt of the report, group by group.

    Example: ``[r.group for r in prompt_rows(report)][:2]`` → ``["edited", "paraphrase"]``.
    """
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


@dataclass(frozen=True)
class ScoreRow:
    """One held-out score as the page shows it: exact value (``data-value``), shown, meaning.

    Example: ``ScoreRow("efficacy", "efficacy", "1.0", "100.0%", "share of …", "1 prompt")``.
    """

    key: str
    label: str
    exact: str
    value: str
    doc: str = ""
    size: str = ""


def score_rows(report: EditReport, rows: list[PromptRow]) -> list[ScoreRow]:
    """The report's scores (`SCORES`) with what each means and how many prompts it is over.

    Example: ``score_rows(report, prompt_rows(report))[0].value`` → ``"100.0%"``.
    """
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
    return [
        ScoreRow(
            key, label, str(scores.get(key, "")), share(scores.get(key)), doc, sizes.get(key, "")
        )
        for key, label, doc in SCORES
    ]


def fluency_row(report: EditReport) -> ScoreRow:
    """The generations' n-gram entropy before and after: ``data-value`` "before after".

    Example: ``fluency_row(report).value`` → ``"3.120 → 2.874"``.
    """
    scores = report.scores()
    before, after = scores.get("fluency_before", ""), scores.get("fluency_after", "")
    shown = [num(scores.get(k), ".3f") for k in ("fluency_before", "fluency_after")]
    return ScoreRow("fluency", "fluency", f"{before} {after}", " → ".join(shown))


def _token(text: str) -> Markup:
    return render('<code class="token">{t}</code>', t=show_token(text))


def _tokens(text: str) -> Markup:
    return render('<div class="tokens">{t}</div>', t=show_token(text))


def prompt_cells(rows: list[PromptRow]) -> list[tuple[object, ...]]:
    """The prompts table's cells: P(true), P(new) before and after, the top token's change.

    Example: ``prompt_cells(prompt_rows(report))[0][:3]`` → ``("edited", "The capital …", "Italy")``.
    """

    def p(logp: float) -> str:
        return num(math.exp(logp))

    return [
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


@dataclass(frozen=True)
class EditUpdate:
    """The ROME update as shown: ‖δ‖ against ‖v‖ (a span with the exact numbers), the loss.

    Example: ``edit_update(req.app, run).history[0]`` → ``(0, "3.2", "0", "3.2")``.
    """

    norms: Markup
    history: list[tuple[int, str, str, str]]


def edit_update(app: App, run: RunInfo) -> EditUpdate | None:
    """‖δ‖ and ‖v‖ and the value search's loss history from ``edit.safetensors``, None without.

    Example: ``edit_update(req.app, run).norms`` → ``Markup('<span id="norms" …>')``.
    """
    found = app.result(run, "edit.safetensors", Edit)
    if found is None:
        return None
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
    return EditUpdate(norms, history)


@home(*EDIT_KINDS)
def edit_home(req: Request) -> Document:
    """The ROME edit, its held-out scores, every prompt before and after, and the generations.

    Example: ``GET /run/e-one`` → the edit's facts, scores, prompts, generations and loss.
    """
    run = req.the_run
    report = read_report(req.app, run)
    rows = prompt_rows(report)
    update = edit_update(req.app, run)
    fact, seconds = report.fact, report.seconds
    rome = run.config.get("rome")
    facts = {
        "model": run.model or "—",
        "prompt": fact["template"].replace("{}", fact["subject"]),
        "subject": fact["subject"],
        "object": render(
            "{old} → <strong>{new}</strong>", old=fact["object"], new=report.new_object
        ),
        "layer": f"MLP output projection of block {report.layer}",
        "update": update.norms if update is not None else "—",
        "edit time": f"{seconds:.1f} s (covariance, key, value search)"
        if seconds is not None
        else "—",
        "finished": run.finished or "—",
    }
    generations = [
        (p, _tokens(b), _tokens(a))
        for p, b, a in zip(
            report.prompts["generation"],
            report.generations_before,
            report.generations_after,
            strict=True,
        )
    ]
    body = template(
        "editing/home.html",
        facts=facts,
        scores=score_rows(report, rows),
        fluency=fluency_row(report),
        prompts=prompt_cells(rows),
        figure=figure_html(run, "edit", "P(true object) and P(new object), before and after"),
        generations=generations,
        update=update,
        rome={str(k): v for k, v in rome.items()} if isinstance(rome, dict) else None,
    )
    return Document(f"Edit {run.id}", body)

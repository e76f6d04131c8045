"""Pages for optimised-prompt runs (``mechscope.prompts.prompts_run``): prompts against the data.

A ``prompts`` run's home shows the run's summary (on how many units the GCG
prompt beats the unit's top dataset example), the figure ``prompts`` (each
unit's top-example activation beside its prompts', interactive) and a table
of ``comparisons.safetensors`` in its order, one row per unit: the top
dataset example (its context up to the peak token, which is highlighted)
and its activation; the GCG prompt, its activation and its negative
log-likelihood (nats per token); the ratio GCG / top example, wins marked;
and, when the run optimised soft prompts, the soft prompt's activation and
its nearest tokens read back as text with their activation. The file is
opened as a `PromptComparisons` (`App.result`: numpy, no torch); the page is
``templates/prompts/home.html``, where every value is escaped.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ...prompts_results import PromptComparisons, PromptResult, UnitComparison
from ..html import Markup, join, render, template
from ..registry import Document, Request, home
from ..runs import RunInfo
from ..tokens import show_token
from .common import count, figure_html, missing_file, num
from .featureviz import run_summary

if TYPE_CHECKING:
    from ..app import App

PROMPT_KINDS = ("prompts",)
HEAD = ("unit", "top dataset example", "top activation", "GCG prompt", "GCG activation",
        "NLL (nats/token)", "GCG / top")  # fmt: skip
SOFT_HEAD = ("soft activation", "soft → nearest tokens", "their activation")


def read_comparisons(app: App, run: RunInfo) -> PromptComparisons:
    """``comparisons.safetensors``; a 404 if it is missing.

    Example: ``read_comparisons(req.app, req.the_run).wins`` → units where GCG wins.
    """
    found = app.result(run, "comparisons.safetensors", PromptComparisons)
    if found is None:
        raise missing_file(run, "comparisons.safetensors")
    return found


# ---------------------------------------------------------------------------- pieces


def context_html(tokens: list[str], peak_act: float) -> Markup:
    """The top example's tokens, the last (the peak) highlighted; hover for each token's repr.

    Example: ``context_html(["The", " cat"], 4.0)`` → ``<div class="tokens"><span …``.
    """
    last = len(tokens) - 1
    return render(
        '<div class="tokens">{spans}</div>',
        spans=join(
            render(
                '<span class="{cls}" title="{tip}">{text}</span>',
                cls="tok max peak" if i == last else "tok",
                tip=f"{tok!r}  peak {peak_act:.6g}" if i == last else repr(tok),
                text=show_token(tok),
            )
            for i, tok in enumerate(tokens)
        ),
    )


def prompt_html(prompt: PromptResult) -> Markup:
    """A prompt's text, its token ids on hover.

    Example: ``prompt_html(row.gcg)`` → ``<div class="tokens" title="token ids: 5 6">…</div>``.
    """
    return render(
        '<div class="tokens" title="token ids: {ids}">{t}</div>',
        ids=" ".join(map(str, prompt.ids)) or "—",
        t=show_token(prompt.text),
    )


def unit_row(c: UnitComparison) -> dict[str, object]:
    """What the template shows of one unit: texts, numbers as shown and as data values.

    Example: ``unit_row(rows.units[0])["ratio_text"]`` → ``"×1.50 ★"``.
    """
    ratio = "—" if math.isinf(c.ratio) else f"×{c.ratio:.2f}"
    soft = None
    if c.soft is not None:
        proj = c.soft.projected_activation
        soft = {
            "act": repr(c.soft.activation),
            "act_text": num(c.soft.activation, ".4g"),
            "text": prompt_html(c.soft),
            "proj": "" if proj is None else repr(proj),
            "proj_text": num(proj, ".4g"),
        }
    return {
        "cls": "win" if c.wins else "",
        "site": c.site,
        "unit": c.unit,
        "context": context_html(c.top_context, c.top_act),
        "top": repr(c.top_act),
        "top_text": num(c.top_act, ".4g"),
        "gcg": prompt_html(c.gcg),
        "act": repr(c.gcg.activation),
        "act_text": num(c.gcg.activation, ".4g"),
        "nll": repr(c.gcg.nll),
        "nll_text": num(c.gcg.nll, ".3f"),
        "ratio": repr(c.ratio),
        "ratio_text": ratio + (" ★" if c.wins else ""),
        "soft": soft,
    }


# ---------------------------------------------------------------------------- page


@home(*PROMPT_KINDS)
def prompts_home(req: Request) -> Document:
    """The summary, the figure and the per-unit comparison of prompts and top examples.

    Example: ``GET /run/prompts`` → the page of the run folder ``prompts``.
    """
    run = req.the_run
    found = read_comparisons(req.app, run)
    rows = found.units
    gcg = run.config.get("gcg") if isinstance(run.config.get("gcg"), dict) else {}
    facts = {
        "model": run.model or "—",
        "harvest": run.config.get("harvest") or "—",
        "units": count(len(rows), "unit"),
        "GCG wins": f"{found.wins} of {len(rows)}",
        "GCG options": ", ".join(f"{k}={v}" for k, v in gcg.items()) or "defaults",
        "soft prompt steps": run.config.get("soft_steps") or "none",
        "finished": run.finished or "—",
    }
    body = template(
        "prompts/home.html",
        summary=run_summary(run),
        facts=facts,
        figure=figure_html(
            run, "prompts", "activation: top example and optimised prompts", interactive=True
        ),
        head=HEAD + SOFT_HEAD if found.soft else HEAD,
        soft=found.soft,
        rows=[unit_row(c) for c in rows],
    )
    return Document(f"Optimised prompts {run.id}", body)

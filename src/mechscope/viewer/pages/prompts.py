"""Pages for optimised-prompt runs (``mechscope.prompts.prompts_run``): prompts against the data.

A ``prompts`` run's home shows the run's summary (on how many units the GCG
prompt beats the unit's top dataset example), the figure ``prompts`` (each
unit's top-example activation beside its prompts', interactive) and a table
of ``comparisons.json`` in its order, one row per unit: the top dataset
example (its context up to the peak token, which is highlighted) and its
activation; the GCG prompt, its activation and its negative log-likelihood
(nats per token); the ratio GCG / top example, wins marked; and, when the run
optimised soft prompts, the soft prompt's activation and its nearest tokens
read back as text with their activation. The file is read as JSON (the
viewer never imports torch); every value is escaped, and a damaged file gives
an error page naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ...errors import InputError
from ..html import Markup, definition_list, join, render
from ..registry import Document, Request, home
from ..runs import RunInfo
from ..tokens import POSITIVE, show_token
from .common import count, figure_html, missing_file, num, read_run_json
from .featureviz import run_summary

PROMPT_KINDS = ("prompts",)
PROMPTS_STYLE = Markup(
    "<style>table.prompts td{vertical-align:top}table.prompts td.context{max-width:24rem}"
    "table.prompts td.prompt{max-width:18rem}table.prompts td.num{white-space:nowrap}"
    "table.prompts tr.win td.ratio{background:#dcefd9;font-weight:700}"
    "table.prompts .tokens{font-size:13px;line-height:1.6}"
    "table.prompts .tok.peak{background:rgba(" + ",".join(map(str, POSITIVE)) + ",.85)}"
    "table.prompts .sub{color:var(--muted);font-size:12px}</style>"
)


@dataclass(frozen=True)
class Prompt:
    """One optimised prompt (a `PromptResult` as saved)."""

    method: str
    ids: list[int]
    text: str
    activation: float
    nll: float
    steps: int
    projected_activation: float | None


@dataclass(frozen=True)
class Comparison:
    """One unit of ``comparisons.json`` (a `UnitComparison` as saved)."""

    site: str
    unit: int
    top_act: float
    top_context: list[str]  # the top example's tokens; the last is the peak
    gcg: Prompt
    soft: Prompt | None

    @property
    def ratio(self) -> float:
        """GCG activation / top example activation (> 1: the prompt wins)."""
        return self.gcg.activation / self.top_act if self.top_act > 0 else math.inf

    @property
    def wins(self) -> bool:
        return self.gcg.activation > self.top_act


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} should be a number, got {value!r}")
    return float(value)


def _prompt(raw: Any, what: str) -> Prompt:
    if not isinstance(raw, dict):
        raise TypeError(f"{what} should be an object, got {raw!r}")
    projected = raw.get("projected_activation")
    history = raw.get("history") or []
    if not isinstance(history, list):
        raise ValueError(f"the history of {what} should be a list")
    return Prompt(
        str(raw.get("method", what)),
        [int(i) for i in raw.get("ids") or []],
        str(raw["text"]),
        _number(raw["activation"], f"the activation of {what}"),
        _number(raw["nll"], f"the nll of {what}"),
        len(history),
        None if projected is None else _number(projected, f"the projected activation of {what}"),
    )


def read_comparisons(run: RunInfo) -> list[Comparison]:
    """``comparisons.json``, checked for what the page shows; a 404 if it is missing."""
    data = read_run_json(run, "comparisons.json")
    if data is None:
        raise missing_file(run, "comparisons.json")
    try:
        if not isinstance(data, list):
            raise TypeError(f"expected a JSON list, got {type(data).__name__}")
        out = []
        for row in data:
            if not isinstance(row, dict):
                raise TypeError(f"each unit should be an object, got {row!r}")
            context = row["top_context"]
            if not isinstance(context, list) or not all(isinstance(t, str) for t in context):
                raise ValueError(f"top_context should be a list of tokens, got {context!r}")
            unit = row["unit"]
            if isinstance(unit, bool) or not isinstance(unit, int):
                raise ValueError(f"unit should be a whole number, got {unit!r}")
            out.append(
                Comparison(
                    str(row["site"]),
                    unit,
                    _number(row["top_act"], "top_act"),
                    context,
                    _prompt(row["gcg"], "gcg"),
                    _prompt(row["soft"], "soft") if row.get("soft") else None,
                )
            )
        return out
    except (KeyError, TypeError, ValueError) as err:
        what = f"no {err}" if isinstance(err, KeyError) else str(err)
        raise InputError(
            f"comparisons.json of prompts run {run.id} is not saved prompt comparisons: {what}"
        ) from err


# ---------------------------------------------------------------------------- pieces


def context_html(tokens: list[str], peak_act: float) -> Markup:
    """The top example's tokens, the last (the peak) highlighted; hover for each token's repr."""
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


def _prompt_text(prompt: Prompt) -> Markup:
    return render(
        '<div class="tokens" title="token ids: {ids}">{t}</div>',
        ids=" ".join(map(str, prompt.ids)) or "—",
        t=show_token(prompt.text),
    )


def _ratio_text(c: Comparison) -> str:
    shown = "—" if math.isinf(c.ratio) else f"×{c.ratio:.2f}"
    return shown + (" ★" if c.wins else "")


def comparisons_table(rows: list[Comparison]) -> Markup:
    """One row per unit, in the file's order: top example, GCG prompt, ratio, soft prompt."""
    soft = any(c.soft is not None for c in rows)
    head = [
        "unit",
        "top dataset example",
        "top activation",
        "GCG prompt",
        "GCG activation",
        "NLL (nats/token)",
        "GCG / top",
    ]
    if soft:
        head += ["soft activation", "soft → nearest tokens", "their activation"]
    body = []
    for c in rows:
        cells = render(
            '<td class="unit">{site}:{unit}</td><td class="context">{context}</td>'
            '<td class="num top" data-value="{top!r}">{top_text}</td>'
            '<td class="prompt gcg">{gcg}</td>'
            '<td class="num gcg-act" data-value="{act!r}">{act_text}</td>'
            '<td class="num nll" data-value="{nll!r}">{nll_text}</td>'
            '<td class="num ratio" data-value="{ratio!r}">{ratio_text}</td>',
            site=c.site,
            unit=c.unit,
            context=context_html(c.top_context, c.top_act),
            top=c.top_act,
            top_text=num(c.top_act, ".4g"),
            gcg=_prompt_text(c.gcg),
            act=c.gcg.activation,
            act_text=num(c.gcg.activation, ".4g"),
            nll=c.gcg.nll,
            nll_text=num(c.gcg.nll, ".3f"),
            ratio=c.ratio,
            ratio_text=_ratio_text(c),
        )
        if soft and c.soft is None:
            cells += Markup(
                '<td class="num soft-act">—</td><td class="prompt soft">—</td>'
                '<td class="num soft-proj">—</td>'
            )
        elif soft and c.soft is not None:
            proj = c.soft.projected_activation
            cells += render(
                '<td class="num soft-act" data-value="{act!r}">{act_text}</td>'
                '<td class="prompt soft">{text}</td>'
                '<td class="num soft-proj" data-value="{proj}">{proj_text}</td>',
                act=c.soft.activation,
                act_text=num(c.soft.activation, ".4g"),
                text=_prompt_text(c.soft),
                proj="" if proj is None else repr(proj),
                proj_text=num(proj, ".4g"),
            )
        body.append(
            render(
                '<tr class="{cls}" data-site="{site}" data-unit="{unit}">{cells}</tr>',
                cls="win" if c.wins else "",
                site=c.site,
                unit=c.unit,
                cells=cells,
            )
        )
    return render(
        '<table class="grid prompts" id="prompts"><thead><tr>{head}</tr></thead>'
        "<tbody>{body}</tbody></table>",
        head=join(render("<th>{h}</th>", h=h) for h in head),
        body=join(body),
    )


# ---------------------------------------------------------------------------- page


@home(*PROMPT_KINDS)
def prompts_home(req: Request) -> Document:
    """The summary, the figure and the per-unit comparison of prompts and top examples."""
    run = req.the_run
    rows = read_comparisons(run)
    wins = sum(c.wins for c in rows)
    gcg = run.config.get("gcg") if isinstance(run.config.get("gcg"), dict) else {}
    facts = definition_list(
        {
            "model": run.model or "—",
            "harvest": run.config.get("harvest") or "—",
            "units": count(len(rows), "unit"),
            "GCG wins": f"{wins} of {len(rows)}",
            "GCG options": ", ".join(f"{k}={v}" for k, v in gcg.items()) or "defaults",
            "soft prompt steps": run.config.get("soft_steps") or "none",
            "finished": run.finished or "—",
        }
    )
    body = render(
        "{style}{summary}{facts}<p>Each unit's activation at the last token: of its top dataset "
        "example (the harvest's largest; the peak token highlighted at the end of its context), "
        "of the prompt found by greedy coordinate gradient (GCG: token swaps proposed by the "
        "gradient, evaluated exactly), and, where optimised, of a soft prompt (free embeddings) "
        "and of its nearest tokens read back as text. NLL is the prompt's mean negative "
        "log-likelihood under the model (nats per token): lower reads more like text. Rows where "
        "the GCG prompt beats the top example are marked ★.</p>{figure}"
        "<h2>Units</h2>{table}",
        style=PROMPTS_STYLE,
        summary=run_summary(run),
        facts=facts,
        figure=figure_html(
            run, "prompts", "activation: top example and optimised prompts", interactive=True
        ),
        table=comparisons_table(rows)
        if rows
        else Markup('<p class="muted">No units in comparisons.json.</p>'),
    )
    return Document(f"Optimised prompts {run.id}", body)

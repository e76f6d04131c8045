"""Pages for weights-lm runs (``mechscope.weights.runs``): LM heads and neurons read from weights.

A ``weights-lm`` run's home shows the copying score of every head
(``copying.json``, the figure ``copying``, the strongest heads listed), a
section per head of ``heads.json`` (OV circuit: source token → tokens it
raises; QK circuit: query token → keys it attends to; the earlier heads that
compose with it) and a section per neuron (``neurons/L-N/wiring.safetensors``,
its `NeuronWiring`: the upstream neurons that excite and inhibit it, the
heads that write to it, the tokens it reads from the embedding and the
logits it raises and lowers, ranked to the config's ``k``).

Example: ``GET /run/<id>`` of a weights-lm run renders `lm_home`;
``read_heads(run)`` gives the `Head` circuits of its ``heads.json``.

Tokens are shown with whitespace made visible (hover for their ``repr``).
Results are opened without torch (``App.result``), the other files read as
JSON; every value is escaped, and a damaged file gives an error page naming
it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...errors import InputError
from ...weights.results import NeuronWiring, wiring_file
from ..html import Markup, definition_list, join, link, render, table
from ..registry import Document, Request, home
from ..runs import RunInfo
from ..tokens import show_token
from .common import missing_file, num, read_run_json
from .featureviz import interactive_figure, run_summary
from .weights import WEIGHTS_STYLE

if TYPE_CHECKING:
    from ..app import App

LM_KINDS = ("weights-lm",)
COPYING_SHOWN = 10  # strongest copying heads listed under the heatmap
WIRING_TOP = 10  # upstream units ranked when the config has no k


# ---------------------------------------------------------------------------- tokens and JSON values


def token_code(token: str) -> Markup:
    """A token in a box, spaces shown as ␣ and newlines, tabs and control characters made
    visible (``show_token``); hover for its repr."""
    text = str(token)
    shown = join(
        render('<span class="ws">{s}</span>', s="␣" * len(part))
        if part and not part.strip(" ")
        else show_token(part)
        for part in re.split(r"( +)", text)
        if part
    )
    return render(
        '<code class="token" title="{r}">{t}</code>',
        r=repr(text),
        t=shown if text else show_token(""),
    )


def scored_tokens(pairs: list[tuple[str, float]]) -> Markup:
    """Tokens with their scores, best first, as one wrapping list."""
    if not pairs:
        return Markup('<span class="muted">—</span>')
    return render(
        '<ul class="ranked">{items}</ul>',
        items=join(
            render(
                '<li>{t} <span class="score">{s}</span></li>',
                t=token_code(tok),
                s=num(score, ".3g"),
            )
            for tok, score in pairs
        ),
    )


def _what(err: Exception) -> str:
    return f"no {err}" if isinstance(err, KeyError) else str(err)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} should be a number, got {value!r}")
    return float(value)


def _whole(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} should be a whole number, got {value!r}")
    return value


def _token_scores(raw: Any, what: str) -> list[tuple[str, float]]:
    """[[token, score], ...] as (token, score) pairs."""
    if not isinstance(raw, list):
        raise ValueError(f"{what} should be a list of [token, score], got {raw!r}")
    out = []
    for item in raw:
        if not isinstance(item, list | tuple) or len(item) != 2 or not isinstance(item[0], str):
            raise ValueError(f"{what} should hold [token, score] pairs, got {item!r}")
        out.append((item[0], _number(item[1], f"the score of {item[0]!r} in {what}")))
    return out


def _triples(raw: Any, what: str) -> list[tuple[int, int, float]]:
    """[[layer, index, value], ...] as triples."""
    if not isinstance(raw, list):
        raise ValueError(f"{what} should be a list of [layer, index, value], got {raw!r}")
    out = []
    for item in raw:
        if not isinstance(item, list | tuple) or len(item) != 3:
            raise ValueError(f"{what} should hold [layer, index, value] triples, got {item!r}")
        out.append((_whole(item[0], what), _whole(item[1], what), _number(item[2], what)))
    return out


# ---------------------------------------------------------------------------- LM: data


@dataclass(frozen=True)
class Head:
    """One head of ``heads.json``."""

    layer: int
    head: int
    copying: float
    ov: dict[str, list[tuple[str, float]]]  # source token -> tokens it raises
    qk: dict[str, list[tuple[str, float]]]  # query token -> keys it attends to
    composition: dict[str, list[tuple[int, int, float]]]  # q/k/v -> (layer, head, score)


@dataclass(frozen=True)
class Wiring:
    """What the page shows of a `NeuronWiring` (``neurons/L-N/wiring.safetensors``)."""

    layer: int
    neuron: int
    via: str
    embed: list[tuple[str, float]]
    logits_up: list[tuple[str, float]]
    logits_down: list[tuple[str, float]]
    excitation: list[tuple[int, int, float]]
    inhibition: list[tuple[int, int, float]]
    heads: list[tuple[int, int, float]]


def read_copying(run: RunInfo) -> list[list[float]]:
    """``copying.json``: the copying score of each head, [layer][head]."""
    data = read_run_json(run, "copying.json")
    if data is None:
        raise missing_file(run, "copying.json")
    try:
        if not isinstance(data, list) or not data:
            raise ValueError("expected a non-empty list of layers")
        grid = []
        for row in data:
            if not isinstance(row, list) or len(row) != len(data[0]):
                raise ValueError("each layer should be a list with one score per head")
            grid.append([_number(x, "a copying score") for x in row])
        return grid
    except ValueError as err:
        raise InputError(
            f"copying.json of weights-lm run {run.id} is not copying scores: {err}"
        ) from err


def read_heads(run: RunInfo) -> list[Head]:
    """``heads.json``: each studied head's circuits, in the file's order."""
    data = read_run_json(run, "heads.json")
    if data is None:
        raise missing_file(run, "heads.json")
    try:
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        heads = []
        for name, h in data.items():
            if not isinstance(h, dict):
                raise TypeError(f"head {name} should be an object, got {h!r}")
            ov, qk, comp = h["ov"], h["qk"], h.get("composition") or {}
            if not isinstance(ov, dict) or not isinstance(qk, dict) or not isinstance(comp, dict):
                raise TypeError(f"ov, qk and composition of head {name} should be objects")
            heads.append(
                Head(
                    _whole(h["layer"], "layer"),
                    _whole(h["head"], "head"),
                    _number(h["copying"], "copying"),
                    {str(t): _token_scores(v, f"ov[{t!r}]") for t, v in ov.items()},
                    {str(t): _token_scores(v, f"qk[{t!r}]") for t, v in qk.items()},
                    {str(k): _triples(v, f"composition {k}") for k, v in comp.items()},
                )
            )
        return heads
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(
            f"heads.json of weights-lm run {run.id} is not saved head circuits: {_what(err)}"
        ) from err


_NEURON_DIR = re.compile(r"(?P<layer>\d+)-(?P<neuron>\d+)")


def neuron_folders(run: RunInfo) -> list[tuple[int, int]]:
    """The neurons of the run: config.json's ``neurons``, else the folders under ``neurons/``."""
    listed = run.config.get("neurons")
    if isinstance(listed, list) and listed:
        try:
            return [(int(layer), int(n)) for layer, n in listed]
        except (TypeError, ValueError) as err:
            raise InputError(
                f"config.json of weights-lm run {run.id}: neurons should be [layer, neuron] "
                f"pairs, got {listed!r}"
            ) from err
    folder = run.path / "neurons"
    if not folder.is_dir():
        return []
    found = [_NEURON_DIR.fullmatch(p.name) for p in folder.iterdir() if p.is_dir()]
    return sorted((int(m["layer"]), int(m["neuron"])) for m in found if m is not None)


def read_wiring(app: App, run: RunInfo, layer: int, neuron: int) -> Wiring:
    """``neurons/<layer>-<neuron>/wiring.safetensors``, ranked by the run's ``k``; a 404 if missing."""
    relative = wiring_file(layer, neuron)
    wiring = app.result(run, relative, NeuronWiring)
    if wiring is None:
        raise missing_file(run, relative)
    k = run.config.get("k")
    k = k if isinstance(k, int) and not isinstance(k, bool) and k > 0 else WIRING_TOP
    return Wiring(
        wiring.layer,
        wiring.neuron,
        wiring.via or "—",
        list(wiring.embed),
        list(wiring.logits_up),
        list(wiring.logits_down),
        wiring.top(k),
        wiring.top(k, "inhibition"),
        wiring.top_heads(k),
    )


# ---------------------------------------------------------------------------- LM: page


def _head_id(layer: int, head: int) -> str:
    return f"head-{layer}.{head}"


def _neuron_id(layer: int, neuron: int) -> str:
    return f"neuron-{layer}-{neuron}"


def ranked_units(
    items: list[tuple[int, int, float]], noun: str, spec: str = ".3g", signed: bool = False
) -> Markup:
    """(layer, index, value) as "L{layer} {noun}{index}" with the value, strongest first."""
    if not items:
        return Markup('<span class="muted">none</span>')
    return render(
        '<ul class="ranked">{items}</ul>',
        items=join(
            render(
                '<li data-layer="{layer}" data-index="{i}" data-value="{v!r}">L{layer} {noun}{i} '
                '<span class="score">{text}</span></li>',
                layer=layer,
                i=i,
                v=v,
                noun=noun,
                text=format(v, "+" + spec) if signed else num(v, spec),
            )
            for layer, i, v in items
        ),
    )


def copying_top(grid: list[list[float]]) -> Markup:
    """The heads with the highest copying scores."""
    ranked = sorted(
        (
            (v, layer, h)
            for layer, row in enumerate(grid)
            for h, v in enumerate(row)
            if not math.isnan(v)
        ),
        reverse=True,
    )[:COPYING_SHOWN]
    return render(
        "<p>Strongest copying heads:</p>{items}",
        items=ranked_units([(layer, h, v) for v, layer, h in ranked], "H", ".3f"),
    )


def token_table(circuit: dict[str, list[tuple[str, float]]], first: str, second: str) -> Markup:
    """One row per token: the token and its ranked tokens with scores."""
    if not circuit:
        return Markup('<p class="muted">No tokens.</p>')
    rows = [(token_code(tok), scored_tokens(pairs)) for tok, pairs in circuit.items()]
    return table((first, second), rows, cls="grid circuit")


COMPOSITION = {
    "q": "Q-composition: earlier heads whose output this head's queries read",
    "k": "K-composition: earlier heads whose output this head's keys read",
    "v": "V-composition: earlier heads whose output this head's values read",
}


def head_section(head: Head) -> Markup:
    """A head's OV and QK circuits on tokens and the heads it composes with."""
    comp = join(
        render(
            "<dt>{label}</dt><dd>{items}</dd>",
            label=COMPOSITION.get(kind, kind),
            items=ranked_units(items, "H"),
        )
        for kind, items in head.composition.items()
    )
    return render(
        '<section class="unit head" id="{id}"><h3>Head {layer}.{head} '
        "<small>copying score {copying:.3f}</small></h3>"
        "<h4>OV circuit</h4><p class=muted>What the head writes when it attends to a token: "
        "the tokens whose logits the source token's value raises most.</p>{ov}"
        "<h4>QK circuit</h4><p class=muted>Where the head looks from a token: the key tokens "
        "with the largest attention scores for each query token, from the embeddings alone.</p>"
        "{qk}"
        "<h4>Composition</h4>{comp}</section>",
        id=_head_id(head.layer, head.head),
        layer=head.layer,
        head=head.head,
        copying=head.copying,
        ov=token_table(head.ov, "source token", "tokens it raises"),
        qk=token_table(head.qk, "query token", "keys it attends to"),
        comp=render('<dl class="facts">{c}</dl>', c=comp)
        if head.composition
        else Markup('<p class="muted">No composition scores.</p>'),
    )


def neuron_section(w: Wiring) -> Markup:
    """A neuron's upstream neurons and heads, the tokens it reads and the logits it writes."""
    upstream = definition_list(
        {
            "exciting neurons": ranked_units(w.excitation, "N", signed=True),
            "inhibiting neurons": ranked_units(w.inhibition, "N", signed=True),
            "heads writing to it": ranked_units(w.heads, "H"),
        }
    )
    return render(
        '<section class="unit neuron" id="{id}"><h3>Neuron {layer}.{neuron} '
        "<small>read through {via}</small></h3>"
        "<h4>Upstream</h4><p class=muted>Virtual weights into the neuron's {via} input from each "
        "earlier MLP neuron; for heads, the norm of their output projected on it (a head's "
        "sign depends on its input).</p>{upstream}"
        "<h4>Tokens</h4>{tokens}</section>",
        id=_neuron_id(w.layer, w.neuron),
        layer=w.layer,
        neuron=w.neuron,
        via=w.via,
        upstream=upstream,
        tokens=definition_list(
            {
                "read from the embedding": scored_tokens(w.embed),
                "logits raised": scored_tokens(w.logits_up),
                "logits lowered": scored_tokens(w.logits_down),
            }
        ),
    )


@home(*LM_KINDS)
def lm_home(req: Request) -> Document:
    """Copying scores of every head, then a section per studied head and per neuron."""
    run = req.the_run
    grid = read_copying(run)
    heads = read_heads(run)
    wirings = [read_wiring(req.app, run, layer, n) for layer, n in neuron_folders(run)]
    contents = [
        link(f"#{_head_id(h.layer, h.head)}", f"head {h.layer}.{h.head}") for h in heads
    ] + [link(f"#{_neuron_id(w.layer, w.neuron)}", f"neuron {w.layer}.{w.neuron}") for w in wirings]
    facts = definition_list(
        {
            "model": run.model or "—",
            "heads": f"{len(grid)} layers × {len(grid[0])} heads",
            "studied": join(contents, " · ") if contents else "—",
            "tokens per list": run.config.get("k", "—"),
            "finished": run.finished or "—",
        }
    )
    body = render(
        "{style}{summary}{facts}<h2>Copying score of every head</h2>"
        "<p>How much each head copies the tokens it attends to (Elhage et al. 2021): the sum "
        "of the positive eigenvalues of its full OV circuit (embedding → OV → unembedding) over "
        "the sum of their absolute values; 1 for a head that copies.</p>{figure}{top}"
        "<h2>Heads</h2>{heads}<h2>Neurons</h2>{neurons}",
        style=WEIGHTS_STYLE,
        summary=run_summary(run),
        facts=facts,
        figure=interactive_figure(run, "copying", "copying score per head (layer × head)"),
        top=copying_top(grid),
        heads=join(head_section(h) for h in heads)
        if heads
        else Markup('<p class="muted">No heads studied in this run.</p>'),
        neurons=join(neuron_section(w) for w in wirings)
        if wirings
        else Markup('<p class="muted">No neurons studied in this run.</p>'),
    )
    return Document(f"Weight circuits {run.id}", body)

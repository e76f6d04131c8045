"""Pages for weights-lm runs (``mechscope.weights.runs``): LM heads and neurons read from weights.

A ``weights-lm`` run's home shows the copying score of every head
(``copying.safetensors``, its `CopyingScores`; the figure ``copying``; the
strongest heads listed), a section per studied head (``heads.safetensors``,
its `HeadCircuits`: OV circuit, source token → tokens it raises; QK circuit,
query token → keys it attends to; the earlier heads that compose with it) and
a section per neuron (``neurons/L-N/wiring.safetensors``, its `NeuronWiring`:
the upstream neurons that excite and inhibit it, the heads that write to it,
the tokens it reads from the embedding and the logits it raises and lowers,
ranked to the config's ``k``). The page is ``templates/weights_lm/home.html``.

Example: ``GET /run/<id>`` of a weights-lm run renders `lm_home`; heads are
written ``L1H2`` (layer 1, head 2).

Tokens are shown with whitespace made visible (hover for their ``repr``).
Results are opened without torch (``App.result``); every value is escaped,
and a damaged file gives an error page naming it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ...weights.results import (
    CopyingScores,
    HeadCircuit,
    HeadCircuits,
    NeuronWiring,
    head_name,
    wiring_file,
)
from ..html import Markup, join, link, render, template
from ..registry import Document, Request, home
from ..runs import RunInfo
from ..tokens import show_token
from .common import missing_file, num
from .featureviz import interactive_figure, run_summary
from .weights import ranked_k

if TYPE_CHECKING:
    from ..app import App

LM_KINDS = ("weights-lm",)
COPYING_FILE = "copying.safetensors"  # the CopyingScores of a weights-lm run
HEADS_FILE = "heads.safetensors"  # its HeadCircuits
COPYING_SHOWN = 10  # strongest copying heads listed under the heatmap
WIRING_TOP = 10  # upstream units ranked when the config has no k

COMPOSITION = {
    "q": "Q-composition: earlier heads whose output this head's queries read",
    "k": "K-composition: earlier heads whose output this head's keys read",
    "v": "V-composition: earlier heads whose output this head's values read",
}


# ---------------------------------------------------------------------------- tokens and units


def token_code(token: str) -> Markup:
    """A token in a box, spaces shown as ␣ and newlines, tabs and control characters made
    visible (``show_token``); hover for its repr.

    Example: ``token_code(" Paris")`` → ``<code class="token" title="' Paris'">…␣…Paris</code>``.
    """
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


def scored(pairs: list[tuple[str, float]]) -> list[tuple[Markup, str]]:
    """(token, score) pairs as the ``scored`` macro shows them: the token's box, the score.

    Example: ``scored([(" cat", 2.5)])`` → ``[(token_code(" cat"), "2.5")]``.
    """
    return [(token_code(tok), num(score, ".3g")) for tok, score in pairs]


def units(
    items: list[tuple[int, int, float]], noun: str, spec: str = ".3g", signed: bool = False
) -> list[dict[str, Any]]:
    """(layer, index, value) as the ``ranked`` macro shows them: heads as ``L1H2``, neurons
    as ``L1 N7``, with the value, strongest first.

    Example: ``units([(0, 1, 0.25)], "H")[0]["label"]`` → ``"L0H1"``.
    """
    return [
        {
            "layer": layer,
            "index": i,
            "value": float(v),
            "label": head_name(layer, i) if noun == "H" else f"L{layer} {noun}{i}",
            "text": format(v, "+" + spec) if signed else num(v, spec),
        }
        for layer, i, v in items
    ]


# ---------------------------------------------------------------------------- sections


def _head_id(layer: int, head: int) -> str:
    return f"head-{layer}.{head}"


def _neuron_id(layer: int, neuron: int) -> str:
    return f"neuron-{layer}-{neuron}"


def head_view(head: HeadCircuit) -> dict[str, Any]:
    """What a head's section shows: its OV and QK circuits on tokens, the heads it composes with.

    Example: ``head_view(circuits.heads[0])["name"]`` → ``"L1H2"``.
    """
    return {
        "id": _head_id(head.layer, head.head),
        "name": head.name,
        "copying": f"{head.copying:.3f}",
        "ov": [(token_code(t), scored(pairs)) for t, pairs in head.ov.items()],
        "qk": [(token_code(t), scored(pairs)) for t, pairs in head.qk.items()],
        "composition": [
            (COMPOSITION.get(kind, kind), units(items, "H"))
            for kind, items in head.composition.items()
        ],
    }


def neuron_view(wiring: NeuronWiring, k: int) -> dict[str, Any]:
    """What a neuron's section shows: upstream neurons and heads ranked to `k`, its tokens.

    Example: ``neuron_view(wiring, 10)["upstream"]["exciting neurons"][0]["label"]`` → ``"L0 N5"``.
    """
    return {
        "id": _neuron_id(wiring.layer, wiring.neuron),
        "name": f"{wiring.layer}.{wiring.neuron}",
        "via": wiring.via or "—",
        "upstream": {
            "exciting neurons": units(wiring.top(k), "N", signed=True),
            "inhibiting neurons": units(wiring.top(k, "inhibition"), "N", signed=True),
            "heads writing to it": units(wiring.top_heads(k), "H"),
        },
        "tokens": {
            "read from the embedding": scored(list(wiring.embed)),
            "logits raised": scored(list(wiring.logits_up)),
            "logits lowered": scored(list(wiring.logits_down)),
        },
    }


def neuron_list(run: RunInfo) -> list[tuple[int, int]]:
    """The run's neurons: config.json's ``neurons`` pairs, else the folders under ``neurons/``.

    Example: ``neuron_list(run)`` → ``[(1, 7), (2, 3)]``.
    """
    listed = run.config.get("neurons")
    pairs = [
        (p[0], p[1])
        for p in (listed if isinstance(listed, list) else [])
        if isinstance(p, list) and len(p) == 2 and all(type(x) is int for x in p)
    ]
    if pairs:
        return pairs
    folder = run.path / "neurons"
    found = [re.fullmatch(r"(\d+)-(\d+)", p.name) for p in folder.glob("*") if p.is_dir()]
    return sorted((int(m[1]), int(m[2])) for m in found if m is not None)


def _result(app: App, run: RunInfo, relative: str, cls: type[Any]) -> Any:
    found = app.result(run, relative, cls)
    if found is None:
        raise missing_file(run, relative)
    return found


# ---------------------------------------------------------------------------- page


@home(*LM_KINDS)
def lm_home(req: Request) -> Document:
    """Copying scores of every head, then a section per studied head and per neuron."""
    run, app = req.the_run, req.app
    copying: CopyingScores = _result(app, run, COPYING_FILE, CopyingScores)
    circuits: HeadCircuits = _result(app, run, HEADS_FILE, HeadCircuits)
    k = ranked_k(run, WIRING_TOP)
    wirings: list[NeuronWiring] = [
        _result(app, run, wiring_file(layer, n), NeuronWiring) for layer, n in neuron_list(run)
    ]
    contents = [link(f"#{_head_id(h.layer, h.head)}", f"head {h.name}") for h in circuits.heads]
    contents += [
        link(f"#{_neuron_id(w.layer, w.neuron)}", f"neuron {w.layer}.{w.neuron}") for w in wirings
    ]
    n_layers, n_heads = copying.scores.shape
    facts = {
        "model": run.model or "—",
        "heads": f"{n_layers} layers × {n_heads} heads",
        "studied": join(contents, " · ") if contents else "—",
        "tokens per list": run.config.get("k", "—"),
        "finished": run.finished or "—",
    }
    body = template(
        "weights_lm/home.html",
        summary=run_summary(run),
        facts=facts,
        figure=interactive_figure(run, "copying", "copying score per head (layer × head)"),
        top=units(copying.top(COPYING_SHOWN), "H", ".3f"),
        heads=[head_view(h) for h in circuits.heads],
        neurons=[neuron_view(w, k) for w in wirings],
    )
    return Document(f"Weight circuits {run.id}", body)

"""Pages for weights-conv runs (``mechscope.weights.runs``): the weights into one conv unit.

A ``weights-conv`` run's home explains the expanded weights (each channel of
``src`` into one unit of ``dst``, through the network with its activations
linearised), shows the figure ``circuit`` (the unit's and the top channels'
visualisations above their weight maps: red excites, blue inhibits) and a
table of the top exciting and inhibiting channels with their totals and peak
offsets (``weights.safetensors``, the run's `ConvWeights`, ranked to the
config's ``k``). The page is ``templates/weights/home.html``; its CSS (shared
with ``pages/weights_lm.py``, the ``weights-lm`` pages) is in ``viewer.css``.

Example: ``GET /run/<id>`` of a weights-conv run renders `conv_home`;
``channel_rows(weights, "excitation", 6)`` gives the rows of its exciting table.

The result is opened without torch (``App.result``); every value is escaped,
and a damaged file gives an error page naming it.
"""

from __future__ import annotations

from typing import Any

from ...weights.results import ConvWeights
from ..html import render, template
from ..registry import Document, Request, home
from ..runs import RunInfo
from .common import count, missing_file, num
from .featureviz import interactive_figure, run_summary, tensors_link

CONV_KINDS = ("weights-conv",)
CONV_FILE = "weights.safetensors"  # the ConvWeights of a weights-conv run
CONV_TOP = 6  # channels ranked when the config has no k


def ranked_k(run: RunInfo, default: int) -> int:
    """config.json's ``k`` (how many units the run's pages rank), else `default`.

    Example: ``ranked_k(run, 6)`` → ``2`` for a run made with ``k=2``.
    """
    k = run.config.get("k")
    return k if isinstance(k, int) and not isinstance(k, bool) and k > 0 else default


def _offset(peak: list[int], shape: tuple[int, ...]) -> str:
    """The peak's place in the map and its offset from the map's centre (down, right)."""
    dy, dx = peak[0] - shape[1] // 2, peak[1] - shape[2] // 2
    return f"({peak[0]}, {peak[1]}) · {dy:+d}, {dx:+d} from centre"


def channel_rows(weights: ConvWeights, kind: str, k: int) -> list[dict[str, Any]]:
    """The top `k` channels of `kind` (excitation or inhibition) as the table shows them.

    Example: ``channel_rows(w, "excitation", 2)[0]["channel"]`` → the most exciting channel.
    """
    shape = tuple(int(n) for n in weights.maps.shape)
    return [
        {
            "channel": r["channel"],
            "excitation": r["excitation"],
            "inhibition": r["inhibition"],
            "e_text": num(r["excitation"], ".3f"),
            "i_text": num(r["inhibition"], ".3f"),
            "ecls": "excitation" if kind == "excitation" else "weak",
            "icls": "inhibition" if kind == "inhibition" else "weak",
            "peak": _offset(r["peak"], shape),
        }
        for r in weights.table(k)
        if r["kind"] == kind
    ]


@home(*CONV_KINDS)
def conv_home(req: Request) -> Document:
    """The circuit figure and the top exciting and inhibiting channels."""
    run = req.the_run
    weights = req.app.result(run, CONV_FILE, ConvWeights)
    if weights is None:
        raise missing_file(run, CONV_FILE)
    c_in, kh, kw = (int(n) for n in weights.maps.shape)
    k = ranked_k(run, CONV_TOP)
    into = f"{weights.dst}:{weights.unit}"
    viz_steps = run.config.get("viz_steps")
    facts = {
        "model": run.model or "—",
        "from": render(
            "{src} <span class=muted>({n})</span>", src=weights.src, n=count(c_in, "channel")
        ),
        "into": into,
        "weight maps": f"{kh}×{kw} per channel",
        "input size": f"{run.config['size']} px" if "size" in run.config else "—",
        "visualisations": (
            f"{viz_steps} steps at {run.config.get('viz_size', '—')} px" if viz_steps else "none"
        ),
        "finished": run.finished or "—",
    }
    body = template(
        "weights/home.html",
        summary=run_summary(run),
        facts=facts,
        weights=weights,
        kh=kh,
        kw=kw,
        viz=bool(viz_steps),
        figure=interactive_figure(run, "circuit", f"{weights.src} → {into}"),
        tables={kind: channel_rows(weights, kind, k) for kind in ("excitation", "inhibition")},
        tensors=tensors_link(run, CONV_FILE, "All the weight maps (ConvWeights.load reopens them)"),
    )
    return Document(f"Weights into {into}", body)

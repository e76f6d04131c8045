"""Pages for weights-conv runs (``mechscope.weights.runs``): the weights into one conv unit.

A ``weights-conv`` run's home explains the expanded weights (each channel of
``src`` into one unit of ``dst``, through the network with its activations
linearised), shows the figure ``circuit`` (the unit's and the top channels'
visualisations above their weight maps: red excites, blue inhibits) and a
table of the top exciting and inhibiting channels with their totals and peak
offsets (``weights.safetensors``, the run's `ConvWeights`, ranked to the
config's ``k``). ``WEIGHTS_STYLE`` is shared with ``pages/weights_lm.py``
(the ``weights-lm`` pages).

Example: ``GET /run/<id>`` of a weights-conv run renders `conv_home`;
``read_conv(app, run).of("excitation")`` gives its top exciting channels.

The result is opened without torch (``App.result``); every value is escaped,
and a damaged file gives an error page naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...weights.results import ConvWeights
from ..html import Markup, definition_list, join, render
from ..registry import Document, Request, home
from ..runs import RunInfo
from .common import count, missing_file, num
from .featureviz import interactive_figure, run_summary, tensors_link

if TYPE_CHECKING:
    from ..app import App

CONV_KINDS = ("weights-conv",)
CONV_FILE = "weights.safetensors"  # the ConvWeights of a weights-conv run
CONV_TOP = 6  # channels ranked when the config has no k
WEIGHTS_STYLE = Markup(
    "<style>table.channels td.excitation{color:#b3261e;font-weight:600}"
    "table.channels td.inhibition{color:#1f5fbf;font-weight:600}"
    "table.channels td.weak{color:var(--muted)}.excite{color:#b3261e}.inhibit{color:#1f5fbf}"
    "ul.ranked{list-style:none;padding:0;margin:.2rem 0;display:flex;flex-wrap:wrap;gap:.2rem .9rem}"
    "ul.ranked li{white-space:nowrap}ul.ranked .score{color:var(--muted);font-size:12px}"
    "table.circuit td{vertical-align:top}section.unit{border-top:1px solid var(--line);"
    "margin-top:1.4rem}section.unit h3{font-size:.95rem}</style>"
)


# ---------------------------------------------------------------------------- conv: data


@dataclass(frozen=True)
class Channel:
    """One of the top channels of the expanded weights (a row of `ConvWeights.table`)."""

    kind: str  # "excitation" or "inhibition"
    channel: int
    excitation: float  # sum of the positive weights
    inhibition: float  # sum of the negative weights, as a positive number
    peak: tuple[int, int]  # (row, column) of the strongest weight of `kind` in the map


@dataclass(frozen=True)
class ConvCircuit:
    """What the page shows of a weights-conv run's `ConvWeights`: its top `k` channels."""

    src: str
    dst: str
    unit: int
    shape: tuple[int, int, int]  # input channels, kernel height, kernel width
    top: list[Channel]

    def of(self, kind: str) -> list[Channel]:
        return [c for c in self.top if c.kind == kind]


def read_conv(app: App, run: RunInfo) -> ConvCircuit:
    """``weights.safetensors`` ranked by the run's ``k`` (default 6); a 404 if it is missing."""
    weights = app.result(run, CONV_FILE, ConvWeights)
    if weights is None:
        raise missing_file(run, CONV_FILE)
    k = run.config.get("k")
    k = k if isinstance(k, int) and not isinstance(k, bool) and k > 0 else CONV_TOP
    top = [
        Channel(r["kind"], r["channel"], r["excitation"], r["inhibition"], tuple(r["peak"]))
        for r in weights.table(k)
    ]
    c_in, kh, kw = (int(n) for n in weights.maps.shape)
    return ConvCircuit(weights.src, weights.dst, weights.unit, (c_in, kh, kw), top)


# ---------------------------------------------------------------------------- conv: page


def _offset(peak: tuple[int, int], shape: tuple[int, int, int]) -> str:
    """The peak's place in the map and its offset from the map's centre (down, right)."""
    dy, dx = peak[0] - shape[1] // 2, peak[1] - shape[2] // 2
    return f"({peak[0]}, {peak[1]}) · {dy:+d}, {dx:+d} from centre"


def channels_table(circuit: ConvCircuit, kind: str) -> Markup:
    """The top channels of `kind` (exciting or inhibiting): totals and peak offsets."""
    rows = circuit.of(kind)
    if not rows:
        return render('<p class="muted">No {kind} channels.</p>', kind=kind)
    body = join(
        render(
            '<tr data-channel="{c}" data-kind="{kind}"><td>{rank}</td><td>{c}</td>'
            '<td class="{ecls}" data-value="{e!r}">+{e_text}</td>'
            '<td class="{icls}" data-value="{i!r}">−{i_text}</td><td>{peak}</td></tr>',
            c=ch.channel,
            kind=kind,
            rank=rank,
            e=ch.excitation,
            i=ch.inhibition,
            ecls="excitation" if kind == "excitation" else "weak",
            icls="inhibition" if kind == "inhibition" else "weak",
            e_text=num(ch.excitation, ".3f"),
            i_text=num(ch.inhibition, ".3f"),
            peak=_offset(ch.peak, circuit.shape),
        )
        for rank, ch in enumerate(rows, 1)
    )
    return render(
        '<table class="grid channels {kind}" id="{kind}"><thead><tr><th>#</th><th>channel</th>'
        "<th>excitation</th><th>inhibition</th><th>peak (row, column)</th></tr></thead>"
        "<tbody>{body}</tbody></table>",
        kind=kind,
        body=body,
    )


@home(*CONV_KINDS)
def conv_home(req: Request) -> Document:
    """The circuit figure and the top exciting and inhibiting channels."""
    run = req.the_run
    circuit = read_conv(req.app, run)
    c_in, kh, kw = circuit.shape
    facts = definition_list(
        {
            "model": run.model or "—",
            "from": render(
                "{src} <span class=muted>({n})</span>", src=circuit.src, n=count(c_in, "channel")
            ),
            "into": f"{circuit.dst}:{circuit.unit}",
            "weight maps": f"{kh}×{kw} per channel",
            "input size": f"{run.config['size']} px" if "size" in run.config else "—",
            "visualisations": (
                f"{run.config['viz_steps']} steps at {run.config.get('viz_size', '—')} px"
                if run.config.get("viz_steps")
                else "none"
            ),
            "finished": run.finished or "—",
        }
    )
    body = render(
        "{style}{summary}{facts}<p>The weights from each channel of <code>{src}</code> into unit "
        "{unit} of <code>{dst}</code>, through the network between them with its activations "
        "linearised (taken as identities, max-pools as average pools): one {kh}×{kw} map per "
        "input channel. <span class=excite>Red excites</span>, <span class=inhibit>blue "
        "inhibits</span>; a channel's excitation is the sum of its positive weights, its "
        "inhibition the sum of its negative ones.{viz}</p>"
        "<h2>Circuit</h2>{figure}"
        "<h2>Top channels</h2><h3>Exciting</h3>{excite}<h3>Inhibiting</h3>{inhibit}"
        '<p class="muted">Peak: where in the channel\'s map its strongest weight of that sign '
        "lies (row, column), and its offset from the centre (down, right).</p>{tensors}",
        style=WEIGHTS_STYLE,
        summary=run_summary(run),
        facts=facts,
        viz=" Above each map, the channel's visualisation; top left, the unit's."
        if run.config.get("viz_steps")
        else "",
        src=circuit.src,
        dst=circuit.dst,
        unit=circuit.unit,
        kh=kh,
        kw=kw,
        figure=interactive_figure(run, "circuit", f"{circuit.src} → {circuit.dst}:{circuit.unit}"),
        excite=channels_table(circuit, "excitation"),
        inhibit=channels_table(circuit, "inhibition"),
        tensors=tensors_link(
            run, "weights.safetensors", "All the weight maps (ConvWeights.load reopens them)"
        ),
    )
    return Document(f"Weights into {circuit.dst}:{circuit.unit}", body)

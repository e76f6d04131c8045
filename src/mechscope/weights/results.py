"""The results of reading circuits from weights, readable without torch.

`ConvWeights` (the expanded weights from every channel of one conv site into
one unit of a later one), `NeuronWiring` (the virtual weights into one MLP
neuron of a language model, the heads writing to it, the tokens it reads and
the logits it writes), `CopyingScores` (the copying score of every head) and
`HeadCircuits` (each studied head's OV and QK circuits on tokens and the
earlier heads it composes with, a `HeadCircuit` each) are frozen `Result`
dataclasses: one safetensors file each (``weights.safetensors`` of a
weights-conv run; ``neurons/L-N/wiring.safetensors``, ``copying.safetensors``
and ``heads.safetensors`` of a weights-lm run), reopened with torch tensors
or, with ``arrays="numpy"``, without torch. Their rankings (`top`, `table`,
`top_heads`) work on both kinds of array.

Example::

    w = ConvWeights.load("runs/weights/weights.safetensors", arrays="numpy")
    w.table(3)      # the 3 most exciting and inhibiting channels, with their peaks
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._arrays import as_numpy
from ..errors import InputError
from ..results import Result, result

if TYPE_CHECKING:
    from jaxtyping import Float
    from rich.console import RenderableType
    from torch import Tensor

    from ..figures import Figures

KINDS = ("excitation", "inhibition")


def wiring_file(layer: int, neuron: int) -> str:
    """Where a weights-lm run keeps the `NeuronWiring` of (`layer`, `neuron`).

    Example: ``wiring_file(3, 100)`` → ``"neurons/3-100/wiring.safetensors"``.
    """
    return f"neurons/{layer}-{neuron}/wiring.safetensors"


def _kind(kind: str) -> int:
    """+1 for excitation, −1 for inhibition."""
    if kind not in KINDS:
        raise InputError(f"kind must be 'excitation' or 'inhibition', got {kind!r}")
    return 1 if kind == "excitation" else -1


def _largest(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` largest of the flat `values`, largest first (ties: lower index)."""
    flat = values.ravel()
    return np.argsort(-flat, kind="stable")[: min(k, flat.size)]


@result
class ConvWeights(Result):
    """The expanded weights into one unit: ``maps[c]`` is input channel c's spatial map.

    ``maps`` is [c_in kh kw]: the weight from channel c of `src` at each offset
    (the unit's receptive field in `src`, cropped to where any weight is
    non-zero) to channel `unit` of `dst` at the centre of its feature map.

    Example: ``expanded_weights(model, "net._blocks.11", "net._blocks.12", 5).top(3)``.
    """

    format = "mechscope.conv_weights/1"

    src: str
    dst: str
    unit: int
    maps: Float[Tensor, "c_in kh kw"]

    def __post_init__(self) -> None:
        if len(self.maps.shape) != 3:
            raise InputError(f"maps should be [c_in kh kw], got shape {list(self.maps.shape)}")

    @property
    def excitation(self) -> np.ndarray:
        """Total positive weight from each input channel, [c_in]."""
        return np.clip(as_numpy(self.maps), 0, None).sum((1, 2))

    @property
    def inhibition(self) -> np.ndarray:
        """Total negative weight from each input channel, as a positive number, [c_in]."""
        return np.clip(-as_numpy(self.maps), 0, None).sum((1, 2))

    def top(self, k: int = 6, kind: str = "excitation") -> list[int]:
        """The `k` input channels with the most excitation (or ``kind="inhibition"``)."""
        _kind(kind)
        values = self.excitation if kind == "excitation" else self.inhibition
        return _largest(values, k).tolist()

    def table(self, k: int = 6) -> list[dict[str, Any]]:
        """Rows for the top `k` exciting and inhibiting channels (channel, totals, peak offset)."""
        maps, excitation, inhibition = as_numpy(self.maps), self.excitation, self.inhibition
        rows = []
        for kind in KINDS:
            for c in self.top(k, kind):
                m = maps[c] * _kind(kind)
                peak = int(m.argmax())
                rows.append({"kind": kind, "channel": c, "excitation": float(excitation[c]),
                             "inhibition": float(inhibition[c]),
                             "peak": [peak // m.shape[1], peak % m.shape[1]]})  # fmt: skip
        return rows

    def summary(self) -> str:
        c_in, kh, kw = self.maps.shape
        best = ", ".join(map(str, self.top(3)))
        worst = ", ".join(map(str, self.top(3, "inhibition")))
        return (
            f"{self.src} → {self.dst}:{self.unit}, {c_in} input channels over {kh}×{kw}; "
            f"most exciting {best}; most inhibiting {worst}"
        )

    def render(self, k: int = 6) -> RenderableType:
        """`table(k)` as a rich table (what the terminal shows; ``console.print(w.render(4))``)."""
        from rich.table import Table

        table = Table(title=f"{self.src} → {self.dst}:{self.unit}: expanded weights "
                      f"({tuple(self.maps.shape)})")  # fmt: skip
        for col in ("", "channel", "excitation", "inhibition", "peak (y, x)"):
            table.add_column(col, justify="right")
        for row in self.table(k):
            table.add_row(str(row["kind"]), str(row["channel"]), f"{row['excitation']:.3f}",
                          f"{row['inhibition']:.3f}", str(tuple(row["peak"])))  # fmt: skip
        return table

    def __rich__(self) -> RenderableType:
        return self.render()

    def figure(
        self,
        path: str | Path,
        *,
        images: Mapping[int, Float[Tensor, "3 h w"]] | None = None,
        unit_image: Float[Tensor, "3 h w"] | None = None,
        k: int = 6,
        title: str | None = None,
    ) -> Figures:
        """The car-detector figure: top exciting and inhibiting channels, each with its map.

        `images` (channel → its visualisation) go above the maps; `unit_image` is
        the unit's own visualisation, drawn first. PNG, SVG and HTML.
        """
        import torch

        from ..figures import named
        from ..image_figures import weight_circuit

        groups = [(kind, self.top(k, kind)) for kind in KINDS]
        title = title or f"{self.src} → {self.dst}:{self.unit}"
        return named(path, weight_circuit(torch.as_tensor(self.maps), groups, path, title=title,
                                          images=images, unit_image=unit_image))  # fmt: skip

    def to_json(self, k: int = 6) -> dict[str, object]:
        """src, dst, unit, the maps' shape and `table(k)`, as JSON values."""
        return {"src": self.src, "dst": self.dst, "unit": self.unit,
                "shape": list(self.maps.shape), "top": self.table(k)}  # fmt: skip


@result
class NeuronWiring(Result):
    """What one MLP neuron reads and writes, in the weights.

    ``neurons[l, i]`` is the virtual weight from neuron i of layer l (< `layer`)
    into this neuron's input `via`; ``heads[l, h]`` the norm of head h's output
    matrix projected on it (a head writes a vector whose sign depends on its
    input, so only the size is a weight); ``embed`` and ``logits`` the tokens it
    reads most directly and the tokens its output raises and lowers.

    Example: ``neuron_wiring(model, 12, 100).top(5)`` → ``[(layer, neuron, weight), …]``.
    """

    format = "mechscope.neuron_wiring/1"

    layer: int
    neuron: int
    via: str
    neurons: Float[Tensor, "layer d_mlp"]
    heads: Float[Tensor, "layer head"]
    embed: list[tuple[str, float]] = field(default_factory=list)
    logits_up: list[tuple[str, float]] = field(default_factory=list)
    logits_down: list[tuple[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("neurons", "heads"):
            shape = list(getattr(self, name).shape)
            if len(shape) != 2 or shape[0] < 1:
                raise InputError(f"{name} should be [layer {name[:-1]}], got shape {shape}")

    def top(self, k: int = 10, kind: str = "excitation") -> list[tuple[int, int, float]]:
        """(layer, neuron, weight) of the `k` strongest exciting (or inhibiting) upstream neurons."""
        sign = _kind(kind)
        values = as_numpy(self.neurons) * sign
        width = values.shape[1]
        flat = values.ravel()
        return [(int(i) // width, int(i) % width, float(flat[i]) * sign)
                for i in _largest(values, k).tolist() if flat[i] > 0]  # fmt: skip

    def top_heads(self, k: int = 5) -> list[tuple[int, int, float]]:
        """(layer, head, norm) of the `k` heads that write most onto the neuron's input
        (heads that do not write to it, norm 0, are left out)."""
        heads = as_numpy(self.heads)
        width = heads.shape[1]
        flat = heads.ravel()
        return [(int(i) // width, int(i) % width, float(flat[i]))
                for i in _largest(heads, k).tolist() if flat[i] > 0]  # fmt: skip

    def summary(self) -> str:
        def tokens(pairs: list[tuple[str, float]]) -> str:
            return ", ".join(repr(t) for t, _ in pairs[:3]) or "—"

        best = ", ".join(f"{la}.{n} ({v:+.3g})" for la, n, v in self.top(3)) or "—"
        return (
            f"neuron {self.layer}.{self.neuron} via {self.via}: strongest exciting neurons "
            f"{best}; raises {tokens(self.logits_up)}; lowers {tokens(self.logits_down)}"
        )

    def render(self, k: int = 10) -> RenderableType:
        """The top `k` exciting and inhibiting upstream neurons as a table, then the logits the
        neuron raises and lowers (``console.print(wiring.render(5))``)."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(
            title=f"neuron {self.layer}.{self.neuron} (via {self.via}): virtual weights from "
            "earlier neurons"
        )
        table.add_column("exciting")
        table.add_column("inhibiting")
        for (la, na, va), (lb, nb, vb) in zip(self.top(k), self.top(k, "inhibition"), strict=False):
            table.add_row(f"{la}.{na}  {va:+.3f}", f"{lb}.{nb}  {vb:+.3f}")
        logits = (f"raises {', '.join(repr(t) for t, _ in self.logits_up[:6])}; lowers "
                  f"{', '.join(repr(t) for t, _ in self.logits_down[:6])}")  # fmt: skip
        return Group(table, Text(logits))

    def __rich__(self) -> RenderableType:
        return self.render()

    def to_json(self, k: int = 10) -> dict[str, object]:
        """The wiring's scalars, token lists and top-`k` rankings, as JSON values."""
        return {"layer": self.layer, "neuron": self.neuron, "via": self.via,
                "excitation": self.top(k), "inhibition": self.top(k, "inhibition"),
                "heads": self.top_heads(k), "embed": self.embed, "logits_up": self.logits_up,
                "logits_down": self.logits_down}  # fmt: skip


def head_name(layer: int, head: int) -> str:
    """A head as pages and summaries write it.

    Example: ``head_name(23, 3)`` → ``"L23H3"``.
    """
    return f"L{layer}H{head}"


@result
class CopyingScores(Result):
    """The copying score of every head, ``scores[layer, head]`` (Elhage et al. 2021).

    A head's score is the sum of the positive eigenvalues of its full OV circuit
    (embedding → OV → unembedding) over the sum of their absolute values: 1 for
    a head that copies the tokens it attends to.

    Example: ``CopyingScores(lm.copying_scores(model)).top(3)`` → ``[(layer, head, score), …]``.
    """

    format = "mechscope.copying_scores/1"

    scores: Float[Tensor, "layer head"]

    def __post_init__(self) -> None:
        shape = list(self.scores.shape)
        if len(shape) != 2 or 0 in shape:
            raise InputError(f"scores should be [layer head], got shape {shape}")

    def top(self, k: int = 10) -> list[tuple[int, int, float]]:
        """(layer, head, score) of the `k` heads that copy most (NaN scores left out)."""
        scores = as_numpy(self.scores).astype(np.float64)
        width = scores.shape[1]
        flat = np.where(np.isnan(scores), -np.inf, scores).ravel()
        return [(int(i) // width, int(i) % width, float(flat[i]))
                for i in _largest(flat, k).tolist() if np.isfinite(flat[i])]  # fmt: skip

    def summary(self) -> str:
        n_layers, n_heads = self.scores.shape
        best = ", ".join(f"{head_name(la, h)} {v:.3f}" for la, h, v in self.top(3)) or "—"
        return f"copying scores of {n_layers} layers × {n_heads} heads; highest {best}"


@dataclass(frozen=True)
class HeadCircuit:
    """One head's circuits read from the weights, on tokens.

    ``ov[source]`` holds the tokens whose logits the source token's value raises
    most, ``qk[query]`` the key tokens with the largest attention scores, and
    ``composition[kind]`` (kind ``"q"``, ``"k"`` or ``"v"``) the earlier heads
    this head's queries, keys or values read most, as (layer, head, score).

    Example: ``HeadCircuit(1, 2, 0.06, {" Paris": [(" Paris", 7.5)]}, {}, {"q": [(0, 1, 0.25)]})``.
    """

    layer: int
    head: int
    copying: float
    ov: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    qk: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    composition: dict[str, list[tuple[int, int, float]]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The head as written on pages: ``L1H2``."""
        return head_name(self.layer, self.head)


@result
class HeadCircuits(Result):
    """The circuits of each studied head of a weights-lm run (`HeadCircuit` each, in order).

    Example: ``lm_weights_run(model, "runs/wlm", heads=[(5, 1)]).heads[0].ov``.
    """

    format = "mechscope.head_circuits/1"

    heads: list[HeadCircuit] = field(default_factory=list)

    def summary(self) -> str:
        if not self.heads:
            return "no heads"
        shown = ", ".join(f"{h.name} (copying {h.copying:.3f})" for h in self.heads[:6])
        more = f", … ({len(self.heads)} in all)" if len(self.heads) > 6 else ""
        n = len(self.heads)
        return f"circuits of {n} head{'s' if n > 1 else ''}: {shown}{more}"

    def render(self) -> RenderableType:
        """Per head: its OV circuit on tokens, and its strongest composition
        (``console.print(circuits.render())``)."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        parts: list[Table | Text] = []
        for h in self.heads:
            table = Table(title=f"head {h.layer}.{h.head} (copying score {h.copying:.3f}): OV, "
                          "source → top outputs")  # fmt: skip
            table.add_column("source")
            table.add_column("raises")
            for src, top in h.ov.items():
                table.add_row(repr(src), ", ".join(repr(t) for t, _ in top[:6]))
            parts.append(table)
            comp = ", ".join(f"{kind}: " + " ".join(f"{a}.{b} ({v:.2f})" for a, b, v in rows[:3])
                             for kind, rows in h.composition.items())  # fmt: skip
            parts.append(Text(f"strongest composition from earlier heads — {comp}"))
        return Group(*parts) if parts else Text("no heads")

    def __rich__(self) -> RenderableType:
        return self.render()

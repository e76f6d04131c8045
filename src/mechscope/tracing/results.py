"""The results of causal tracing, on the one `Result` contract, readable without torch.

`CausalTrace` is one fact's trace (P(object) after restoring each state) and
`AverageTrace` the mean indirect effect by token kind over many facts. Each
saves as one safetensors file and reopens with torch tensors or, for the
viewer, numpy arrays; the methods the viewer and the reprs use work on both.
ROME's results, `Edit` and `EditReport`, live in `tracing.edits`.

Example::

    trace = CausalTrace.load("runs/trace-eiffel/trace.safetensors", arrays="numpy")
    trace.indirect_effect("mlp").max()
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._arrays import as_numpy
from ..errors import InputError
from ..results import Result, result
from .facts import Fact

if TYPE_CHECKING:
    from jaxtyping import Float
    from rich.console import RenderableType
    from torch import Tensor

    from ..figures import Figures

    Array = Tensor | np.ndarray

__all__ = [
    "KIND_NAMES",
    "TOKEN_KINDS",
    "AverageTrace",
    "CausalTrace",
    "Fact",
]

# the kinds of state a trace restores, as figures and pages name them
KIND_NAMES = {"hidden": "hidden state", "mlp": "MLP output", "attn": "attention output"}
# the kinds of token an average groups a prompt's positions into (`average.token_kinds`)
TOKEN_KINDS = (
    "first subject",
    "middle subject",
    "last subject",
    "first subsequent",
    "further",
    "last",
)


def _cmap(kind: str) -> str:
    return "Purples" if kind == "hidden" else ("Greens" if kind == "mlp" else "Reds")


# --- causal tracing ---------------------------------------------------------------------


def token_kinds(subject: tuple[int, int], n_pos: int) -> list[list[int]]:
    """The positions of each of `TOKEN_KINDS` in a prompt of `n_pos` tokens (some may be empty).

    Example: ``token_kinds((1, 4), 8)`` → ``[[1], [2], [3], [4], [5, 6], [7]]``.
    """
    start, end = subject
    last = n_pos - 1
    return [
        [start],
        list(range(start + 1, end - 1)),
        [end - 1],
        [end] if end < last else [],
        list(range(end + 1, last)),
        [last],
    ]


@result
class CausalTrace(Result):
    """P(object) after restoring each state: `scores[kind]` is [layer, pos], averaged over samples.

    Example::

        tr = trace_fact(model, Fact("The Eiffel Tower", "{} is located in the city of", "Paris"))
        tr.indirect_effect("mlp").max()
    """

    format = "mechscope.causal_trace/1"

    fact: Fact
    tokens: list[str]
    subject: tuple[int, int]
    clean: float  # P(object) on the clean prompt
    corrupted: float  # with the subject's embeddings noised, nothing restored
    scores: dict[str, Array]
    noise: float = 0.0
    samples: int = 0
    window: int = 10

    def __post_init__(self) -> None:
        start, end = self.subject
        if not 0 <= start < end <= len(self.tokens):
            raise InputError(
                f"a causal trace's subject span {[start, end]} must lie within its "
                f"{len(self.tokens)} tokens"
            )
        if not self.scores:
            raise InputError("a causal trace needs at least one kind of score grid")
        for kind, grid in self.scores.items():
            if len(grid.shape) != 2 or grid.shape[1] != len(self.tokens):
                raise InputError(
                    f"a causal trace's {kind} grid is {list(grid.shape)}, not "
                    f"[layer, {len(self.tokens)} tokens]"
                )

    def indirect_effect(self, kind: str) -> Float[Array, "layer pos"]:
        """P(object | restored) − P(object | corrupted)."""
        return self.scores[kind] - self.corrupted

    def summary(self) -> str:
        return (
            f"{self.fact.prompt!r} → {self.fact.object!r}: clean {self.clean:.3f}, "
            f"corrupted {self.corrupted:.3f}, kinds {list(self.scores)}, "
            f"{self.samples} noise samples"
        )

    def __rich__(self) -> RenderableType:
        """The repr, then the largest indirect effect of each kind (token, layer)."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(title="largest indirect effect per kind")
        for col in ("kind", "token", "layer", "P(object) restored", "indirect effect"):
            table.add_column(col)
        for kind, grid in self.scores.items():
            ie = self.indirect_effect(kind)
            layer, pos = divmod(int(ie.argmax()), ie.shape[1])
            table.add_row(kind, repr(self.tokens[pos]), str(layer), f"{float(grid[layer, pos]):.3f}",
                          f"{float(ie[layer, pos]):.3f}")  # fmt: skip
        return Group(Text(repr(self)), table)

    def figure(self, path: str | Path) -> Figures:
        """The paper's heatmaps, one per kind: P(object) after restoring each (token, layer)."""
        from ..figures import heatmap

        stem = Path(path)
        labels = [
            t + ("*" if self.subject[0] <= i < self.subject[1] else "")
            for i, t in enumerate(self.tokens)
        ]
        out = {}
        for kind, grid in self.scores.items():
            span = "" if kind == "hidden" else f" (window of {self.window} layers)"
            out[kind] = heatmap(
                as_numpy(grid).T, stem.with_name(f"{stem.name}_{kind}"),
                title=f"restoring the {KIND_NAMES[kind]}{span}: P({self.fact.object!r}); "
                f"corrupted {self.corrupted:.3f}, clean {self.clean:.3f}",
                x_labels=[str(i) for i in range(grid.shape[0])], y_labels=labels,
                x_title="layer", y_title="token (* subject)", value_title="P(object)", center=None,
                cmap=_cmap(kind),
            )  # fmt: skip
        return out


@result
class AverageTrace(Result):
    """Mean indirect effect by token kind: `effects[kind]` is [token kind, layer].

    Example::

        avg = AverageTrace.of(traces)
        avg.peak("mlp")   # ('last subject', 0, 0.18)
    """

    format = "mechscope.average_trace/1"

    effects: dict[str, Array]
    counts: list[int]  # facts contributing to each token kind
    n_facts: int
    clean: float  # mean P(object), clean
    corrupted: float  # mean P(object), subject corrupted
    noise: float
    samples: int
    window: int
    facts: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.counts) != len(TOKEN_KINDS) or not self.effects:
            raise InputError(
                f"an average trace needs {len(TOKEN_KINDS)} counts (one per token kind) and "
                f"at least one grid, got {len(self.counts)} counts and {len(self.effects)} grids"
            )
        for kind, grid in self.effects.items():
            if len(grid.shape) != 2 or grid.shape[0] != len(TOKEN_KINDS):
                raise InputError(
                    f"an average trace's {kind} grid is {list(grid.shape)}, not "
                    f"[{len(TOKEN_KINDS)} token kinds, layer]"
                )

    @classmethod
    def of(cls, traces: Sequence[CausalTrace]) -> AverageTrace:
        """Average per-fact traces (all with the same kinds and model)."""
        import torch

        if not traces:
            raise InputError("no traces to average: give at least one fact")
        kinds = list(traces[0].scores)
        n_layers = traces[0].scores[kinds[0]].shape[0]
        sums = {k: torch.zeros(len(TOKEN_KINDS), n_layers) for k in kinds}
        counts = [0] * len(TOKEN_KINDS)
        for tr in traces:
            groups = token_kinds(tr.subject, len(tr.tokens))
            for g, positions in enumerate(groups):
                if not positions:
                    continue
                counts[g] += 1
                for k in kinds:
                    ie = torch.as_tensor(tr.indirect_effect(k))
                    sums[k][g] += ie[:, positions].mean(-1)
        effects = {
            k: s / torch.tensor(counts, dtype=s.dtype).clamp(min=1)[:, None]
            for k, s in sums.items()
        }
        for k in kinds:  # kinds no fact has are unknown, not zero
            effects[k][[c == 0 for c in counts]] = float("nan")
        n = len(traces)
        return cls(
            effects=effects,
            counts=counts,
            n_facts=n,
            clean=sum(t.clean for t in traces) / n,
            corrupted=sum(t.corrupted for t in traces) / n,
            noise=sum(t.noise for t in traces) / n,
            samples=traces[0].samples,
            window=traces[0].window,
            facts=[t.fact.to_dict() for t in traces],
        )

    def peak(self, kind: str) -> tuple[str, int, float]:
        """(token kind, layer, mean indirect effect) of the largest cell of `kind`."""
        grid = np.nan_to_num(as_numpy(self.effects[kind]), nan=-np.inf)
        g, layer = divmod(int(grid.argmax()), grid.shape[1])
        return TOKEN_KINDS[g], layer, float(grid[g, layer])

    def at(self, kind: str, token_kind: str) -> Float[Array, " layer"]:
        """The mean indirect effect of `kind` at one token kind, per layer."""
        if token_kind not in TOKEN_KINDS:
            raise InputError(f"unknown token kind {token_kind!r}; valid: {', '.join(TOKEN_KINDS)}")
        return self.effects[kind][TOKEN_KINDS.index(token_kind)]

    def summary(self) -> str:
        """Plain lines: the facts and probabilities, then each kind's peak."""
        lines = [
            f"{self.n_facts} facts, {self.samples} noise samples, noise {self.noise:.3f}: "
            f"P(object) clean {self.clean:.3f}, corrupted {self.corrupted:.3f}"
        ]
        for kind in self.effects:
            tk, layer, value = self.peak(kind)
            lines.append(
                f"{KIND_NAMES.get(kind, kind)}: peak AIE {value:.3f} at the {tk} token, "
                f"layer {layer}"
            )
        return "\n".join(lines)

    def __rich__(self) -> RenderableType:
        """The summary, then per kind the largest average indirect effect at each token kind."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        tables = []
        for kind, grid in self.effects.items():
            table = Table(title=f"{kind}: largest average indirect effect")
            table.add_column("token")
            table.add_column("facts", justify="right")
            table.add_column("max AIE", justify="right")
            table.add_column("at layer", justify="right")
            for i, name in enumerate(TOKEN_KINDS):
                if self.counts[i] == 0:
                    table.add_row(name, "0", "–", "–")
                    continue
                row = grid[i]
                table.add_row(
                    name, str(self.counts[i]), f"{float(row.max()):.3f}", str(int(row.argmax()))
                )
            tables.append(table)
        return Group(Text(self.summary()), *tables)

    def figure(self, path: str | Path) -> Figures:
        """The paper's averaged heatmaps, one per kind: token kind × layer, PNG/SVG/HTML."""
        from ..figures import heatmap

        stem = Path(path)
        out = {}
        for kind, grid in self.effects.items():
            span = "" if kind == "hidden" else f", window {self.window}"
            labels = [f"{t} ({c})" for t, c in zip(TOKEN_KINDS, self.counts, strict=True)]
            out[kind] = heatmap(
                np.nan_to_num(as_numpy(grid), nan=0.0), stem.with_name(f"{stem.name}_{kind}"),
                title=f"average indirect effect of the {KIND_NAMES[kind]}{span} over "
                f"{self.n_facts} facts (clean {self.clean:.3f}, corrupted {self.corrupted:.3f})",
                x_labels=[str(i) for i in range(grid.shape[1])], y_labels=labels,
                x_title="layer", y_title="token (facts with it)", value_title="AIE", center=None,
                cmap=_cmap(kind),
            )  # fmt: skip
        return out

"""The results of probing, on the one `Result` contract, readable without torch.

`LinearDirection` is one fitted probe (a direction and bias on φ(x+) − φ(x−),
with the normalisation statistics it was fitted under); `ProbeResults` is a
sweep's held-out accuracy per layer of each method, with every fitted
direction kept as arrays (one weight row per layer and method, one
`Normaliser` per layer), so a reopened sweep still has its `directions`.
`Accuracy` and `Normaliser` are the plain parts they hold. `ProbePairs` is a
run's contrast pairs (`ContrastPair`s, training pairs first). The methods the
viewer and the reprs use work on torch tensors and numpy arrays alike.

Example::

    res = ProbeResults.load("runs/probe-sentiment/probes.safetensors", arrays="numpy")
    res.best("logistic")    # (16, Accuracy(0.877 …))
"""

from __future__ import annotations

import html
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._arrays import as_numpy
from ..errors import InputError
from ..results import Result, result

if TYPE_CHECKING:
    from jaxtyping import Float
    from rich.console import RenderableType
    from torch import Tensor

    from ..figures import Figures

    Array = Tensor | np.ndarray

__all__ = [
    "METHODS",
    "QUESTION",
    "Accuracy",
    "ContrastPair",
    "LinearDirection",
    "Normaliser",
    "ProbePairs",
    "ProbeResults",
]

# the probes a sweep fits at every layer, in order
METHODS = ("ccs", "logistic", "mean_diff")
# how a statement becomes a yes/no question; {} is the statement
QUESTION = "Is the following statement true or false?\n{}\nAnswer Yes or No."


@dataclass(frozen=True)
class ContrastPair:
    """A statement with a known truth value, to be answered `positive` and `negative`.

    Example: ``ContrastPair("Paris is in France.", True)`` (answered "Yes" and "No").
    """

    statement: str
    label: bool  # True: the statement is true
    positive: str = "Yes"
    negative: str = "No"
    relation: str = "custom"
    question: str = QUESTION  # the prompt around the statement; {} is where it goes

    def to_dict(self) -> dict[str, object]:
        """The pair as a JSON object (the form `load_pairs` reads)."""
        return asdict(self)


def _norm(x: Array) -> float | Tensor:
    """‖x‖: a torch scalar for a tensor (kept on its device), a float for a numpy array."""
    return float(np.linalg.norm(x)) if isinstance(x, np.ndarray) else x.norm()


def _ci(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


@dataclass(frozen=True)
class Accuracy:
    """An accuracy on `n` held-out pairs with its 95% Wilson interval.

    Example: ``Accuracy.of([True, False, True, True], [True] * 4)``
    → ``0.750 [0.301, 0.954] (n=4)``.
    """

    value: float
    n: int
    low: float
    high: float

    @classmethod
    def of(cls, predictions: Array, labels: Array) -> Accuracy:
        """The share of `predictions` equal to `labels` (booleans), with its interval."""
        hits = as_numpy(predictions).astype(bool) == as_numpy(labels).astype(bool)
        correct, n = int(hits.sum()), len(labels)
        low, high = _ci(correct, n)
        return cls(correct / max(1, n), n, low, high)

    def sign_free(self) -> Accuracy:
        """max(acc, 1 − acc), for probes whose sign is not learned (CCS)."""
        if self.value >= 0.5:
            return self
        return Accuracy(1 - self.value, self.n, 1 - self.high, 1 - self.low)

    def interval(self) -> str:
        """The value and its interval: ``0.877 [0.841, 0.906]``."""
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def __repr__(self) -> str:
        return f"{self.interval()} (n={self.n})"


@dataclass(frozen=True)
class Normaliser:
    """Per-side feature means and a shared scale, fitted on training states (Burns et al.).

    Example::

        norm = Normaliser.fit(pos[:300, 16], neg[:300, 16])  # the training pairs at layer 16
        p, n = norm(pos[:, 16], neg[:, 16])
    """

    mean_pos: Float[Array, " d"]
    mean_neg: Float[Array, " d"]
    std_pos: Float[Array, " d"]
    std_neg: Float[Array, " d"]

    @classmethod
    def fit(cls, pos: Float[Tensor, "n d"], neg: Float[Tensor, "n d"]) -> Normaliser:
        return cls(pos.mean(0), neg.mean(0), pos.std(0), neg.std(0))

    def __call__(self, pos: Array, neg: Array) -> tuple[Array, Array]:
        return ((pos - self.mean_pos) / (self.std_pos + 1e-6),
                (neg - self.mean_neg) / (self.std_neg + 1e-6))  # fmt: skip


@result
class LinearDirection(Result):
    """A direction w and bias b on φ(x+) − φ(x−): predicts true where w·Δφ + b > 0.

    Probes are fitted on normalised hidden states; with the `normaliser` kept,
    `predict_raw` reads raw ``blocks.{layer}.resid_post`` states and
    `in_residual` gives w in the residual stream's own coordinates (w / σ, to
    steer with).

    Example::

        d = LinearDirection.load("runs/probe-sentiment/directions/logistic_L16.safetensors")
        d.predict_raw(pos, neg)
    """

    format = "mechscope.direction/1"

    weight: Float[Array, " d"]
    bias: float = 0.0
    layer: int | None = None
    method: str = ""
    normaliser: Normaliser | None = None

    def predict(self, pos: Array, neg: Array) -> Array:
        """On normalised states φ(x+), φ(x−): True where the probe says the statement is true."""
        d = self.weight.shape[-1]
        if pos.shape != neg.shape or not pos.shape or pos.shape[-1] != d:
            raise InputError(
                f"this direction reads states of width {d}; got pos {list(pos.shape)} and neg "
                f"{list(neg.shape)}"
            )
        return (pos - neg) @ self.weight + self.bias > 0

    def predict_raw(self, pos: Array, neg: Array) -> Array:
        """On raw residual states (normalised with the training statistics first)."""
        if self.normaliser is None:
            raise InputError("this direction has no normalisation statistics; use predict")
        return self.predict(*self.normaliser(pos, neg))

    def in_residual(self, std: Float[Array, " d"] | None = None) -> Float[Array, " d"]:
        """w / σ, unit norm: the direction for raw ``blocks.{layer}.resid_post`` vectors."""
        if std is None:
            if self.normaliser is None:
                raise InputError("pass the features' std: this direction has no normaliser")
            std = 0.5 * (self.normaliser.std_pos + self.normaliser.std_neg)
        w = self.weight / (std + 1e-6)
        return w / _norm(w)

    def summary(self) -> str:
        parts = [self.method or "direction"]
        if self.layer is not None:
            parts.append(f"layer {self.layer}")
        parts += [
            f"d={self.weight.shape[-1]}",
            f"‖w‖ {float(_norm(as_numpy(self.weight).astype(np.float64))):.3g}",
            f"bias {self.bias:.3g}",
            "normalised (reads raw states)" if self.normaliser is not None else "no normaliser",
        ]
        return ", ".join(parts)


@result
class ProbeResults(Result):
    """Held-out accuracy per layer of each method, the zero-shot baseline, and the probes.

    Every fitted probe is kept: `weights[method]` is [layer, d] and
    `biases[method]` one bias per layer, with one `Normaliser` per layer in
    `normalisers` (empty for results made without them); `directions` gives
    them back as `LinearDirection`s.

    Example::

        res = probe_layers(model, pairs, test=400)
        layer, acc = res.best("logistic")
        res.directions["logistic"][layer].predict_raw(pos, neg)
    """

    format = "mechscope.probe_results/1"

    layers: list[int]
    accuracy: dict[str, list[Accuracy]]  # method -> one per layer
    zero_shot: Accuracy
    n_train: int
    n_test: int
    ccs_loss: list[float] = field(default_factory=list)
    zero_shot_calibrated: Accuracy | None = None  # log-odds thresholded at their median
    weights: dict[str, Array] = field(default_factory=dict)  # method -> [layer, d]
    biases: dict[str, list[float]] = field(default_factory=dict)  # method -> one per layer
    normalisers: list[Normaliser] = field(default_factory=list)  # one per layer, or none

    def __post_init__(self) -> None:
        n = len(self.layers)
        if not self.layers or not self.accuracy:
            raise InputError("probe results need at least one layer and one method")
        for method, accs in self.accuracy.items():
            if len(accs) != n:
                raise InputError(
                    f"probe results: {method} has {len(accs)} accuracies for {n} layers "
                    "(one per layer)"
                )
        if self.ccs_loss and len(self.ccs_loss) != n:
            raise InputError(f"probe results: {len(self.ccs_loss)} CCS losses for {n} layers")
        for method, w in self.weights.items():
            if w.shape[0] != n or len(self.biases.get(method, ())) != n:
                raise InputError(
                    f"probe results: the {method} directions need one weight row and one "
                    f"bias per layer ({n})"
                )
        if self.normalisers and len(self.normalisers) != n:
            raise InputError(f"probe results: {len(self.normalisers)} normalisers for {n} layers")

    @property
    def directions(self) -> dict[str, list[LinearDirection]]:
        """Each method's fitted direction at every layer (empty if none were kept)."""
        out = {}
        for method, w in self.weights.items():
            out[method] = [
                LinearDirection(
                    w[i],
                    float(self.biases[method][i]),
                    layer,
                    method,
                    self.normalisers[i] if self.normalisers else None,
                )
                for i, layer in enumerate(self.layers)
            ]
        return out

    def best(self, method: str) -> tuple[int, Accuracy]:
        """The layer where `method` is most accurate (the first, on ties), and that accuracy."""
        if method not in self.accuracy:
            raise InputError(f"unknown method {method!r}; valid: {', '.join(self.accuracy)}")
        accs = self.accuracy[method]
        i = max(range(len(accs)), key=lambda j: accs[j].value)
        return self.layers[i], accs[i]

    def summary(self) -> str:
        parts = [
            f"{m} {self.best(m)[1].value:.3f} at layer {self.best(m)[0]}" for m in self.accuracy
        ]
        zs = f"zero-shot {self.zero_shot.value:.3f}"
        if self.zero_shot_calibrated is not None:
            zs += f" (calibrated {self.zero_shot_calibrated.value:.3f})"
        return f"{', '.join(parts)}, {zs}"

    def __rich__(self) -> RenderableType:
        """Held-out accuracy per layer of each method (the best layers in bold), then the repr."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(title=f"held-out accuracy on {self.n_test} pairs [95% interval]")
        table.add_column("layer", justify="right")
        for method in self.accuracy:
            table.add_column(method)
        best = {method: self.best(method)[0] for method in self.accuracy}
        for i, layer in enumerate(self.layers):
            cells = []
            for method, accs in self.accuracy.items():
                a = accs[i]
                text = f"{a.value:.3f} [{a.low:.2f}, {a.high:.2f}]"
                cells.append(f"[bold]{text}[/bold]" if best[method] == layer else text)
            table.add_row(str(layer), *cells)
        return Group(table, Text(repr(self)))

    def figure_html(self) -> str:
        """Layers × methods: held-out accuracy [95% interval], each method's best layer bold."""
        best = {m: self.best(m)[0] for m in self.accuracy}
        head = "".join(f"<th>{html.escape(m)}</th>" for m in self.accuracy)
        rows = []
        for i, layer in enumerate(self.layers):
            cells = []
            for m, accs in self.accuracy.items():
                text = html.escape(accs[i].interval())
                cells.append(f"<td><b>{text}</b></td>" if best[m] == layer else f"<td>{text}</td>")
            rows.append(f"<tr><th>{layer}</th>{''.join(cells)}</tr>")
        return (
            f"<table><thead><tr><th>layer</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
            f"</table><p>zero-shot {html.escape(self.zero_shot.interval())}; held out: "
            f"{self.n_test} pairs</p>"
        )

    def figure(self, path: str | Path) -> Figures:
        """Accuracy per layer of each method, zero-shot as a flat line (PNG, SVG, HTML)."""
        from ..figures import line, named

        series = {m: [a.value for a in accs] for m, accs in self.accuracy.items()}
        series["zero-shot"] = [self.zero_shot.value] * len(self.layers)
        if self.zero_shot_calibrated is not None:
            series["zero-shot (calibrated)"] = [self.zero_shot_calibrated.value] * len(self.layers)
        return named(path, line(
            series, path, title=f"held-out accuracy on {self.n_test} contrast pairs "
            f"(trained on {self.n_train})", x_labels=[str(i) for i in self.layers],
            x_title="layer", y_title="accuracy",
        ))  # fmt: skip

    def save_directions(self, folder: str | Path, layers: str = "best") -> list[Path]:
        """Each method's fitted direction as ``{method}_L{layer}.safetensors``: at its best
        layer, or at every layer with ``layers="all"``."""
        if layers not in ("best", "all"):
            raise InputError(f"layers must be 'best' or 'all', got {layers!r}")
        if not self.weights:
            raise InputError("these results hold no fitted directions")
        out = []
        for method, ds in self.directions.items():
            keep = [self.best(method)[0]] if layers == "best" else self.layers
            for d in ds:
                if d.layer in keep:
                    out.append(d.save(Path(folder) / f"{method}_L{d.layer}.safetensors"))
        return out


@result
class ProbePairs(Result):
    """The contrast pairs of a probe run, training pairs first (the first `n_train`).

    Example::

        pairs = ProbePairs.load("runs/probe-sentiment/pairs.safetensors", arrays="numpy")
        pairs.pairs[0].statement, pairs.held_out[:3]
    """

    format = "mechscope.probe_pairs/1"

    pairs: list[ContrastPair]
    n_train: int
    dataset: str = "custom"

    def __post_init__(self) -> None:
        if not all(isinstance(p, ContrastPair) for p in self.pairs):
            raise InputError("probe pairs: every pair must be a ContrastPair")
        if not 0 <= self.n_train <= len(self.pairs):
            raise InputError(
                f"probe pairs: {self.n_train} training pairs of {len(self.pairs)} pairs"
            )

    @property
    def train(self) -> list[ContrastPair]:
        """The pairs the probes were fitted on."""
        return self.pairs[: self.n_train]

    @property
    def held_out(self) -> list[ContrastPair]:
        """The pairs the probes were scored on."""
        return self.pairs[self.n_train :]

    def summary(self) -> str:
        true = sum(p.label for p in self.pairs)
        return (
            f"{len(self.pairs)} {self.dataset} contrast pairs ({true} true): {self.n_train} to "
            f"fit, {len(self.held_out)} held out"
        )

"""The results of activation patching, attribution patching and circuit discovery.

`PatchResult` (a sweep over named axes), `AttributionPatching` (the gradient's
estimate per component), `EdgeScores` (EAP scores on the head/MLP graph) and
`Circuit` (kept nodes and their edges) are frozen `Result` dataclasses: one
safetensors file each, reopened with torch tensors or, without torch, numpy
arrays. This module imports no torch, so the viewer can read them; the
methods a repr or a page uses (`top`, `edges`, `node_scores`, `summary`) work
on both kinds of array.

Example::

    result = activation_patching(model, clean, corrupted, metric, "attn.z")
    result.save("runs/x/patch_heads")            # runs/x/patch_heads.safetensors
    PatchResult.load("runs/x/patch_heads.safetensors", arrays="numpy").top(3)
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._arrays import as_numpy
from ..errors import InputError
from ..results import Result, result
from .nodes import node_kind, receiver_nodes, upgrade_names

if TYPE_CHECKING:
    from jaxtyping import Bool, Float
    from torch import Tensor

    from ..figures import Figures

Edge = tuple[str, str, float]
"""(sender, receiver, score): one edge of the head/MLP graph."""

_DERIVED = ("faithfulness", "ratio", "n_heads", "head_fraction")  # written to JSON, not read


def _order(values: np.ndarray, largest: bool) -> np.ndarray:
    """Indices of the flat `values`, largest (or smallest) first, ties in index order, NaN last."""
    flat = values.ravel().astype(np.float64)
    return np.argsort(-flat if largest else flat, kind="stable")


# --- activation patching --------------------------------------------------------------


@result
class PatchResult(Result):
    """A patching sweep: `values` (normalised metric) and `raw` over named `axes`.

    ``labels[axis]`` names each index of an axis; ``clean_metric`` and
    ``corrupted_metric`` are the two runs' metrics (1 and 0 of `values`).

    Example: ``activation_patching(...).top(3)`` → ``[("layer 23, head 3", 0.66), …]``.
    """

    format = "mechscope.patch/1"

    values: Float[Tensor, "*axes"]
    raw: Float[Tensor, "*axes"]
    axes: tuple[str, ...]
    labels: dict[str, list[str]]
    site: str
    direction: str
    clean_metric: float
    corrupted_metric: float
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        shape = " × ".join(f"{a}={n}" for a, n in zip(self.axes, self.values.shape, strict=True))
        tops = ", ".join(f"{k}: {v:+.2f}" for k, v in self.top(3))
        return (
            f"{self.direction} {self.site}, {shape}; clean {self.clean_metric:+.3f}, "
            f"corrupted {self.corrupted_metric:+.3f}; top {tops}"
        )

    def top(self, k: int = 10, largest: bool = True) -> list[tuple[str, float]]:
        """The k entries with the largest (or smallest) normalised values, labelled (NaN last)."""
        values = as_numpy(self.values)
        flat = values.ravel()
        out = []
        for i in _order(values, largest)[: min(k, flat.size)].tolist():
            coords, rest = [], i
            for axis, size in zip(reversed(self.axes), reversed(values.shape), strict=True):
                coords.append(f"{axis} {self.labels[axis][rest % size]}")
                rest //= size
            out.append((", ".join(reversed(coords)), float(flat[i])))
        return out

    def heatmap(self, path: str | Path, title: str | None = None) -> dict[str, Path]:
        """PNG, SVG and HTML heatmap of a 2-axis result (3 axes: summed over the last)."""
        from ..figures import heatmap

        values = as_numpy(self.values)
        values = values if values.ndim == 2 else values.sum(-1)
        y_axis, x_axis = self.axes[0], self.axes[1]
        return heatmap(
            values,
            path,
            title=title or f"{self.direction} {self.site} (normalised metric)",
            x_labels=self.labels[x_axis],
            y_labels=self.labels[y_axis],
            x_title=x_axis,
            y_title=y_axis,
            value_title="normalised metric",
        )


# --- attribution patching -------------------------------------------------------------


@result
class AttributionPatching(Result):
    """Estimated normalised denoising effect (1 = full restoration) per component.

    ``heads`` [layer, head] (summed over positions), ``heads_by_pos`` [layer,
    head, pos], ``mlps`` [layer], ``neurons`` [layer, d_mlp], ``resid``
    [layer, pos] (``resid_pre``). ``clean_metric`` and ``corrupted_metric``
    are the two runs' metrics used to normalise.

    Example: ``attribution_patching(model, clean, corrupted, metric).heads.shape``
    → [n_layers, n_heads].
    """

    format = "mechscope.attribution_patching/1"

    heads: Float[Tensor, "layer head"]
    heads_by_pos: Float[Tensor, "layer head pos"]
    mlps: Float[Tensor, " layer"]
    neurons: Float[Tensor, "layer d_mlp"]
    resid: Float[Tensor, "layer pos"]
    clean_metric: float
    corrupted_metric: float

    def summary(self) -> str:
        heads = as_numpy(self.heads)
        n, flat = heads.shape[1], heads.ravel()
        top = _order(np.abs(heads), largest=True)[: min(4, flat.size)].tolist()
        tops = ", ".join(f"L{i // n}H{i % n} {float(flat[i]):+.2f}" for i in top)
        return f"heads {tuple(heads.shape)}, top {tops}"


# --- circuit discovery ----------------------------------------------------------------


class _NodeNamesV1:
    """Reads version 1 of a circuit format, which named heads ``a{layer}.{head}`` and MLPs
    ``m{layer}``: the names are renamed on load."""

    format: str

    @classmethod
    def _upgrade(cls, record: dict[str, Any], found: str, path: object) -> dict[str, Any]:
        if found != cls.format.replace("/2", "/1"):
            return super()._upgrade(record, found, path)  # type: ignore[misc]
        return upgrade_names(record)


@result
class EdgeScores(_NodeNamesV1, Result):
    """EAP scores: ``scores[i, j]`` for sender ``senders[i]`` → receiver ``receivers[j]``.

    Entries that are not edges of the graph (``valid`` False) are 0.

    Example: ``scores.edges(top_k=3)`` → ``[("L23H3", "logits", 1.2), …]``.
    """

    format = "mechscope.edge_scores/2"

    scores: Float[Tensor, "senders receivers"]
    valid: Bool[Tensor, "senders receivers"]
    senders: list[str]
    receivers: list[str]
    metric_clean: float
    metric_corrupted: float
    n_layers: int
    n_heads: int
    n_kv_heads: int
    model_name: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        top = ", ".join(f"{s}→{r} {v:+.3g}" for s, r, v in self.edges(top_k=3))
        return (
            f"{int(as_numpy(self.valid).sum())} edges, {len(self.senders)} senders × "
            f"{len(self.receivers)} receivers; clean {self.metric_clean:+.3f}, corrupted "
            f"{self.metric_corrupted:+.3f}; top {top}"
        )

    def score(self, sender: str, receiver: str) -> float:
        """The score of one edge, by its sender's and receiver's names."""
        return float(self.scores[self.senders.index(sender), self.receivers.index(receiver)])

    def edges(self, top_k: int | None = None, threshold: float | None = None) -> list[Edge]:
        """Edges sorted by |score|: the `top_k` largest, or all with |score| ≥ `threshold`."""
        scores = as_numpy(self.scores).astype(np.float64)
        strength = np.where(as_numpy(self.valid), np.abs(scores), -1.0).ravel()
        order = _order(strength, largest=True)
        order = order[strength[order] >= (0.0 if threshold is None else threshold)]
        if top_k is not None:
            order = order[:top_k]
        n, flat = len(self.receivers), scores.ravel()
        return [
            (self.senders[i // n], self.receivers[i % n], float(flat[i])) for i in order.tolist()
        ]

    def node_scores(self) -> dict[str, float]:
        """Each node's total |score|: its outgoing edges plus the edges into its inputs.

        A key/value input shared by several query heads counts for each of them.
        """
        strength = np.abs(as_numpy(self.scores).astype(np.float64))
        total = dict.fromkeys([*self.senders, "logits"], 0.0)
        for name, value in zip(self.senders, strength.sum(1).tolist(), strict=True):
            total[name] += value
        for name, value in zip(self.receivers, strength.sum(0).tolist(), strict=True):
            for node in receiver_nodes(name, self.n_heads, self.n_kv_heads):
                total[node] += value
        return total


@result
class Circuit(_NodeNamesV1, Result):
    """A set of nodes (and the EAP edges among them) with the metric it keeps.

    ``faithfulness`` is normalised, (circuit − corrupted) / (model − corrupted);
    ``ratio`` is the plain metric of the circuit over that of the model. Edges
    are (sender, receiver, score) tuples.

    Example: ``acdc(...).save("runs/ioi/circuit")`` → ``runs/ioi/circuit.safetensors``.
    """

    format = "mechscope.circuit/2"

    nodes: list[str]
    edges: list[Edge]
    metric_model: float
    metric_circuit: float
    metric_corrupted: float
    n_layers: int
    heads_per_layer: int
    kv_heads_per_layer: int | None = None  # None: as many as heads
    method: str = "acdc"
    threshold: float | None = None
    model_name: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def faithfulness(self) -> float:
        denom = self.metric_model - self.metric_corrupted
        return (self.metric_circuit - self.metric_corrupted) / denom if denom else math.nan

    @property
    def ratio(self) -> float:
        return self.metric_circuit / self.metric_model if self.metric_model else math.nan

    @property
    def heads(self) -> list[str]:
        return [n for n in self.nodes if node_kind(n) == "head"]

    @property
    def mlps(self) -> list[str]:
        return [n for n in self.nodes if node_kind(n) == "MLP"]

    @property
    def n_heads(self) -> int:
        return len(self.heads)

    @property
    def head_fraction(self) -> float:
        return self.n_heads / (self.n_layers * self.heads_per_layer)

    def summary(self) -> str:
        return (
            f"{self.method}, {self.n_heads} heads ({self.head_fraction:.1%}), "
            f"{len(self.mlps)} MLPs, {len(self.edges)} edges; metric {self.metric_circuit:+.3f} "
            f"of {self.metric_model:+.3f} (corrupted {self.metric_corrupted:+.3f}): "
            f"faithfulness {self.faithfulness:.3f}, ratio {self.ratio:.3f}"
        )

    def figure_html(self) -> str:
        """A table of the circuit: method, heads, MLPs, edges, metrics."""
        rows = "".join(
            f"<tr><td>{k}</td><td>{html.escape(str(v))}</td></tr>"
            for k, v in [
                ("method", f"{self.method} (threshold {self.threshold})"),
                ("heads", f"{self.n_heads} ({self.head_fraction:.1%}): {', '.join(self.heads)}"),
                ("MLPs", f"{len(self.mlps)}: {', '.join(self.mlps)}"),
                ("edges", len(self.edges)),
                ("metric", f"model {self.metric_model:+.4f}, circuit {self.metric_circuit:+.4f}, "
                 f"corrupted {self.metric_corrupted:+.4f}"),
                ("faithfulness", f"{self.faithfulness:.4f} (ratio {self.ratio:.4f})"),
            ]
        )  # fmt: skip
        return f"<table><caption>Circuit</caption>{rows}</table>"

    def to_json(self) -> str:
        """The circuit as JSON (with its derived numbers), for other tools; `from_json` reads it."""
        record = dataclasses.asdict(self)
        record["edges"] = [list(e) for e in self.edges]
        derived = {k: getattr(self, k) for k in _DERIVED}
        return json.dumps({"format": self.format, **record, **derived}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Circuit:
        """A circuit from `to_json`'s text (also the circuit.json files of older runs).

        Example: ``Circuit.from_json(Path("circuit.json").read_text())``.
        """
        record = json.loads(text)
        for key in _DERIVED:
            record.pop(key, None)
        if record.pop("format", None) != cls.format:
            raise InputError(f"not a mechscope circuit: the JSON needs format {cls.format}")
        record["edges"] = [(str(s), str(r), float(v)) for s, r, v in record["edges"]]
        return cls(**record)

    def figure(
        self,
        path: str | Path,
        *,
        node_labels: dict[str, str] | None = None,
        title: str | None = None,
    ) -> Figures:
        """Write the circuit as ``path``.png/.svg (matplotlib) and .html (plotly).

        Layers go bottom to top, heads left to right by index (the MLP at the
        right end); edge width and opacity follow |score|, colour its sign
        (red positive, blue negative); k/v inputs are dashed/dotted.
        `node_labels` gives nodes a class shown in colour and on hover.
        """
        from ..figures import named
        from .circuit_figures import draw

        return named(path, draw(self, Path(path), node_labels or {}, title))

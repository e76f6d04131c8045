"""The results of SAE evaluation and of the toy models of superposition, without torch.

`SAEEval` (an SAE's held-out metrics and each latent's firing frequency, one
``eval.safetensors`` in the SAE run folder), `TrainingHistory` (the rows
logged while it trained, ``history.safetensors``) and `ToyResult` (trained toy
models over a grid of importances × sparsities) are frozen `Result`
dataclasses: one safetensors file each, reopened with torch tensors or, with
``arrays="numpy"``, without torch (the viewer). Their properties, `metrics`,
`rows` and `summary` work on both kinds of array.

Example::

    ev = SAEEval.load("runs/sae/eval.safetensors", arrays="numpy")
    ev.metrics()["ce_recovered"]
"""

from __future__ import annotations

import html
import itertools
from dataclasses import field
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

EVAL_FILE = "eval.safetensors"
"""The `SAEEval` of an SAE run folder (``sae_run`` writes it)."""
HISTORY_FILE = "history.safetensors"
"""The `TrainingHistory` of an SAE run folder (``sae_run`` writes it)."""
DENSE_FREQUENCY = 0.1
"""A latent is dense when it fires on more than this share of tokens."""

METRIC_NAMES = (
    "tokens", "l0", "fvu", "mse", "ce_clean", "ce_sae", "ce_zero", "kl_sae", "cosine",
    "ce_recovered", "explained_variance", "dead_fraction", "dense_fraction",
)  # fmt: skip
"""The keys of `SAEEval.metrics` (measured, then derived)."""


@result
class SAEEval(Result):
    """Metrics of one SAE on held-out tokens; `frequencies` [width] is each latent's firing rate.

    Example: ``evaluate_sae(model, sae).ce_recovered`` → ``0.98``.
    """

    format = "mechscope.sae_eval/1"

    site: str
    tokens: int
    l0: float
    fvu: float
    mse: float
    ce_clean: float
    ce_sae: float
    ce_zero: float
    kl_sae: float  # mean KL(clean ‖ spliced) of the next-token distributions
    frequencies: Float[Tensor, " width"]
    # mean cos(x, x̂) per token: not dominated by outlier tokens as FVU can be
    cosine: float = float("nan")

    def __post_init__(self) -> None:
        if len(self.frequencies.shape) != 1:
            raise InputError(
                f"frequencies should be [width], got shape {list(self.frequencies.shape)}"
            )

    @property
    def ce_recovered(self) -> float:
        """(CE zero − CE SAE) / (CE zero − CE clean): 1 = nothing lost, 0 = as bad as deleting."""
        return (self.ce_zero - self.ce_sae) / (self.ce_zero - self.ce_clean)

    @property
    def explained_variance(self) -> float:
        """1 − FVU."""
        return 1 - self.fvu

    @property
    def dead_fraction(self) -> float:
        """Share of latents that never fired on the held-out tokens."""
        return float((as_numpy(self.frequencies) == 0).mean())

    @property
    def dense_fraction(self) -> float:
        """Share of latents that fire on more than `DENSE_FREQUENCY` of tokens."""
        return float((as_numpy(self.frequencies) > DENSE_FREQUENCY).mean())

    def metrics(self) -> dict[str, float]:
        """The scalar metrics, derived ones included (the keys of `METRIC_NAMES`)."""
        return {name: getattr(self, name) for name in METRIC_NAMES}

    def summary(self) -> str:
        return (
            f"{self.site}: L0={self.l0:.1f}, explained variance={self.explained_variance:.3f}, "
            f"CE recovered={self.ce_recovered:.3f} (clean {self.ce_clean:.3f}, SAE {self.ce_sae:.3f}, "
            f"zero {self.ce_zero:.3f}), dead={self.dead_fraction:.1%}, dense={self.dense_fraction:.1%}, "
            f"{self.tokens} tokens"
        )

    def __rich__(self) -> RenderableType:
        """The metrics as a table (every number of the summary, and a few more)."""
        from rich.table import Table

        m = self.metrics()
        table = Table(title="SAE evaluation (held-out tokens)")
        table.add_column("metric")
        table.add_column("value", justify="right")
        rows = [
            ("L0 (active latents per token)", f"{m['l0']:.1f}"),
            ("explained variance", f"{m['explained_variance']:.3f}"),
            ("mean cosine(x, x̂)", f"{m['cosine']:.3f}"),
            ("CE loss clean", f"{m['ce_clean']:.3f}"),
            ("CE loss with SAE", f"{m['ce_sae']:.3f}"),
            ("CE loss zero-ablated", f"{m['ce_zero']:.3f}"),
            ("CE loss recovered", f"{m['ce_recovered']:.3f}"),
            ("KL(clean ‖ SAE)", f"{m['kl_sae']:.4f}"),
            ("dead latents", f"{m['dead_fraction']:.1%}"),
            ("dense latents (>10% of tokens)", f"{m['dense_fraction']:.1%}"),
            ("tokens", f"{int(m['tokens']):,}"),
        ]
        for name, value in rows:
            table.add_row(name, value)
        return table


@result
class TrainingHistory(Result):
    """The rows logged while an SAE trained: one per evaluation (step, tokens, lr, losses,
    dead share, held-out ``eval_*`` metrics, …), and a last one if it stopped early.

    Example: ``TrainingHistory.load("runs/sae/history.safetensors").rows[-1]["eval_fvu"]``.
    """

    format = "mechscope.sae_history/1"

    rows: list[dict[str, float]]

    def columns(self) -> list[str]:
        """Every key of the rows, in the order they first appear."""
        return list(dict.fromkeys(k for row in self.rows for k in row))

    def summary(self) -> str:
        steps = [r for r in self.rows if "step" in r]
        if not steps:
            return f"{len(self.rows)} rows"
        last = steps[-1]
        shown = ", ".join(
            f"{k}={last[k]:.4g}" for k in ("loss", "eval_fvu", "eval_l0") if k in last
        )
        return f"{len(steps)} evaluations to step {last['step']:.0f}" + (
            f": {shown}" if shown else ""
        )


def _norms(W: np.ndarray) -> np.ndarray:
    return np.sqrt((W.astype(np.float64) ** 2).sum(-2))


@result
class ToyResult(Result):
    """Trained toy models, one per grid point: h = W x, x' = ReLU(Wᵀh + b) (or without ReLU).

    Instances are the product of the `grid` axes (outer axis first), e.g.
    ``{"decay": (0.7,), "sparsity": (0.0, …, 0.999)}``; `importance` holds
    each instance's I_i, `loss` its loss on held-out data.

    Example: ``train_toy(20, 5).rows()[0]`` → ``{"decay": 0.7, "sparsity": 0.0, …}``.
    """

    format = "mechscope.toy/1"

    W: Float[Tensor, "instance m n"]
    b: Float[Tensor, "instance n"]
    sparsity: Float[Tensor, " instance"]
    importance: Float[Tensor, "instance n"]
    loss: Float[Tensor, " instance"]
    grid: dict[str, tuple[float, ...]]
    relu: bool = True
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return self.W.shape[-1]

    @property
    def d_hidden(self) -> int:
        return self.W.shape[-2]

    def reshape(self, values: Any) -> Any:
        """Per-instance `values` [instance, ...] as [*grid axes, ...]."""
        return values.reshape(*(len(v) for v in self.grid.values()), *values.shape[1:])

    def features_represented(self, threshold: float = 0.5) -> list[int]:
        """Per instance, how many features have ||W_i|| > `threshold`."""
        return (_norms(as_numpy(self.W)) > threshold).sum(-1).tolist()

    def rows(self) -> list[dict[str, float]]:
        """One row per instance: its grid values, features represented, dims per feature, loss."""
        W = as_numpy(self.W).astype(np.float64)
        dims = W.shape[-2] / np.maximum((W**2).sum((-2, -1)), 1e-12)
        measures = {
            "features_represented": self.features_represented(),
            "dims_per_feature": dims.tolist(),
            "loss": as_numpy(self.loss).tolist(),
        }
        points = itertools.product(*self.grid.values())
        return [
            {**dict(zip(self.grid, p, strict=True)), **{k: v[i] for k, v in measures.items()}}
            for i, p in enumerate(points)
        ]

    def summary(self) -> str:
        axes = " × ".join(f"{a}={len(v)}" for a, v in self.grid.items())
        rep = self.features_represented()
        return (
            f"{'ReLU' if self.relu else 'linear'}, n={self.n_features}, m={self.d_hidden}, {axes}; "
            f"features represented {min(rep)}…{max(rep)}, steps {self.config.get('steps')}"
        )

    def figure_html(self) -> str:
        rows = self.rows()
        head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
        body = "".join(
            "<tr>" + "".join(f"<td>{v:.4g}</td>" for v in r.values()) + "</tr>" for r in rows
        )
        return f"<table><tr>{head}</tr>{body}</table>"


def read_sae_config(folder: str | Path) -> dict[str, Any] | None:
    """The configuration of the SAE saved in `folder` (its ``sae.json``: kind, d_in, width, k…),
    None when the folder holds none; reads no weights and imports no torch.

    Example: ``read_sae_config("runs/sae-l15/sae")["width"]`` → 4608.
    """
    from ..store import read_json_object

    return read_json_object(Path(folder) / "sae.json")

"""The evaluation of a transcoder set, readable without torch.

`TranscoderEval` holds, per layer, what each transcoder does on the MLP it
replaces (FVU of the MLP output, L0, each latent's firing frequency) and,
for the whole set, what the model loses when every chosen MLP's output is
replaced at once:

- ``ce_replaced``: the replacement model (each MLP output replaced by its
  transcoder's output, reading the replaced model's own MLP inputs);
- ``ce_with_errors``: the same with each layer's error term (clean MLP output
  minus the transcoder's output on the clean input) added back; it must equal
  the clean model, and ``max_logit_diff_with_errors`` says how closely it does;
- ``ce_zero``: every chosen MLP output zero-ablated.

    CE loss recovered = (CE_zero − CE_replaced) / (CE_zero − CE_clean)

1 = the replacement model predicts as well as the model, 0 = as badly as with
those MLPs deleted. Top-1 agreement is the share of positions where the
replacement model's most likely next token is the model's.

Example::

    ev = TranscoderEval.load("runs/tc/eval.safetensors", arrays="numpy")
    ev.ce_recovered, ev.rows()[0]["fvu"]
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._arrays import as_numpy
from ..errors import InputError
from ..results import Result, result

if TYPE_CHECKING:
    from jaxtyping import Float
    from torch import Tensor

EVAL_FILE = "eval.safetensors"
"""The `TranscoderEval` of a transcoder run folder."""
TABLE_FILE = "layers.parquet"
"""The per-layer table (`TranscoderEval.table`) of a transcoder run folder."""
FORMAT = "mechscope.transcoder_eval/1"
DENSE_FREQUENCY = 0.1
"""A latent is dense when it fires on more than this share of tokens."""

SCALARS = (
    "tokens", "predictions", "ce_clean", "ce_replaced", "ce_with_errors", "ce_zero",
    "ce_recovered", "kl_replaced", "top1_agreement", "max_logit_diff_with_errors",
)  # fmt: skip
"""The keys of `TranscoderEval.metrics` besides the per-layer means."""


@result
class TranscoderEval(Result):
    """A transcoder set on held-out tokens: per-layer arrays [layer] and spliced CE losses.

    `frequencies` holds one [width] array per layer (each latent's firing rate).

    Example: ``evaluate_transcoders(model, tcs).ce_recovered`` → ``0.9``;
    ``ev.rows()[0]`` → ``{"layer": 0, "fvu": 0.12, "l0": 32.0, …}``.
    """

    format = FORMAT
    model: str
    layers: list[int]
    tokens: int  # positions scored per layer (window-first and separator tokens left out)
    predictions: int  # next-token predictions scored for the CE losses
    fvu: Float[Tensor, " layer"]  # Σ‖y − ŷ‖² / Σ‖y − ȳ‖² of the MLP output y
    mse: Float[Tensor, " layer"]  # mean ‖y − ŷ‖² per token
    l0: Float[Tensor, " layer"]
    cosine: Float[Tensor, " layer"]  # mean cos(y, ŷ) per token
    frequencies: list[Float[Tensor, " width"]]
    ce_clean: float
    ce_replaced: float
    ce_with_errors: float
    ce_zero: float
    kl_replaced: float  # mean KL(clean ‖ replaced) of the next-token distributions
    top1_agreement: float
    max_logit_diff_with_errors: float
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.layers)
        for name in ("fvu", "mse", "l0", "cosine"):
            shape = list(getattr(self, name).shape)
            if shape != [n]:
                raise InputError(f"{name} should be [layer={n}], got shape {shape}")
        if len(self.frequencies) != n:
            raise InputError(f"frequencies should hold {n} arrays, got {len(self.frequencies)}")

    @property
    def ce_recovered(self) -> float:
        """(CE zero − CE replaced) / (CE zero − CE clean); nan when ablation changes nothing."""
        gap = self.ce_zero - self.ce_clean
        return (self.ce_zero - self.ce_replaced) / gap if gap else float("nan")

    def dead_fraction(self) -> list[float]:
        """Per layer, the share of latents that never fired on the evaluation tokens.

        Example: ``ev.dead_fraction()`` → ``[0.0, 0.03]``.
        """
        return [float((as_numpy(f) == 0).mean()) for f in self.frequencies]

    def dense_fraction(self) -> list[float]:
        """Per layer, the share of latents firing on more than `DENSE_FREQUENCY` of tokens.

        Example: ``ev.dense_fraction()`` → ``[0.0, 0.01]``.
        """
        return [float((as_numpy(f) > DENSE_FREQUENCY).mean()) for f in self.frequencies]

    def rows(self) -> list[dict[str, float | int]]:
        """One row per layer: layer, width, fvu, explained_variance, mse, l0, cosine, dead, dense.

        Example: ``ev.rows()[0]["explained_variance"]`` → ``0.88``.
        """
        arrays = {name: as_numpy(getattr(self, name)) for name in ("fvu", "mse", "l0", "cosine")}
        dead, dense = self.dead_fraction(), self.dense_fraction()
        return [
            {
                "layer": layer,
                "width": len(self.frequencies[i]),
                "fvu": float(arrays["fvu"][i]),
                "explained_variance": 1 - float(arrays["fvu"][i]),
                "mse": float(arrays["mse"][i]),
                "l0": float(arrays["l0"][i]),
                "cosine": float(arrays["cosine"][i]),
                "dead_fraction": dead[i],
                "dense_fraction": dense[i],
            }
            for i, layer in enumerate(self.layers)
        ]

    def table(self) -> Any:
        """`rows` as a pyarrow Table (written as ``layers.parquet`` in a run folder).

        Example: ``ev.table().to_pandas()`` (one row per layer).
        """
        import pyarrow as pa

        return pa.Table.from_pylist(self.rows())

    def write_table(self, path: str | Path) -> Path:
        """Write `table` as Parquet at `path` (atomically).

        Example: ``ev.write_table("runs/tc/layers.parquet")``; read it with DuckDB or pyarrow.
        """
        import pyarrow.parquet as pq

        from .._arrays import atomic_file

        path = Path(path)
        with atomic_file(path) as tmp:
            pq.write_table(self.table(), tmp)
        return path

    def metrics(self) -> dict[str, float]:
        """The scalar metrics, and the per-layer means (``mean_fvu``, ``mean_l0``, ``mean_dead``).

        Example: ``ev.metrics()["ce_recovered"]``.
        """
        out = {name: float(getattr(self, name)) for name in SCALARS}
        out["mean_fvu"] = float(np.mean(as_numpy(self.fvu)))
        out["mean_l0"] = float(np.mean(as_numpy(self.l0)))
        out["mean_dead"] = float(np.mean(self.dead_fraction()))
        return out

    def summary(self) -> str:
        head = (
            f"{self.model}, {len(self.layers)} layers, {self.tokens:,} tokens: CE clean "
            f"{self.ce_clean:.4g}, replaced {self.ce_replaced:.4g} (recovered "
            f"{self.ce_recovered:.3f}; all MLPs zero {self.ce_zero:.4g}), with error terms "
            f"{self.ce_with_errors:.4g} (max |Δlogit| {self.max_logit_diff_with_errors:.2g}), "
            f"top-1 agreement {self.top1_agreement:.3f}, KL {self.kl_replaced:.4g}"
        )
        lines = [
            f"layer {r['layer']}: FVU {r['fvu']:.3f}, L0 {r['l0']:.1f}, "
            f"dead {r['dead_fraction']:.1%}, width {r['width']}"
            for r in self.rows()
        ]
        return "\n".join([head, *lines])

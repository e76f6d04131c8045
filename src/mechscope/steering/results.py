"""The results of steering, on the one `Result` contract, readable without torch.

`SteeringVector` is what is added to ``blocks.{layer}.resid_pre`` (one row:
at every position; k rows: at the first k) and how it was made;
`SteeringSweep` is a layer × coefficient sweep of the target and its costs,
with the perplexity bound the run picked its best cell under;
`SteeringExamples` is greedy continuations of prompts, unsteered and steered
at one cell. The methods the viewer and the reprs use work on torch tensors
and numpy arrays alike.

Example::

    sweep = SteeringSweep.load("runs/steer-weddings/sweep.safetensors", arrays="numpy")
    sweep.best()    # (layer, coef, P(target), perplexity rise) within sweep.max_rise
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._arrays import as_numpy, is_array
from ..errors import InputError
from ..results import Result, result

if TYPE_CHECKING:
    from jaxtyping import Float
    from rich.console import RenderableType
    from torch import Tensor

    from ..figures import Figures

    Array = Tensor | np.ndarray

__all__ = [
    "MAX_RISE",
    "MEASURES",
    "SteeringExamples",
    "SteeringSweep",
    "SteeringVector",
    "cell_key",
]

MAX_RISE = 0.10  # the default bound on the perplexity rise of a sweep's best cell
MEASURES = ("probability", "effect")


def _full_like(x: Array, value: float) -> Array:
    """An array shaped like `x` (and of its kind, torch or numpy) holding `value`."""
    return np.full_like(x, value) if isinstance(x, np.ndarray) else x.new_full(x.shape, value)


@result
class SteeringVector(Result):
    """What to add to ``blocks.{layer}.resid_pre`` (times a coefficient), and where it came from.

    Example::

        v = SteeringVector(torch.randn(576), layer=8)    # [d_model]: every position
        generate(model, "I went up to my friend and said", v, coef=4)
    """

    format = "mechscope.steering_vector/1"

    vector: Float[Array, "k d_model"]  # k = 1: every position; k > 1: the first k positions
    layer: int
    method: str = "custom"
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = self.vector
        if not is_array(v):
            raise InputError(f"a steering vector is a tensor, got {type(v).__name__}")
        if len(v.shape) == 1:
            v = v[None]
        if len(v.shape) != 2 or v.shape[0] < 1:
            raise InputError(
                f"a steering vector is [d_model] or [k, d_model], got {list(self.vector.shape)}"
            )
        real = (
            v.dtype.kind in "fiu"
            if isinstance(v, np.ndarray)
            else not (v.is_complex() or str(v.dtype) == "torch.bool")
        )
        if not real:
            raise InputError(f"a steering vector holds real numbers, got {v.dtype}")
        if isinstance(self.layer, bool) or not isinstance(self.layer, (int, np.integer)):
            raise InputError(f"a steering vector's layer is an integer, got {self.layer!r}")
        v = v.astype(np.float32) if isinstance(v, np.ndarray) else v.detach().float().cpu()
        if not np.isfinite(as_numpy(v)).all():
            raise InputError("the steering vector holds NaN or infinite entries")
        object.__setattr__(self, "vector", v)
        object.__setattr__(self, "layer", int(self.layer))

    @property
    def site(self) -> str:
        return f"blocks.{self.layer}.resid_pre"

    @property
    def front(self) -> bool:
        """True for a vector of several positions, added at the front of the prompt."""
        return self.vector.shape[0] > 1

    def norm(self) -> float:
        """The largest norm of one position's vector."""
        return float(np.linalg.norm(as_numpy(self.vector), axis=-1).max())

    def summary(self) -> str:
        k = self.vector.shape[0]
        where = f"first {k} positions" if self.front else "every position"
        return f"{self.method}, layer {self.layer}, {where}, norm {self.norm():.2f}"


def cell_key(layer: int, coef: float) -> str:
    """A sweep cell's key in `SteeringSweep.samples`: ``"8,1.5"``.

    Example: ``sweep.samples[cell_key(8, 1.5)]`` → the generations kept at layer 8, coef 1.5.
    """
    return f"{layer},{coef:g}"


@result
class SteeringSweep(Result):
    """The target and the costs at every (layer, coefficient); baselines are the unsteered model.

    Two measures of the target: ``probability``, the next-token probability
    of the target words after each prompt (exact, no sampling), and
    ``effect``, a score of sampled generations (by default the share that
    mention a target word). `max_rise` is the bound on the perplexity rise
    the best cell is picked under (`best`).

    Example::

        sweep = steering_sweep(model, vectors, [0.5, 1, 2])
        layer, coef, p, rise = sweep.best()
    """

    format = "mechscope.steering_sweep/1"

    layers: list[int]
    coefs: list[float]
    probability: Array  # [layer coef]: next-token P(target words), mean over prompts
    effect: Array  # [layer coef]: the score of steered generations
    perplexity: Array  # [layer coef]: corpus perplexity with the steering
    kl: Array  # [layer coef]: KL(unsteered ‖ steered) on neutral prompts, nats per token
    baseline_probability: float
    baseline_effect: float
    baseline_perplexity: float
    target: str = "target"
    words: list[str] = field(default_factory=list)
    method: str = ""
    n_generations: int = 0
    samples: dict[str, list[str]] = field(default_factory=dict)  # cell_key -> generations
    max_rise: float = MAX_RISE

    def __post_init__(self) -> None:
        shape = (len(self.layers), len(self.coefs))
        if not all(shape):
            raise InputError("a steering sweep needs at least one layer and one coefficient")
        for name in ("probability", "effect", "perplexity", "kl"):
            grid = getattr(self, name)
            if tuple(grid.shape) != shape:
                raise InputError(
                    f"a steering sweep's {name} grid is {list(grid.shape)}, not "
                    f"[{shape[0]} layers, {shape[1]} coefficients]"
                )
        if not self.baseline_perplexity > 0:
            raise InputError(
                f"a steering sweep's baseline perplexity must be positive, "
                f"got {self.baseline_perplexity}"
            )

    @property
    def perplexity_rise(self) -> Array:
        """Relative rise of perplexity over the unsteered model (0.1 = 10%)."""
        return self.perplexity / self.baseline_perplexity - 1

    def factor(self, by: str = "probability") -> Array:
        """Steered over unsteered, per cell, for the probability or the generations' score."""
        values, base = self._metric(by)
        return values / base if base > 0 else _full_like(values, float("inf"))

    def _metric(self, by: str) -> tuple[Array, float]:
        if by == "probability":
            return self.probability, self.baseline_probability
        if by == "effect":
            return self.effect, self.baseline_effect
        raise InputError(f"unknown measure {by!r}; valid: {', '.join(MEASURES)}")

    def best(
        self, max_rise: float | None = None, by: str = "probability"
    ) -> tuple[int, float, float, float]:
        """(layer, coef, value, perplexity rise) of the largest `by` whose rise is ≤ `max_rise`
        (default: the sweep's own bound)."""
        bound = self.max_rise if max_rise is None else max_rise
        values, _ = self._metric(by)
        values = as_numpy(values)
        rise = as_numpy(self.perplexity_rise)
        ok = rise <= bound
        if not ok.any():
            raise InputError(f"no (layer, coefficient) keeps the perplexity rise ≤ {bound:.0%}")
        score = np.where(ok, values, -np.inf)
        i, j = divmod(int(score.argmax()), len(self.coefs))
        return self.layers[i], self.coefs[j], float(values[i, j]), float(rise[i, j])

    def summary(self) -> str:
        try:
            layer, coef, p, rise = self.best()
            i, j = self.layers.index(layer), self.coefs.index(coef)
            top = (
                f"best within {self.max_rise:.0%} perplexity: layer {layer} coef {coef:g}, "
                f"P(target) ×{p / max(self.baseline_probability, 1e-30):.1f}, {self.target} "
                f"{float(self.effect[i, j]):.3f} (unsteered {self.baseline_effect:.3f}), "
                f"perplexity {rise:+.1%}"
            )
        except InputError:
            top = f"no cell within {self.max_rise:.0%} perplexity"
        return f"{self.method}, {len(self.layers)} layers × {len(self.coefs)} coefs, {top}"

    def __rich__(self) -> RenderableType:
        """Per layer × coefficient: P(target) × unsteered / the generations' score / perplexity
        rise; then the repr."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(
            title=f"next-token P(target words) × unsteered ({self.baseline_probability:.2e}) / "
            f"{self.target} (unsteered {self.baseline_effect:.3f}) / perplexity rise"
        )
        table.add_column("layer", justify="right")
        for c in self.coefs:
            table.add_column(f"coef {c:g}", justify="right")
        factor, rise = self.factor(), self.perplexity_rise
        for i, layer in enumerate(self.layers):
            cells = [
                f"×{float(factor[i, j]):.1f} / {float(self.effect[i, j]):.2f} / "
                f"{float(rise[i, j]):+.1%}"
                for j in range(len(self.coefs))
            ]
            table.add_row(str(layer), *cells)
        return Group(table, Text(repr(self)))

    def figure_html(self) -> str:
        """Layers × coefficients: P(target) × unsteered and the perplexity rise, cells over the
        bound struck through."""
        factor, rise = as_numpy(self.factor()), as_numpy(self.perplexity_rise)
        head = "".join(f"<th>× {c:g}</th>" for c in self.coefs)
        rows = []
        for i, layer in enumerate(self.layers):
            cells = []
            for j in range(len(self.coefs)):
                text = f"×{float(factor[i, j]):.1f} / {float(rise[i, j]):+.1%}"
                over = float(rise[i, j]) > self.max_rise
                cells.append(f"<td><s>{text}</s></td>" if over else f"<td>{text}</td>")
            rows.append(f"<tr><th>layer {layer}</th>{''.join(cells)}</tr>")
        return (
            f"<table><thead><tr><th>P(target) × unsteered / perplexity rise</th>{head}</tr>"
            f"</thead><tbody>{''.join(rows)}</tbody></table>"
        )

    def figure(self, path: str | Path) -> Figures:
        """Target probability (× unsteered), generations' score and perplexity rise per coefficient.

        One line per layer, and the sweep's perplexity bound; PNG, SVG and HTML each.
        """
        from ..figures import figure_stem, line

        stem = figure_stem(path)
        coefs = [f"{c:g}" for c in self.coefs]

        def per_layer(values: Array) -> dict[str, np.ndarray | list[float]]:
            grid = as_numpy(values)
            return {f"layer {layer}": grid[i] for i, layer in enumerate(self.layers)}

        factor = per_layer(self.factor("probability"))
        factor["unsteered"] = [1.0] * len(coefs)
        effect = per_layer(self.effect)
        effect["unsteered"] = [self.baseline_effect] * len(coefs)
        rise = per_layer(100 * self.perplexity_rise)
        rise[f"{self.max_rise:.0%} bound"] = [round(100 * self.max_rise, 6)] * len(coefs)
        words = ", ".join(self.words[:4]) + ("…" if len(self.words) > 4 else "")
        return {
            "probability": line(factor, stem.with_name(stem.name + "_probability"),
                                title=f"next-token P({words}), steered / unsteered",
                                x_labels=coefs, x_title="coefficient", y_title="× unsteered"),
            "effect": line(effect, stem.with_name(stem.name + "_effect"),
                           title=f"{self.target} ({self.n_generations} generations per cell)",
                           x_labels=coefs, x_title="coefficient", y_title=self.target),
            "perplexity": line(rise, stem.with_name(stem.name + "_perplexity"),
                               title="perplexity rise on the corpus", x_labels=coefs,
                               x_title="coefficient", y_title="perplexity rise (%)"),
        }  # fmt: skip


@result
class SteeringExamples(Result):
    """Greedy continuations of each prompt, unsteered and with `coef` × the layer `layer` vector.

    Example::

        ex = steer_examples(model, PROMPTS[:2], vector, 4.0)   # a SteeringExamples
        ex.rows[0]                                             # (prompt, unsteered, steered)
        console.print(ex)                                      # side by side
    """

    format = "mechscope.steering_examples/1"

    layer: int
    coef: float
    prompts: list[str]
    unsteered: list[str]
    steered: list[str]

    def __post_init__(self) -> None:
        n = len(self.prompts)
        if len(self.unsteered) != n or len(self.steered) != n:
            raise InputError(
                f"steering examples: {n} prompts, {len(self.unsteered)} unsteered and "
                f"{len(self.steered)} steered continuations (one each per prompt)"
            )

    @property
    def rows(self) -> list[tuple[str, str, str]]:
        """(prompt, unsteered, steered) per prompt."""
        return list(zip(self.prompts, self.unsteered, self.steered, strict=True))

    def summary(self) -> str:
        changed = sum(a != b for a, b in zip(self.unsteered, self.steered, strict=True))
        return (
            f"{len(self.prompts)} prompts steered with {self.coef:g} × the layer {self.layer} "
            f"vector; {changed} continuations changed"
        )

    def __rich__(self) -> RenderableType:
        """The prompts with their continuations, unsteered and steered, side by side."""
        from rich.table import Table

        table = Table(
            title=f"greedy, unsteered and steered (coef {self.coef:g}, layer {self.layer})",
            show_lines=True,
        )
        for col in ("prompt", "unsteered", "steered"):
            table.add_column(col)
        for prompt, plain, steered in self.rows:
            table.add_row(prompt, plain.strip(), steered.strip())
        return table

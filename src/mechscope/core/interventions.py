"""Interventions as data: what to do to one site, and on which rows, positions, heads, units.

An `Intervention` is a frozen record (site, operation, selectors, value). It
says nothing about hooks; `core.hooks` turns a list of them into the few
PyTorch hooks a run needs, and `core.execution` applies each one to the
tensor at its site. Because each intervention carries its own row selector,
one batch can hold many different experiments, one per row: that is what
makes a whole patching sweep a single batched forward.

Example::

    import mechscope as ms
    ivs = [ms.patch("blocks.3.resid_post", clean.cache, rows=[i], positions=[i]) for i in range(8)]
    out = model.run(corrupted_tokens_x8, interventions=ivs)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..errors import InterventionError

Op = Literal["save", "observe", "replace", "add", "scale", "zero", "mean", "resample", "fn", "stop"]
OPS: tuple[str, ...] = (
    "save",
    "observe",
    "replace",
    "add",
    "scale",
    "zero",
    "mean",
    "resample",
    "fn",
    "stop",
)
Index = int | Sequence[int] | slice | Tensor | None


@dataclass(frozen=True, eq=False)
class Intervention:
    """One operation on one site, restricted by selectors.

    Selectors (None = all): ``rows`` (batch axis), ``positions`` (token axis;
    absolute positions, negative ones counted from the end of the prompt),
    ``heads`` (head axis of attention sites), ``neurons`` (the unit axis:
    d_model, d_mlp or d_head). ``value`` is a tensor either of the full site
    shape (it is then indexed with the same selectors) or broadcastable to the
    selected region; a float for ``scale``.

    Two batched forms hand a whole sweep to the core as data (one clone of
    the site however many experiments a batch holds):

    - ``paired=True``: the selectors are index tensors read together, point by
      point (``x[rows[i], positions[i], heads[i]]``), not as a cross product:
      each row can have its own position, head or neuron. ``source_rows``
      says which row of a full-shape `value` each point takes (default: the
      same row).
    - ``mask``: a boolean tensor broadcastable to the site; the operation
      applies where it is True (``torch.where``), nowhere else.

    Example::

        ms.Intervention("blocks.4.mlp.post", "scale", 2.0, neurons=[7])  # = ms.scale(…)
        ms.Intervention("blocks.3.resid_post", "replace", clean.cache["blocks.3.resid_post"],
                        rows=[0, 1], positions=[4, 6], paired=True)  # row 0 at 4, row 1 at 6
    """

    site: str
    op: Op
    value: Tensor | float | None = None
    rows: Index = None
    positions: Index = None
    heads: Index = None
    neurons: Index = None
    fn: Callable[[Tensor], Tensor] | None = None
    over: Literal["batch", "batch_pos"] = "batch"
    seed: int = 0
    paired: bool = False
    source_rows: Index = None
    mask: Tensor | None = None
    meta: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise InterventionError(f"unknown operation {self.op!r}; valid: {', '.join(OPS)}")
        if self.op in ("replace", "add", "resample") and not isinstance(self.value, Tensor):
            raise InterventionError(
                f"{self.op} on {self.site!r} needs a tensor value, got {type(self.value).__name__}"
            )
        if self.op == "scale" and not isinstance(self.value, (int, float, Tensor)):
            raise InterventionError(f"scale on {self.site!r} needs a number or tensor factor")
        if self.op in ("fn", "observe") and not callable(self.fn):
            raise InterventionError(f"{self.op} on {self.site!r} needs a callable `fn`")
        _check_value(self)
        selectors = [
            n for n in ("rows", "positions", "heads", "neurons") if getattr(self, n) is not None
        ]
        for name in (*selectors, "source_rows"):
            _check_selector(getattr(self, name), name, self.site)
        if self.mask is not None:
            if not (isinstance(self.mask, Tensor) and self.mask.dtype == torch.bool):
                raise InterventionError(
                    f"mask on {self.site!r} must be a boolean tensor broadcastable to the site, "
                    f"got {type(self.mask).__name__}"
                    + (f" of {self.mask.dtype}" if isinstance(self.mask, Tensor) else "")
                )
            if selectors or self.paired:
                raise InterventionError(
                    f"a mask on {self.site!r} selects by itself: drop {', '.join(selectors) or 'paired'}"
                )
        if self.paired and not selectors:
            raise InterventionError(f"paired=True on {self.site!r} needs index selectors to pair")
        if self.source_rows is not None and not self.paired:
            raise InterventionError(f"source_rows on {self.site!r} needs paired=True")

    @property
    def selects_all(self) -> bool:
        return self.mask is None and all(
            s is None for s in (self.rows, self.positions, self.heads, self.neurons)
        )

    def __repr__(self) -> str:
        parts = [self.site]
        for name in ("rows", "positions", "heads", "neurons"):
            sel = getattr(self, name)
            if sel is not None:
                parts.append(f"{name}={_short(sel)}")
        if isinstance(self.value, Tensor):
            parts.append(f"value={tuple(self.value.shape)}")
        elif self.value is not None:
            parts.append(f"value={self.value}")
        if self.op == "mean":
            parts.append(f"over={self.over}")
        if self.paired:
            parts.append("paired")
        if self.source_rows is not None:
            parts.append(f"source_rows={_short(self.source_rows)}")
        if self.mask is not None:
            parts.append(f"mask={tuple(self.mask.shape)} ({int(self.mask.sum())} set)")
        return f"{self.op}({', '.join(parts)})"


def _check_value(iv: Intervention) -> None:
    """A value that can land on a floating-point site: real numbers, with data, no NaN.

    Checked when the intervention is built, so the mistake fails on its own line
    rather than inside the forward.
    """
    value = iv.value
    if not isinstance(value, Tensor):
        if isinstance(value, bool) or (isinstance(value, float) and math.isnan(value)):
            raise InterventionError(f"{iv.op} on {iv.site!r} needs a number, got {value!r}")
        return
    if value.dtype == torch.bool or value.is_complex():
        raise InterventionError(
            f"{iv.op} on {iv.site!r} needs a real-valued tensor, got {value.dtype}"
            + (" (a boolean selection goes in mask=)" if value.dtype == torch.bool else "")
        )
    if value.device.type == "meta":
        raise InterventionError(
            f"{iv.op} on {iv.site!r} got a tensor on the meta device, which holds no values"
        )
    if iv.op == "resample" and (value.ndim == 0 or value.shape[0] == 0):
        raise InterventionError(
            f"resample on {iv.site!r} needs source rows [n ≥ 1, …], got shape {tuple(value.shape)}"
        )
    if value.is_floating_point() and bool(torch.isnan(value).any()):
        raise InterventionError(
            f"{iv.op} on {iv.site!r} got a value holding NaN; every entry must be a number"
        )


_SELECTOR_FORMS = "an int, a list of ints, a slice of ints or an integer tensor"


def _is_int(x: object) -> bool:
    if isinstance(x, Tensor):
        return x.ndim == 0 and _integer_dtype(x)
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _integer_dtype(t: Tensor | np.ndarray) -> bool:
    if isinstance(t, np.ndarray):
        return t.dtype.kind in "iu"
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


def _check_selector(sel: object, name: str, site: str) -> None:
    """Selectors are integers (their range is checked against the site's sizes at run time)."""
    if sel is None or _is_int(sel):
        return
    if isinstance(sel, slice):
        parts = (sel.start, sel.stop, sel.step)
        if all(p is None or _is_int(p) for p in parts) and sel.step != 0:
            return
    elif isinstance(sel, (Tensor, np.ndarray)):
        if _integer_dtype(sel):
            return
        boolean = str(sel.dtype) in ("torch.bool", "bool")
        raise InterventionError(
            f"{name} on {site!r} must be {_SELECTOR_FORMS}, got a tensor of {sel.dtype}"
            + (" (a boolean selection goes in mask=)" if boolean else "")
        )
    elif isinstance(sel, Sequence) and not isinstance(sel, (str, bytes)):
        if all(_is_int(x) for x in sel):
            return
        bad = ", ".join(repr(x) for x in sel if not _is_int(x))
        raise InterventionError(
            f"{name} on {site!r} must be {_SELECTOR_FORMS}, got a {type(sel).__name__} holding "
            f"{bad[:80]}"
        )
    raise InterventionError(f"{name} on {site!r} must be {_SELECTOR_FORMS}, got {sel!r}")


def _short(sel: Index) -> str:
    if isinstance(sel, Tensor):
        sel = sel.tolist()
    if isinstance(sel, Sequence) and len(sel) > 6:
        return f"[{', '.join(map(str, sel[:3]))}, …, {sel[-1]}] ({len(sel)})"
    return str(sel)


def _value_of(value: Tensor | Mapping[str, Tensor], site: str) -> Tensor:
    """Accept a tensor, or a cache (any mapping of site -> tensor) to take `site` from."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, Mapping):
        return value[site]
    raise InterventionError(
        f"value for {site!r} must be a tensor or an activation cache, got {type(value).__name__}"
    )


# Constructors: the public vocabulary. Each returns plain data.


def save(site: str, **sel: Index) -> Intervention:
    """Record the site's value (after the interventions listed before this one).

    Example::

        ivs = [ms.add("blocks.3.resid_post", v), ms.save("blocks.3.resid_post")]
        model.run(text, interventions=ivs).cache["blocks.3.resid_post"]  # after the add
    """
    return Intervention(site, "save", **sel)


def replace(site: str, value: Tensor | Mapping[str, Tensor], **sel: Index) -> Intervention:
    """Set the selected region to `value` (a tensor, or a cache to read the same site from).

    Example: ``ms.replace("blocks.3.resid_post", torch.zeros(576), positions=[-1])`` (the last
    position's residual stream set to zero).
    """
    return Intervention(site, "replace", _value_of(value, site), **sel)


def patch(site: str, source: Mapping[str, Tensor] | Tensor, **sel: Index) -> Intervention:
    """Activation patching: `replace` with the same site from another run's cache.

    Example::

        clean = model.run(clean_text, save=["blocks.3.resid_post"])
        iv = ms.patch("blocks.3.resid_post", clean.cache, positions=[4])
        model.run(corrupt_text, interventions=[iv])     # same token count as clean_text
    """
    return replace(site, source, **sel)


def add(site: str, value: Tensor, **sel: Index) -> Intervention:
    """Add `value` (e.g. a steering vector of shape [d_model]) to the selected region.

    Example: ``model.generate("I think", interventions=[ms.add("blocks.6.resid_post", 4 * v)])``
    with `v` a [d_model] steering vector.
    """
    return Intervention(site, "add", value, **sel)


def scale(site: str, factor: float | Tensor, **sel: Index) -> Intervention:
    """Multiply the selected region by `factor`.

    Example: ``ms.scale("blocks.4.mlp.post", 2.0, neurons=[123])`` (neuron 123 of layer 4 doubled).
    """
    return Intervention(site, "scale", factor, **sel)


def zero_ablate(site: str, **sel: Index) -> Intervention:
    """Set the selected region to zero.

    Example: ``model.run(text, interventions=[ms.zero_ablate("blocks.9.attn.z", heads=[1])])``
    (head L9H1 knocked out).
    """
    return Intervention(site, "zero", **sel)


def mean_ablate(
    site: str,
    mean: Tensor | None = None,
    *,
    over: Literal["batch", "batch_pos"] = "batch",
    **sel: Index,
) -> Intervention:
    """Replace the selected region by a mean.

    With `mean` None the mean is taken over this run's batch (``over="batch"``:
    per position, as in Wang et al.'s mean ablation over a template data set;
    ``"batch_pos"``: over batch and positions).

    Example::

        ms.mean_ablate("blocks.9.attn.z", heads=[1])    # mean of this run's batch, per position
        mean = ref.cache["blocks.9.attn.z"].mean(0, keepdim=True)     # [1, pos, head, d_head]
        ms.mean_ablate("blocks.9.attn.z", mean, heads=[1])            # a reference run's mean
    """
    return Intervention(site, "mean", mean, over=over, **sel)


def resample_ablate(
    site: str, source: Tensor | Mapping[str, Tensor], *, seed: int = 0, **sel: Index
) -> Intervention:
    """Replace each selected row by the site's value on a random row of `source` (seeded).

    Example: ``ms.resample_ablate("blocks.5.mlp.out", other.cache, seed=1)``, with `other` a run
    saving ``blocks.5.mlp.out`` on prompts of the same length.
    """
    return Intervention(site, "resample", _value_of(source, site), seed=seed, **sel)


def observe(site: str, fn: Callable[[Tensor], object]) -> Intervention:
    """Call ``fn(x)`` with the site's whole value and leave it unchanged (streaming statistics).

    Nothing is stored: this is how a harvest reduces activations batch by batch
    without keeping them. `fn` must not modify `x`.

    Example::

        norms = []
        iv = ms.observe("blocks.3.resid_post", lambda x: norms.append(x.norm(dim=-1)))
        model.run(text, interventions=[iv])      # norms[0]: [batch, pos]
    """
    return Intervention(site, "observe", fn=fn)


def apply(site: str, fn: Callable[[Tensor], Tensor], **sel: Index) -> Intervention:
    """Replace the selected region x by ``fn(x)`` (same shape).

    Example: ``ms.apply("blocks.3.mlp.post", torch.relu)`` (negative neuron values zeroed).
    """
    return Intervention(site, "fn", fn=fn, **sel)


def stop(site: str) -> Intervention:
    """End the forward once `site` is computed (after its other interventions and saves).

    Nothing downstream runs, so a harvest or a feature visualisation of an early
    layer pays for the layers up to it only. ``model.run`` then returns
    ``logits=None``; inside ``model.hooks`` the model call raises `StopForward`,
    which the block swallows (code after the call in the block is skipped).

    Example::

        site = "blocks.3.resid_post"
        logits, cache = model.run(text, save=[site], interventions=[ms.stop(site)])
        logits is None, cache[site].shape       # True, [1, pos, d_model]
    """
    return Intervention(site, "stop")


class StopForward(Exception):  # noqa: N818 (a control signal, not an error)
    """Raised at a `stop` site; `Model.hooks` and `Model.run` catch it.

    Example::

        site = "blocks.0.resid_post"
        with model.hooks([ms.stop(site)], save=[site]) as cache:
            model.hf(ids)     # raises StopForward, which the block swallows; cache[site] is set
    """

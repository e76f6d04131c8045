"""Executing interventions: the region of a site's tensor they select, and its new value.

`core.hooks` calls `apply_intervention` on the tensor at a site, once per
intervention, with the site's axis names and the `Step` the forward is at
(generation); `region_index` turns the selectors (rows, positions, heads,
neurons, paired points) into index tensors, and a value tensor is read at the
same region. The interventions themselves are data, in `core.interventions`.

Example::

    iv, x = ms.zero_ablate("blocks.0.attn.z", heads=[1]), torch.randn(2, 5, 4, 8)
    y = apply_intervention(iv, x, ("batch", "pos", "head", "d_head"), Step())
    y[:, :, 1].abs().sum()       # 0: head 1 zeroed, x itself unchanged
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InterventionError
from .interventions import Index, Intervention


@dataclass(frozen=True)
class Step:
    """Where a forward stands: `offset` tokens were seen before it (generation).

    Example: with ``Step(offset=5)`` (a generation step whose first token is absolute position 5),
    ``positions=[6]`` selects this forward's local position 1.
    """

    offset: int = 0


def _as_index(sel: Index, size: int, name: str, site: str) -> Tensor | None:
    if sel is None:
        return None
    if isinstance(sel, slice):
        return torch.arange(size)[sel]
    idx = torch.as_tensor(sel, dtype=torch.long).reshape(-1)
    bad = (idx >= size) | (idx < -size)
    if bad.any():
        raise InterventionError(
            f"{name} {idx[bad].tolist()} out of range for {site!r}: that axis has {size} entries"
        )
    return idx % size


def _positions(sel: Index, size: int, step: Step, site: str) -> Tensor | None:
    """Map absolute positions onto this forward's local positions (empty if none fall here)."""
    if sel is None:
        return None
    if step.offset == 0:
        return _as_index(sel, size, "positions", site)
    # a later generation step: only non-negative absolute positions can land here
    if isinstance(sel, slice):
        start = sel.start or 0
        stop = sel.stop if sel.stop is not None else step.offset + size
        absolute = torch.arange(max(start, 0), max(stop, 0), sel.step or 1)
    else:
        absolute = torch.as_tensor(sel, dtype=torch.long).reshape(-1)
    local = absolute - step.offset
    return local[(local >= 0) & (local < size)]


# axis name -> which selector indexes it
_SELECTOR_OF_AXIS = {
    "batch": "rows",
    "pos": "positions",
    "q_pos": "positions",
    "head": "heads",
    "kv_head": "heads",
}
UNIT_AXES = ("d_model", "d_mlp", "d_head", "d_vocab", "channel", "latent")


def region_index(
    iv: Intervention, x: Tensor, axes: Sequence[str], step: Step
) -> tuple[Tensor | slice, ...] | None:
    """Broadcasting index tensors for the selected region of `x`, or None for all of it.

    Example::

        iv, x = ms.zero_ablate("blocks.0.attn.z", heads=[1]), torch.randn(2, 5, 4, 8)
        x[region_index(iv, x, ("batch", "pos", "head", "d_head"), Step())].shape  # [2, 5, 1, 8]
    """
    if iv.selects_all:
        return None
    parts: list[Tensor | None] = []
    used: set[str] = set()
    for dim, axis in enumerate(axes):
        size = x.shape[dim]
        name = _SELECTOR_OF_AXIS.get(axis)
        if name is None and axis in UNIT_AXES:
            name = "neurons"
        if name is None:
            parts.append(None)
            continue
        used.add(name)
        sel = getattr(iv, name)
        if name == "positions":
            parts.append(_positions(sel, size, step, iv.site))
        else:
            parts.append(_as_index(sel, size, name, iv.site))
    for name in ("rows", "positions", "heads", "neurons"):
        if getattr(iv, name) is not None and name not in used:
            raise InterventionError(
                f"selector {name!r} does not apply to {iv.site!r}, whose axes are "
                f"({', '.join(axes)})"
            )
    if iv.paired:
        return _paired_index(iv, x, parts)
    ndim = x.ndim
    index = []
    for dim, part in enumerate(parts):
        t = torch.arange(x.shape[dim]) if part is None else part
        shape = [1] * ndim
        shape[dim] = -1
        index.append(t.to(x.device).view(shape))
    return tuple(index)


PairedIndex = tuple[Tensor | slice, ...]


def _paired_index(iv: Intervention, x: Tensor, parts: list[Tensor | None]) -> PairedIndex:
    """Index tensors read point by point (broadcast together), full slices elsewhere."""
    chosen = [p for p in parts if p is not None]
    try:
        points = torch.broadcast_tensors(*chosen)
    except RuntimeError:
        sizes = ", ".join(str(p.numel()) for p in chosen)
        raise InterventionError(
            f"paired selectors on {iv.site!r} must have one length (or one entry), got {sizes}"
        ) from None
    it = iter(points)
    return tuple(slice(None) if p is None else next(it).to(x.device) for p in parts)


def _paired_source(value: Tensor, iv: Intervention, index: PairedIndex) -> Tensor:
    """A full-shape value read at the points (batch from `source_rows` when given)."""
    if iv.source_rows is None:
        if value.shape[0] == 1 and isinstance(index[0], Tensor):
            index = (torch.zeros_like(index[0]), *index[1:])
        return value[index]
    rows = _as_index(iv.source_rows, value.shape[0], "source_rows", iv.site)
    assert rows is not None
    first = next(i for i in index if isinstance(i, Tensor))
    try:
        rows = rows.to(value.device).expand_as(first)
    except RuntimeError:
        raise InterventionError(
            f"source_rows on {iv.site!r} must have the selectors' length {first.numel()}, "
            f"got {rows.numel()}"
        ) from None
    if isinstance(index[0], Tensor):
        return value[(rows, *index[1:])]
    # rows are not selected on the site (all of them): take the source rows for each point
    return value[rows][(slice(None), *index[1:])] if len(index) > 1 else value[rows]


def _cast(value: Tensor, x: Tensor, iv: Intervention) -> Tensor:
    """`value` on the site's device and in its dtype; integers do not stand in for activations."""
    if x.is_floating_point() and not value.is_floating_point():
        raise InterventionError(
            f"{iv.op} on {iv.site!r} got a {value.dtype} value for a {x.dtype} site; "
            "pass a floating-point tensor"
        )
    return value.to(device=x.device, dtype=x.dtype)


def _source_region(
    value: Tensor, x: Tensor, index: tuple[Tensor | slice, ...] | None, iv: Intervention
) -> Tensor:
    """The part of a value tensor that lands on the region.

    A value with the site's full shape (batch may be 1) is indexed like the
    site; anything else must broadcast to the region's shape.
    """
    value = _cast(value, x, iv)
    full = value.ndim == x.ndim and value.shape[1:] == x.shape[1:]
    if iv.paired and index is not None and full:
        return _paired_source(value, iv, index)
    if iv.paired and index is not None:
        region_shape = x[index].shape
        try:
            return value.expand(region_shape)
        except RuntimeError:
            raise InterventionError(
                f"shape mismatch at {iv.site!r}: {iv.op} expected a value of the site's shape "
                f"{tuple(x.shape)} (any batch) or one broadcastable to the selected points "
                f"{tuple(region_shape)}, got {tuple(value.shape)}"
            ) from None
    if full and value.shape[0] in (1, x.shape[0]):
        if index is None:
            return value.expand_as(x)
        idx = list(index)
        if value.shape[0] == 1 and x.shape[0] != 1:
            idx[0] = torch.zeros_like(idx[0])
        return value[tuple(idx)]
    region_shape = x.shape if index is None else torch.broadcast_shapes(*(i.shape for i in index))
    try:
        return value.expand(region_shape)
    except RuntimeError:
        wanted = (
            f"a value broadcastable to the site's shape {tuple(x.shape)}"
            if index is None
            else f"a value of the site's shape {tuple(x.shape)} or one broadcastable to the "
            f"selected region {tuple(region_shape)}"
        )
        raise InterventionError(
            f"shape mismatch at {iv.site!r}: {iv.op} expected {wanted}, got {tuple(value.shape)}"
        ) from None


def apply_intervention(
    iv: Intervention, x: Tensor, axes: Sequence[str], step: Step, *, owned: bool = False
) -> Tensor:
    """Return the site's new value after `iv`.

    With `owned` False, `x` is not modified: the result is a new tensor (or
    `x` itself when nothing is selected in this forward). With `owned` True
    (`x` is a copy made by an earlier intervention at the same site, that
    nobody else holds) a selected region is written in place, so a site
    pays for one copy however many interventions it has.

    Example: ``apply_intervention(ms.scale(site, 2.0), x, ("batch", "pos", "d_model"), Step())``
    → a new tensor, ``2 * x``.
    """
    if iv.mask is not None:
        return _masked(iv, x, axes, step)
    index = region_index(iv, x, axes, step)
    if index is not None and any(isinstance(i, Tensor) and i.numel() == 0 for i in index):
        return x  # none of the selected positions are in this forward
    current = x if index is None else x[index]
    if iv.op == "replace":
        assert isinstance(iv.value, Tensor)
        new = _source_region(iv.value, x, index, iv)
    elif iv.op == "add":
        assert isinstance(iv.value, Tensor)
        new = current + _source_region(iv.value, x, index, iv)
    elif iv.op == "scale":
        factor = iv.value
        if isinstance(factor, Tensor):
            factor = _source_region(factor, x, index, iv)
        new = current * factor
    elif iv.op == "zero":
        new = torch.zeros_like(current)
    elif iv.op == "mean":
        if isinstance(iv.value, Tensor):
            mean = iv.value
        else:
            dims = (0,) if iv.over == "batch" or x.ndim < 3 else (0, 1)
            mean = x.mean(dim=dims, keepdim=True)
        new = _source_region(mean, x, index, iv)
    elif iv.op == "resample":
        assert isinstance(iv.value, Tensor)
        source = _cast(iv.value, x, iv)
        if source.shape[1:] != x.shape[1:]:
            raise InterventionError(
                f"shape mismatch at {iv.site!r}: resample needs source rows of shape "
                f"{tuple(x.shape[1:])}, got {tuple(source.shape[1:])}"
            )
        gen = torch.Generator().manual_seed(iv.seed)
        picks = torch.randint(source.shape[0], (x.shape[0],), generator=gen).to(x.device)
        new = _source_region(source[picks], x, index, iv)
    elif iv.op == "fn":
        assert iv.fn is not None
        new = iv.fn(current)
        if not isinstance(new, Tensor) or new.shape != current.shape:
            got = tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__
            raise InterventionError(
                f"shape mismatch at {iv.site!r}: fn must return shape {tuple(current.shape)}, got {got}"
            )
    else:  # save is handled by the caller
        return x
    if index is None:
        # never hand a caller's tensor (or a view of it) to the model: HF may write in place
        return new.to(x.dtype).expand_as(x).clone() if new is not current else new
    out = x if owned else x.clone()
    out[index] = new.to(x.dtype)
    return out


def _masked(iv: Intervention, x: Tensor, axes: Sequence[str], step: Step) -> Tensor:
    """The operation where the mask is True (`torch.where`: one new tensor)."""
    assert iv.mask is not None
    if step.offset > 0:
        raise InterventionError(
            f"a mask on {iv.site!r} is for one forward (run, trace), not for the later steps "
            "of a generation: select with positions there"
        )
    mask = iv.mask.to(x.device)
    try:
        torch.broadcast_shapes(mask.shape, x.shape)
    except RuntimeError:
        raise InterventionError(
            f"shape mismatch at {iv.site!r}: the mask {tuple(mask.shape)} does not broadcast to "
            f"the site's shape {tuple(x.shape)}"
        ) from None
    whole = dataclasses.replace(iv, mask=None)
    if iv.op == "replace":
        assert isinstance(iv.value, Tensor)
        new = _source_region(iv.value, x, None, whole)
    else:
        new = apply_intervention(whole, x, axes, step)
    return torch.where(mask, new, x)

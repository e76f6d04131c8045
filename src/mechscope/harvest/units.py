"""What a harvest reads off each site: units, and how their per-token values are read.

A site's tensor becomes [batch, pos, unit]: an MLP's neurons or the
residual stream's dimensions as they are, an attention head by the L2 norm
of its vector, an attention pattern by each head's largest weight off the
first token. `unit_kind` names what a unit is; features computed from a
site (SAE latents) bring their own reader.

Example::

    from mechscope.harvest.units import unit_kind, units_of
    unit_kind(model.table["blocks.5.attn.z"])    # ("head", "L2 norm of the head's vector")
    units_of(model.table["blocks.5.attn.z"], z)  # [batch, pos, head]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.model import Model
from ..core.sites import Site
from ..errors import InputError

HEAD_AXES = (("batch", "pos", "head", "d_head"), ("batch", "pos", "kv_head", "d_head"))
PATTERN_AXES = ("batch", "head", "q_pos", "k_pos")


def unit_kind(site: Site) -> tuple[str, str]:
    """What one unit of `site` is and how its per-token value is read off the site's tensor.

    Example: ``unit_kind(model.table["blocks.5.mlp.post"])`` → ``("neuron", "value")``.
    """
    axes = site.axes
    if len(axes) == 3 and axes[:2] == ("batch", "pos"):
        return ("neuron" if axes[2] == "d_mlp" else "dimension"), "value"
    if axes in HEAD_AXES:
        return "head", "L2 norm of the head's vector"
    if axes == PATTERN_AXES:
        return "head", "largest attention weight on a key after position 0"
    return "unit", "value (trailing axes flattened)"


def units_of(site: Site, x: Tensor) -> Float[Tensor, "batch pos unit"]:
    """The site's tensor as [batch, pos, unit] (see `unit_kind`).

    Example: ``units_of(model.table["blocks.5.attn.z"], z)`` → [batch, pos, head], each
    head's L2 norm.
    """
    axes = site.axes
    if axes in HEAD_AXES:
        return torch.linalg.vector_norm(x.float(), dim=-1)
    if axes == PATTERN_AXES:
        off_sink = x[..., 1:].amax(-1) if x.shape[-1] > 1 else torch.zeros_like(x[..., 0])
        return off_sink.transpose(1, 2)
    if x.ndim < 3:
        raise InputError(
            f"site {site.name!r} has shape {tuple(x.shape)}: a harvest needs [batch, pos, …]"
        )
    return x.reshape(x.shape[0], x.shape[1], -1)


Reader = Callable[[Tensor], Tensor]  # a site's tensor → [batch, pos, unit]


def _readers(
    model: Model, names: list[str], features: Mapping[str, tuple[str, Reader]]
) -> dict[str, tuple[str, Reader]]:
    """Harvested name → (site it is read from, how its units are read), in forward order."""
    out: dict[str, tuple[str, Reader]] = {}
    for name in names:
        site = model.table[name]
        out[name] = (name, lambda x, site=site: units_of(site, x))
    for name, (site, fn) in features.items():
        if name in out:
            raise InputError(f"feature name {name!r} is also a harvested site; rename it")
        model.table[site]  # unknown site: error with the closest names
        if not callable(fn):
            raise InputError(f"feature {name!r} needs (site, function), got {type(fn).__name__}")
        out[name] = (site, fn)
    order = {n: i for i, n in enumerate(model.table.order([s for s, _ in out.values()]))}
    return dict(sorted(out.items(), key=lambda item: order[item[1][0]]))


def _by_site(readers: Mapping[str, tuple[str, Reader]]) -> dict[str, list[tuple[str, Reader]]]:
    grouped: dict[str, list[tuple[str, Reader]]] = {}
    for name, (site, fn) in readers.items():
        grouped.setdefault(site, []).append((name, fn))
    return grouped


def _sizes(model: Model, readers: Mapping[str, tuple[str, Reader]], window: int) -> dict[str, int]:
    """Units per harvested name, from one forward of one window (exact for any module path)."""
    from ..core.interventions import observe

    sizes: dict[str, int] = {}

    def grab(targets: list[tuple[str, Reader]]) -> Callable[[Tensor], None]:
        def fn(x: Tensor) -> None:
            for name, read in targets:
                out = read(x)
                if out.ndim != 3 or out.shape[:2] != (1, window):
                    raise InputError(
                        f"{name}: a harvest reads [batch, pos, unit] tensors, got {tuple(out.shape)}"
                    )
                sizes[name] = int(out.shape[-1])

        return fn

    ids = torch.zeros(1, window, dtype=torch.long, device=model.device)
    hooks = [observe(site, grab(t)) for site, t in _by_site(readers).items()]
    with model.hooks(hooks), torch.no_grad():
        model.hf(ids, use_cache=False)
    return sizes

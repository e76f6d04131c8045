"""Circuits read from a convolutional network's weights ("expanded weights", Olah et al. 2020).

Between two sites of a CNN, directly adjacent or with whole blocks between
them (1×1 expansions, depthwise convolutions, projections, residual skips),
the linear part of the map from the earlier site to one unit of the later one
is a spatial weight map per input channel: how much each input channel at
each offset excites (positive) or inhibits (negative) the unit. `expanded_weights`
reads it exactly as a Jacobian of the network with its elementwise
activations replaced by the identity and max-pools by average pools, batch
norms in eval mode (affine), so the map is the product of the weights along
every path, as in the car-detector figure (InceptionV1 4c:447 reads windows at
the top and wheels at the bottom). The result is a `ConvWeights` (in
``results.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ..core.interventions import apply, stop
from ..core.model import Model
from ..errors import InputError, MechscopeError
from .results import ConvWeights

# elementwise activations (module forms) that the linearised network replaces by the identity
ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish,
    nn.Softplus, nn.Tanh, nn.Hardtanh,
)  # fmt: skip


def _is_activation(module: nn.Module) -> bool:
    return isinstance(module, ACTIVATIONS) or "swish" in type(module).__name__.lower()


@contextlib.contextmanager
def linearised(net: nn.Module) -> Iterator[nn.Module]:
    """`net` with activations as identities and max-pools as average pools; restored on exit.

    Example::

        with linearised(model.hf):
            logits = model.hf(images)        # the linear part of the network
    """
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            new: nn.Module | None = None
            if _is_activation(child):
                new = nn.Identity()
            elif isinstance(child, nn.MaxPool2d):
                new = nn.AvgPool2d(child.kernel_size, child.stride, child.padding,
                                   ceil_mode=child.ceil_mode, count_include_pad=False)  # fmt: skip
            if new is not None:
                swapped.append((parent, name, child))
                setattr(parent, name, new)
    try:
        yield net
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def _gray(model: Model, size: int) -> Tensor:
    return torch.full((1, 3, size, size), 0.5, device=model.device)


def expanded_weights(
    model: Model, src: str, dst: str, unit: int, *, size: int = 224, check: bool = True
) -> ConvWeights:
    """The spatial weights from every channel of `src` to channel `unit` of `dst`.

    `size` is the input side used to lay out the feature maps (the centre unit
    of `dst` must see its whole receptive field). With `check`, the Jacobian is
    taken at two points and must agree: activations called as functions in
    the model's forward (``F.relu``) cannot be linearised and are reported.

    Example::

        w = expanded_weights(load_vision(), "net._blocks.11", "net._blocks.12", 5)
        w.maps.shape, w.top(3)       # [c_in kh kw], the 3 most exciting input channels
    """
    for site in (src, dst):
        model.table[site]  # unknown site: error naming the closest ones
    if model.table.order([src, dst])[0] != src or src == dst:
        raise InputError(f"{src!r} must come before {dst!r} in the forward")
    image = _gray(model, size)
    with torch.no_grad(), model.hooks([stop(dst)], save=[src, dst]) as cache:
        model.hf(image)
    a, b = cache[src], cache[dst]
    if a.ndim != 4 or b.ndim != 4:
        raise InputError(
            f"expanded weights join two convolutional feature maps [batch channel h w]; "
            f"{src!r} is {tuple(a.shape)} and {dst!r} is {tuple(b.shape)}"
        )
    if not 0 <= unit < b.shape[1]:
        raise InputError(f"{dst!r} has {b.shape[1]} channels; unit {unit} is out of range")
    cy, cx = b.shape[2] // 2, b.shape[3] // 2

    def jacobian(at: Tensor) -> Tensor:
        leaf = at.detach().clone().requires_grad_()
        ivs = [apply(src, lambda x: leaf), stop(dst)]
        with torch.enable_grad():
            with model.hooks(ivs, save=[dst], keep_graph=True) as live:
                model.hf(image)
            live.live[dst][0, unit, cy, cx].backward()
        assert leaf.grad is not None
        return leaf.grad[0]  # [c_in h w]

    was_training = model.hf.training
    model.hf.eval()
    with linearised(model.hf):
        grad = jacobian(torch.zeros_like(a))
        if check:
            other = jacobian(torch.randn(a.shape, generator=torch.Generator().manual_seed(0)).to(a))
            scale = grad.abs().max().clamp(min=1e-12)
            if (other - grad).abs().max() > 1e-3 * scale:
                raise MechscopeError(
                    f"the path {src} → {dst} is not linear once module activations are "
                    "replaced: the model applies a nonlinearity as a function in its forward "
                    "(F.relu, torch.sigmoid, a gate), which expanded weights cannot see through"
                )
    model.hf.train(was_training)
    support = grad.abs().sum(0) > 1e-9 * grad.abs().max().clamp(min=1e-30)
    if not support.any():
        raise MechscopeError(f"{dst}:{unit} does not depend linearly on {src}")
    ys, xs = support.nonzero(as_tuple=True)
    maps = grad[:, int(ys.min()) : int(ys.max()) + 1, int(xs.min()) : int(xs.max()) + 1]
    return ConvWeights(src, dst, unit, maps.detach().float().cpu())

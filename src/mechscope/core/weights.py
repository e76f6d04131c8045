"""Reading a transformer's weights in one convention, whatever the family stores.

``nn.Linear`` keeps its weight as [out, in]; GPT-2's ``Conv1D`` as [in, out].
Everything here returns [in, out], so ``x @ W`` is the layer's map, and splits
the attention output projection by head. The lens, circuit discovery and the
weight-based circuits all read weights through these functions.
"""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor, nn

from ..errors import InputError
from .model import Model


def resident(model: Model, what: str) -> None:
    """Fail in one line when `what` would read weights that a dispatched model keeps offloaded.

    With accelerate's disk or CPU offload the parameters are ``meta`` tensors
    until a forward needs them: forwards, interventions and gradients work,
    but a technique that reads the weight matrices themselves cannot.
    """
    if model.offloaded:
        raise InputError(
            f"{what} reads the weight matrices, and {model.name} keeps some offloaded "
            "(device_map with 'disk' or CPU offload: they exist only inside a forward); "
            "load it onto devices that hold every weight (device= or a device_map without 'disk')"
        )


def in_out(module: nn.Module) -> Float[Tensor, "d_in d_out"]:
    """A projection's weight as [in, out] (a view: still attached to the module's parameter)."""
    weight = module.weight
    if not isinstance(weight, Tensor):
        raise InputError(f"{type(module).__name__} has no weight matrix")
    return weight.T if isinstance(module, nn.Linear) else weight


def _layer_module(model: Model, layer: int, part: str) -> nn.Module:
    """The module at adapter path `part` (``attn_proj``, ``mlp_down``) of block `layer`."""
    if model.adapter is None or model.dims is None:
        raise InputError("reading weights by layer needs a transformer language model")
    if not 0 <= layer < model.dims.n_layers:
        raise InputError(f"layer {layer} out of range: the model has {model.dims.n_layers} blocks")
    return model.hf.get_submodule(f"{model.adapter.layers}.{layer}.{getattr(model.adapter, part)}")


def output_projection(
    model: Model, layer: int
) -> tuple[Float[Tensor, "head d_head d_model"], Float[Tensor, " d_model"] | None]:
    """W_O split by head, and its bias (or None): ``z[..., h, :] @ W_O[h]`` is head h's write."""
    proj = _layer_module(model, layer, "attn_proj")
    d = model.dims
    assert d is not None
    w = in_out(proj)
    if tuple(w.shape) != (d.n_heads * d.d_head, d.d_model):
        raise InputError(
            f"cannot split the output projection {type(proj).__name__} of layer {layer} by head: "
            f"its weight is {tuple(w.shape)} as [in, out], not ({d.n_heads * d.d_head}, {d.d_model})"
        )
    return w.reshape(d.n_heads, d.d_head, d.d_model), getattr(proj, "bias", None)


def mlp_down_projection(
    model: Model, layer: int
) -> tuple[Float[Tensor, "d_mlp d_model"], Float[Tensor, " d_model"] | None]:
    """The MLP's output projection as [d_mlp, d_model], and its bias (or None)."""
    proj = _layer_module(model, layer, "mlp_down")
    return in_out(proj), getattr(proj, "bias", None)
